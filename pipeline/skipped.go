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

// skipRest gives every stage of b still PENDING its final status,
// SKIPPED, with msg: the build ended and they will never run.
func skipRest(b *Build, msg string) {
	now := Now()
	for i := range b.Stages {
		if s := &b.Stages[i]; s.Status == StatusPending {
			s.Status, s.Message, s.Finished = StatusSkipped, msg, now
			delete(b.StageTokens, s.Index)
		}
	}
}
