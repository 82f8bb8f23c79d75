package pipeline

import (
	"context"
	"io"
	"time"
)

// Store persists the domain. The engine and the use cases need it; the
// etcd adapter (pipeline/etcdstore) implements it for embedded and external
// etcd alike. Every method honours ctx's deadline, wraps the domain sentinels
// (ErrNotFound, ErrConflict, ErrUnavailable when the backend cannot be
// reached) and never leaves a half-written entity. Owner and repo match
// case-insensitively. Secret material (webhook secret, deploy key, forge
// tokens, secret values) is encrypted by the store before it is written.
type Store interface {
	// PutUser creates or replaces a user.
	PutUser(ctx context.Context, u User) error
	// GetUser returns a user by id ("<forge>|<numeric id>").
	GetUser(ctx context.Context, id string) (User, error)

	// CreatePipeline stores a new pipeline; ErrConflict if owner/repo exists.
	CreatePipeline(ctx context.Context, p Pipeline) (Pipeline, error)
	// GetPipeline returns a pipeline with LatestBuild filled.
	GetPipeline(ctx context.Context, owner, repo string) (Pipeline, error)
	// ListPipelines returns every pipeline with LatestBuild filled.
	ListPipelines(ctx context.Context) ([]Pipeline, error)
	// UpdatePipeline applies fn to the stored pipeline with optimistic
	// concurrency (retrying on conflict) and returns the result.
	UpdatePipeline(ctx context.Context, owner, repo string, fn func(*Pipeline) error) (Pipeline, error)
	// DeletePipeline removes the pipeline with its builds, secrets and
	// delivery records.
	DeletePipeline(ctx context.Context, owner, repo string) error

	// PutSecret creates or replaces one secret set of a pipeline and keeps
	// the pipeline's Secrets name list in step (same transaction).
	PutSecret(ctx context.Context, owner, repo string, s SecretSet) error
	// GetSecret returns one secret set with its data.
	GetSecret(ctx context.Context, owner, repo, name string) (SecretSet, error)
	// ListSecrets returns every secret set of a pipeline, with data, by name.
	ListSecrets(ctx context.Context, owner, repo string) ([]SecretSet, error)
	// DeleteSecret removes one secret set (and its name from the pipeline).
	DeleteSecret(ctx context.Context, owner, repo, name string) error

	// CreateBuild stores b as the pipeline's next build: the number is
	// allocated in the same transaction (unique, gap-free, starting at 1).
	// If b.DeliveryID is set and a build already exists for that delivery,
	// it returns that build and an error wrapping ErrConflict.
	CreateBuild(ctx context.Context, owner, repo string, b Build) (Build, error)
	// GetBuild returns one build with its stages.
	GetBuild(ctx context.Context, owner, repo string, number int) (Build, error)
	// ListBuilds returns builds newest first; before > 0 returns only
	// numbers < before; limit <= 0 means a default page of 50. Listed
	// builds carry their Revision and leave out Spec.
	ListBuilds(ctx context.Context, owner, repo string, limit, before int) ([]Build, error)
	// UpdateBuild applies fn with optimistic concurrency, retrying on
	// conflict with the fresh value; fn may run several times.
	UpdateBuild(ctx context.Context, owner, repo string, number int, fn func(*Build) error) (Build, error)
	// DeleteBuild removes one build.
	DeleteBuild(ctx context.Context, owner, repo string, number int) error
	// ActiveBuilds lists builds of every pipeline whose status is not final.
	ActiveBuilds(ctx context.Context) ([]Build, error)
	// WatchBuild calls fn with each new version of the build until ctx ends
	// or fn returns false.
	WatchBuild(ctx context.Context, owner, repo string, number int, fn func(Build) bool) error
}

// Permission is a user's access to a repository on the forge.
type Permission int

// Permissions, weakest first.
const (
	PermNone Permission = iota
	PermRead
	PermPush
	PermAdmin
)

func (p Permission) String() string {
	switch p {
	case PermRead:
		return "read"
	case PermPush:
		return "push"
	case PermAdmin:
		return "admin"
	}
	return "none"
}

// Repository is a forge repository as its API reports it.
type Repository struct {
	ID            int64  `json:"-"`
	Owner         string `json:"owner"`
	Name          string `json:"name"`
	FullName      string `json:"full_name"`
	AvatarURL     string `json:"avatar_url"`
	DefaultBranch string `json:"default_branch"`
	CloneURL      string `json:"-"`
	Private       bool   `json:"-"`
	// Forge names the forge the repository is on (GET /api/v1/repositories
	// lists every connected forge's).
	Forge string `json:"forge,omitempty"`
	// Permissions is the caller's access when the forge lists it with the
	// repository (a UI offers "New pipeline" only where it is admin).
	Permissions *Access `json:"permissions,omitempty"`
}

// ForgeUser is the identity the forge reports for a token.
type ForgeUser struct {
	ID    int64
	Login string
	// UID is the forge's user id when it is not a number (Bitbucket's
	// "{uuid}", braces kept); when set, the user id is "<forge>|<UID>".
	UID string
}

// File is a file's content at a ref.
type File struct {
	Content []byte
	SHA     string
}

// Hook describes a webhook to install.
type Hook struct {
	URL    string
	Secret string
	Events []string
}

// Notifier carries a build's news out of the server (pipeline/notify
// implements it). The engine calls it at transitions and never waits on
// it.
type Notifier interface {
	// CommitStatus queues post, which sets one commit status of build (a
	// build key), after those queued before it for the same build, and
	// returns at once; post is retried with backoff (bounded). When base
	// ends, what is still queued is dropped.
	CommitStatus(base context.Context, build string, post func(context.Context) error)
	// Slack posts msg to a Slack incoming-webhook URL. The URL is a
	// secret: the error never contains it.
	Slack(ctx context.Context, url string, msg SlackMessage) error
	// Wait waits until the queues of ended bases have stopped, or ctx ends.
	Wait(ctx context.Context) error
}

// SlackMessage is a Slack notification; empty Channel and Username take
// the webhook's own.
type SlackMessage struct {
	Text, Channel, Username string
}

// noNotifier is the Notifier of an engine configured without one: builds
// tell nobody.
type noNotifier struct{}

func (noNotifier) CommitStatus(context.Context, string, func(context.Context) error) {}
func (noNotifier) Slack(context.Context, string, SlackMessage) error                 { return nil }
func (noNotifier) Wait(context.Context) error                                        { return nil }

// CommitStatus is a status posted on a commit.
type CommitStatus struct {
	// State: "pending", "success", "failure" or "error".
	State       string
	Context     string
	Description string
	TargetURL   string
}

// WebhookRequest is an incoming delivery, forge-neutral: what the forge's
// Delivery read from the headers, and the body.
type WebhookRequest struct {
	// Forge is the name of the forge that claimed the delivery ("" = the
	// default forge).
	Forge string
	// Event is the forge's event name, Delivery its delivery id and
	// Signature the signature header's value, as the forge sent them.
	Event     string
	Delivery  string
	Signature string
	Body      []byte
}

// WebhookEvent is what a verified delivery means to the engine.
type WebhookEvent struct {
	// Kind: "ping", "push", "pull_request", "deployment" or the raw event name.
	Kind     string
	Delivery string
	// Action of a pull_request ("opened", ...).
	Action string
	// Repository the payload names.
	RepoID    int64
	RepoOwner string
	RepoName  string
	// Branch (push: from ref; pull_request: head ref), Commit (push: after;
	// pull_request: head sha), Author (pusher / sender login).
	Branch string
	Commit string
	Author string
	// Deleted: a branch deletion push; Tag: a tag push.
	Deleted bool
	Tag     bool
	// Fork: a pull request whose head repository differs from the base.
	Fork bool
}

// WebhookEventsParser is implemented by a forge one of whose deliveries
// may ask for several builds (a Bitbucket push names every changed
// branch): ParseWebhookEvents verifies as ParseWebhook does and returns
// one event per build, ParseWebhook's first.
type WebhookEventsParser interface {
	ParseWebhookEvents(req WebhookRequest, secret string) ([]WebhookEvent, error)
}

// SCM is the forge's API, as the use cases need it: part of Forge
// (forge.go), which each forge package implements; nothing
// forge-specific leaks through it. Calls that
// act for a user take that user's token. Errors wrap ErrNotFound,
// ErrForbidden, ErrUnauthorized (bad token), ErrRateLimited or ErrUpstream.
type SCM interface {
	// Name is the forge's id prefix for users, e.g. "github".
	Name() string
	// User returns the token's owner.
	User(ctx context.Context, tok ForgeToken) (ForgeUser, error)
	// Repositories lists repositories the token's user can access.
	Repositories(ctx context.Context, tok ForgeToken) ([]Repository, error)
	// Repository returns one repository.
	Repository(ctx context.Context, tok ForgeToken, owner, name string) (Repository, error)
	// Permission is the token user's access to the repository (cached briefly).
	Permission(ctx context.Context, tok ForgeToken, owner, name string) (Permission, error)
	// BranchHead returns the commit SHA at the tip of branch.
	BranchHead(ctx context.Context, tok ForgeToken, owner, name, branch string) (string, error)
	// FileAt reads a file at ref (branch, tag or SHA; "" = default branch).
	FileAt(ctx context.Context, tok ForgeToken, owner, name, path, ref string) (File, error)
	// PutFile creates or updates a file on branch with a commit; sha is the
	// blob being replaced ("" when creating). It returns the new commit SHA.
	PutFile(ctx context.Context, tok ForgeToken, owner, name, path, branch, message string, content []byte, sha string) (string, error)
	// CreateBranch makes branch point at the commit sha.
	CreateBranch(ctx context.Context, tok ForgeToken, owner, name, branch, sha string) error
	// CreatePullRequest opens a pull request and returns its web URL.
	CreatePullRequest(ctx context.Context, tok ForgeToken, owner, name, title, head, base string) (string, error)
	// CreateWebhook installs a webhook and returns its id.
	CreateWebhook(ctx context.Context, tok ForgeToken, owner, name string, h Hook) (int64, error)
	// DeleteWebhook removes a webhook; a missing one is not an error.
	DeleteWebhook(ctx context.Context, tok ForgeToken, owner, name string, id int64) error
	// CreateDeployKey adds a read-only deploy key and returns its id.
	CreateDeployKey(ctx context.Context, tok ForgeToken, owner, name, title, publicKey string) (int64, error)
	// DeleteDeployKey removes a deploy key; a missing one is not an error.
	DeleteDeployKey(ctx context.Context, tok ForgeToken, owner, name string, id int64) error
	// SetCommitStatus posts a status on a commit.
	SetCommitStatus(ctx context.Context, tok ForgeToken, owner, name, sha string, st CommitStatus) error
	// ParseWebhook checks the delivery's signature against secret in
	// constant time before parsing anything (ErrUnauthorized when it does
	// not match) and decodes it (ErrInvalid when malformed).
	ParseWebhook(req WebhookRequest, secret string) (WebhookEvent, error)
}

// LogRef names one stage's log.
type LogRef struct {
	Pipeline string // Key(owner, repo)
	Build    int
	Stage    int
}

// LogStore keeps stage logs. The file adapter keeps them under the data
// dir; an object store can replace it.
type LogStore interface {
	// Create opens ref's log for appending (truncating an older one). Writes
	// beyond the per-stage cap drop the oldest bytes (the tail is kept) and
	// the log says so. Close marks the log finished, which ends Follow.
	Create(ctx context.Context, ref LogRef) (io.WriteCloser, error)
	// Read returns the whole stored log (ErrNotFound if none).
	Read(ctx context.Context, ref LogRef) ([]byte, error)
	// Follow calls fn with each line (without its newline) from the start,
	// then live as it is written, until the log is finished, ctx ends or fn
	// returns an error.
	Follow(ctx context.Context, ref LogRef, fn func(line []byte) error) error
	// DeleteBuild removes the logs of one build; DeletePipeline of all.
	DeleteBuild(ctx context.Context, pipeline string, build int) error
	DeletePipeline(ctx context.Context, pipeline string) error
}

// StageJob is everything an executor needs to run one stage.
type StageJob struct {
	Owner, Repo string
	BuildNumber int
	BuildID     string
	Commit      string
	Branch      string
	// CloneURL is the HTTPS clone URL recorded on the build; CloneUser and
	// CloneToken (the forge's Forge.CloneCredentials) authenticate it as
	// basic auth.
	CloneURL   string
	CloneUser  string
	CloneToken string
	// Stage has its params already rendered from the spec's templates.
	Stage Stage
	// Env: KONTINUOUS_* + vars + secret values (no secret values for an
	// executor that is a SecretReferencer reading them by name).
	Env map[string]string
	// SecretNames: the secret sets the stage may read (kubernetes envFrom).
	SecretNames []string
	// Timeout bounds the stage; the executor must stop it when exceeded.
	Timeout time.Duration
	// Namespace is where the kubernetes executor runs it (server-decided).
	Namespace string
	// ServerURL is the public base URL of Kontinuous.
	ServerURL string
}

// StageOutcome reports where an executor ran a stage.
type StageOutcome struct {
	PodNamespace string
	JobName      string
	PodName      string
	DockerImage  string
	Message      string
}

// Executor runs stages. The engine calls RunStage for each non-wait stage
// in order, with a ctx that is canceled when the build is canceled; the
// executor must stop the stage's work (kill the process group / delete the
// Job) before returning when ctx ends or job.Timeout passes.
// context.Cause(ctx) tells why ctx ended: ErrBuildCanceled (stop the work),
// ErrTakenOver (another instance drives the build now and adopts the work
// where the executor is resumable) or the server stopping. RunStage
// returns nil when the stage succeeded, or an error whose message (safe to
// show, no secrets) says why it failed. It writes the stage's output to log
// line by line. Calling RunStage again for a stage that is already running
// (after a server restart) adopts it where the executor can (kubernetes);
// Resumable says whether it can. CleanupBuild releases a build's resources
// (workspace, per-build secrets) when the build ends.
type Executor interface {
	Name() string
	Resumable() bool
	RunStage(ctx context.Context, job StageJob, log io.Writer, report func(StageOutcome)) error
	CleanupBuild(ctx context.Context, owner, repo string, build int) error
}

// NamespacedExecutor is implemented by executors that run stages in a
// namespace (the kubernetes executor): the server's namespace policy then
// applies to every stage, not only to deploy stages.
type NamespacedExecutor interface {
	// RunsInNamespaces reports whether stages run in a namespace the
	// engine decides (the kubernetes executor).
	RunsInNamespaces() bool
}

// SecretReferencer is implemented by executors that hand a stage its
// secrets by name (Kubernetes envFrom) instead of by value; the engine then
// leaves secret values out of StageJob.Env. It still passes SecretNames,
// still checks that each named secret exists in the pipeline and still
// masks the values in the stage's log.
type SecretReferencer interface {
	// SecretsByReference reports whether the executor reads secrets by
	// name; false makes the engine put their values in Env.
	SecretsByReference() bool
}
