// Package pipeline holds Kontinuous's domain: pipelines, builds, stages,
// their state machine and use cases, and the small interfaces (ports) it
// needs from storage, the forge, the executors and the notifier. It names
// no forge, store, executor or notifier (the adapters beneath it implement
// its ports; see docs/architecture.md); its only HTTP is the Forge port's
// webhook request: commit statuses and Slack go out through the Notifier
// port (pipeline/notify).
package pipeline

import (
	"strings"
	"time"
)

// Status is the state of a build or a stage.
type Status string

// Statuses, as in the original Kontinuous.
const (
	StatusPending  Status = "PENDING"
	StatusRunning  Status = "RUNNING"
	StatusWaiting  Status = "WAITING"
	StatusSuccess  Status = "SUCCESS"
	StatusFail     Status = "FAIL"
	StatusCanceled Status = "CANCELED"
)

// Done reports whether s is final.
func (s Status) Done() bool {
	return s == StatusSuccess || s == StatusFail || s == StatusCanceled || s == StatusSkipped
}

// Events a pipeline may subscribe to.
const (
	EventPush        = "push"
	EventPullRequest = "pull_request"
	EventDeployment  = "deployment"
	EventDashboard   = "dashboard"
	EventCLI         = "cli"
)

// Now returns the current time in Unix nanoseconds, the unit of every time
// field in the API.
func Now() int64 { return time.Now().UnixNano() }

// Key returns the case-folded "owner/repo" used to identify a pipeline.
func Key(owner, repo string) string {
	return strings.ToLower(owner) + "/" + strings.ToLower(repo)
}

// Notif is a notification target of a pipeline.
type Notif struct {
	Type     string            `json:"type"`
	Secrets  []string          `json:"secrets,omitempty"`
	Metadata map[string]string `json:"metadata,omitempty"`
}

// Pipeline is a repository wired to Kontinuous.
type Pipeline struct {
	ID          string            `json:"id"`
	Owner       string            `json:"owner"`
	Repo        string            `json:"repo"`
	Events      []string          `json:"events"`
	Login       string            `json:"login"`
	Notif       []Notif           `json:"notif"`
	Secrets     []string          `json:"secrets"`
	Vars        map[string]string `json:"vars"`
	LatestBuild *BuildSummary     `json:"latest_build"`
	// Forge is the forge the repository lives on ("github", "bitbucket"):
	// its creator's. Pipelines stored before forges had names read as
	// "github", the only forge there was.
	Forge string `json:"forge,omitempty"`
	// Orphaned: the repository the pipeline was created for no longer
	// holds its name (deleted and re-created, or replaced). Shown only to
	// the pipeline's creator, who may delete it; nobody else sees it.
	Orphaned bool `json:"orphaned,omitempty" description:"true when the repository this pipeline was created for no longer holds its name (deleted and re-created); shown only to its creator and to admins of the repository now holding the name, with nothing stored with it; they may delete it"`

	// Fields below are server-side only; never serialised to API callers.

	// OwnerUserID is the user whose forge token the server uses for this
	// pipeline's forge calls (clone, statuses): the creator.
	OwnerUserID string `json:"-"`
	// RepoID is the forge's numeric id of the repository.
	RepoID int64 `json:"-"`
	// CloneURL is the HTTPS clone URL as the forge's API reported it.
	CloneURL string `json:"-"`
	// DefaultBranch as the forge's API reported it.
	DefaultBranch string `json:"-"`
	// WebhookID and WebhookSecret identify and authenticate deliveries.
	WebhookID     int64  `json:"-"`
	WebhookSecret string `json:"-"`
	// DeployKeyID, DeployKeyPublic and DeployKeyPrivate: the read-only key.
	DeployKeyID      int64  `json:"-"`
	DeployKeyPublic  string `json:"-"`
	DeployKeyPrivate string `json:"-"`
	// ForkSecrets is kept for stored records only and is ignored: pull
	// requests from forks never get pipeline secrets (docs/security.md).
	ForkSecrets bool `json:"-"`
	// Namespace for the kubernetes executor, set by server configuration.
	Namespace string `json:"-"`
	// Created is when the pipeline was made (Unix ns).
	Created int64 `json:"-"`
}

// Key is the case-folded owner/repo.
func (p *Pipeline) Key() string { return Key(p.Owner, p.Repo) }

// BuildSummary is the short view of a build shown in lists.
type BuildSummary struct {
	ID           string `json:"id"`
	Number       int    `json:"number"`
	Status       Status `json:"status"`
	Created      int64  `json:"created"`
	Started      int64  `json:"started"`
	Finished     int64  `json:"finished"`
	CurrentStage int    `json:"current_stage" description:"position in stages of the current (or last) stage, counted from 0; a stage's index and /stages/{n} count from 1"`
	Branch       string `json:"branch"`
	Commit       string `json:"commit"`
	Author       string `json:"author"`
	Event        string `json:"event"`
}

// Build is one run of a pipeline at one commit.
type Build struct {
	ID           string  `json:"id"`
	Number       int     `json:"number"`
	Status       Status  `json:"status"`
	Created      int64   `json:"created"`
	Started      int64   `json:"started"`
	Finished     int64   `json:"finished"`
	CurrentStage int     `json:"current_stage" description:"position in stages of the current (or last) stage, counted from 0; a stage's index and /stages/{n} count from 1"`
	Branch       string  `json:"branch"`
	Commit       string  `json:"commit"`
	Author       string  `json:"author"`
	Event        string  `json:"event"`
	CloneURL     string  `json:"clone_url"`
	Stages       []Stage `json:"stages"`

	// Server-side only.

	// Owner and Repo of the pipeline (as stored).
	Owner string `json:"-"`
	Repo  string `json:"-"`
	// DeliveryID is the forge's delivery id that created it, if any.
	DeliveryID string `json:"-"`
	// Fork is true for pull requests whose head lives in another repository.
	Fork bool `json:"-"`
	// Message explains a failure of the build as a whole (invalid spec...).
	Message string `json:"message,omitempty"`
	// Spec is the raw .pipeline.yml read at the build's commit.
	Spec []byte `json:"-"`
	// Runner identifies the server instance driving the build.
	Runner string `json:"-"`
	// Heartbeat is when Runner last proved it was alive (Unix ns).
	Heartbeat int64 `json:"-"`
	// CancelRequested: a cancel was asked for while a live runner drives
	// the build; the runner (or recovery, if it dies) ends it CANCELED.
	CancelRequested bool `json:"-"`
	// Revision identifies this version of the build's record, so that two
	// reads of the same Revision of a build hold the same build: the store
	// sets it on builds it lists; 0 means unknown.
	Revision int64 `json:"-"`
}

// Summary returns the list view of b.
func (b *Build) Summary() BuildSummary {
	return BuildSummary{ID: b.ID, Number: b.Number, Status: b.Status, Created: b.Created,
		Started: b.Started, Finished: b.Finished, CurrentStage: b.CurrentStage,
		Branch: b.Branch, Commit: b.Commit, Author: b.Author, Event: b.Event}
}

// Stage is one step of a build.
type Stage struct {
	ID           string            `json:"id"`
	Name         string            `json:"name"`
	Type         string            `json:"type"`
	Index        int               `json:"index"`
	Params       map[string]any    `json:"params"`
	Labels       map[string]string `json:"labels"`
	Started      int64             `json:"started"`
	Finished     int64             `json:"finished"`
	Message      string            `json:"message"`
	Status       Status            `json:"status"`
	PodNamespace string            `json:"pod_namespace"`
	JobName      string            `json:"job_name"`
	PodName      string            `json:"pod_name"`
	DockerImage  string            `json:"docker_image"`
	Artifacts    []string          `json:"artifacts"`
	Secrets      []string          `json:"secrets"`
	Vars         map[string]string `json:"vars"`
}

// User is a person who logged in through a forge.
type User struct {
	// ID is "<forge>|<numeric id>" (the forge's name, see Forge).
	ID string `json:"user_id"`
	// Login is the forge user name.
	Login string `json:"user_name"`
	// Token is the user's forge token (stored encrypted).
	Token ForgeToken `json:"-"`
	// Updated is when the user last logged in (Unix ns).
	Updated int64 `json:"-"`
}

// ForgeToken is an OAuth token for a forge. Forges whose tokens expire
// (Bitbucket Cloud) also give a refresh token.
type ForgeToken struct {
	AccessToken  string    `json:"access_token"`
	RefreshToken string    `json:"refresh_token,omitempty"`
	Expiry       time.Time `json:"expiry,omitempty"`
	// Expired: the forge refused to refresh it (invalid_grant); the
	// connection stays expired until the user signs in again.
	Expired bool `json:"expired,omitempty"`
}

// Valid reports whether t has an access token.
func (t ForgeToken) Valid() bool { return t.AccessToken != "" }

// SecretSet is a named set of key/value secrets of a pipeline.
type SecretSet struct {
	Name string            `json:"name"`
	Data map[string]string `json:"-"`
	// Keys lists the keys of Data, sorted (safe to show).
	Keys []string `json:"keys"`
}
