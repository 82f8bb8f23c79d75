package pipeline

// StatusSkipped is the final status of a stage that never ran because an
// earlier stage failed or the build was canceled (an addition to the
// original Kontinuous's statuses; builds are never SKIPPED).
const StatusSkipped Status = "SKIPPED"

// Statuses lists every status, for documentation (the API's enums).
var Statuses = []Status{StatusPending, StatusRunning, StatusWaiting, StatusSuccess, StatusFail, StatusCanceled, StatusSkipped}

// canceledMessage is the message of a stage a cancel stopped.
const canceledMessage = "build canceled"

// Messages of SKIPPED stages.
const (
	skippedAfterFailure = "skipped: an earlier stage failed"
	skippedAfterCancel  = "skipped: the build was canceled"
	skippedAfterError   = "skipped: the build failed before this stage"
)
