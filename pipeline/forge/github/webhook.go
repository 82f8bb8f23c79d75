package github

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"

	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/forge/forgeutil"
)

const zeroSHA = "0000000000000000000000000000000000000000"

var eventRE = regexp.MustCompile(`^[a-z_]{1,64}$`)

// ParseWebhook checks req's X-Hub-Signature-256 against secret in constant
// time before looking at the body (ErrUnauthorized when missing or wrong,
// or when secret is empty), then decodes it (ErrInvalid when malformed).
func (s *SCM) ParseWebhook(req pipeline.WebhookRequest, secret string) (pipeline.WebhookEvent, error) {
	if err := signature.Verify(req.Signature, req.Body, secret); err != nil {
		return pipeline.WebhookEvent{}, fmt.Errorf("githubscm: webhook: %w", err)
	}
	ev, err := parseEvent(req.Event, req.Body)
	if err != nil {
		return pipeline.WebhookEvent{}, fmt.Errorf("githubscm: webhook %s: %w", safeEvent(req.Event), err)
	}
	ev.Delivery = req.Delivery
	return ev, nil
}

func safeEvent(e string) string {
	if eventRE.MatchString(e) {
		return e
	}
	return "(invalid event)"
}

// signature is GitHub's X-Hub-Signature-256 with its messages.
var signature = forgeutil.Signature{Header: "X-Hub-Signature-256", Missing: "missing %s", Malformed: "malformed %s"}

// envelope is what every repository event carries.
type envelope struct {
	Repository *envRepository `json:"repository"`
	Sender     envSender      `json:"sender"`
}

type envRepository struct {
	ID    int64  `json:"id"`
	Name  string `json:"name"`
	Owner struct {
		Login string `json:"login"`
		Name  string `json:"name"`
	} `json:"owner"`
}

type envSender struct {
	Login string `json:"login"`
}

// The payloads below hold only what the service reads of each event, with
// the JSON names, Go types and pointer-ness go-github gives those fields
// (github.PushEvent, PullRequestEvent, DeploymentEvent), so encoding/json
// treats them alike: the same type errors, and a null resets a field as
// it does there. The repository and sender keep envelope's types, since
// those are read from the envelope. Fields the service never reads are
// not decoded, so a payload whose unread fields have types GitHub never
// sends (say "size":"x") is no longer refused for them: it is accepted,
// or refused by a later check with that check's message (still
// ErrInvalid). FuzzParseWebhook holds this decoding to go-github's.

type pushPayload struct {
	Repository *envRepository `json:"repository"`
	Sender     envSender      `json:"sender"`
	Ref        *string        `json:"ref"`
	After      *string        `json:"after"`
	Deleted    *bool          `json:"deleted"`
	Pusher     *struct {
		Name  *string `json:"name"`
		Login *string `json:"username"` // go-github's CommitAuthor.Login
	} `json:"pusher"`
}

type pullRequestPayload struct {
	Repository  *envRepository `json:"repository"`
	Sender      envSender      `json:"sender"`
	Action      *string        `json:"action"`
	PullRequest *struct {
		Head *prBranch `json:"head"`
		Base *prBranch `json:"base"`
		User *login    `json:"user"`
	} `json:"pull_request"`
}

type prBranch struct {
	Ref  *string `json:"ref"`
	SHA  *string `json:"sha"`
	Repo *struct {
		ID *int64 `json:"id"`
	} `json:"repo"`
}

type deploymentPayload struct {
	Repository *envRepository `json:"repository"`
	Sender     envSender      `json:"sender"`
	Deployment *struct {
		SHA     *string `json:"sha"`
		Ref     *string `json:"ref"`
		Creator *login  `json:"creator"`
	} `json:"deployment"`
}

type login struct {
	Login *string `json:"login"`
}

func str(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

func parseEvent(event string, body []byte) (pipeline.WebhookEvent, error) {
	if event == "" {
		return pipeline.WebhookEvent{}, pipeline.Invalid("X-GitHub-Event", "missing")
	}
	if !eventRE.MatchString(event) {
		return pipeline.WebhookEvent{}, pipeline.Invalid("X-GitHub-Event", "not a GitHub event name")
	}
	if t := bytes.TrimLeft(body, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return pipeline.WebhookEvent{}, pipeline.Invalid("body", "not a JSON object")
	}
	// One decoding per delivery: the event's payload holds the envelope.
	var (
		env       envelope
		payload   any
		decodeErr error
	)
	switch event {
	case "push":
		p := new(pushPayload)
		decodeErr = json.Unmarshal(body, p)
		payload, env = p, envelope{p.Repository, p.Sender}
	case "pull_request":
		p := new(pullRequestPayload)
		decodeErr = json.Unmarshal(body, p)
		payload, env = p, envelope{p.Repository, p.Sender}
	case "deployment":
		p := new(deploymentPayload)
		decodeErr = json.Unmarshal(body, p)
		payload, env = p, envelope{p.Repository, p.Sender}
	default:
		decodeErr = json.Unmarshal(body, &env)
	}
	if decodeErr != nil {
		// Which step refuses it, as when the envelope was decoded first:
		// the envelope itself, its repository, or the event's fields.
		env = envelope{}
		if err := json.Unmarshal(body, &env); err != nil {
			return pipeline.WebhookEvent{}, pipeline.Invalid("body", "malformed JSON payload")
		}
	}
	ev := pipeline.WebhookEvent{Kind: event, Author: env.Sender.Login}
	if r := env.Repository; r != nil {
		ev.RepoID, ev.RepoName = r.ID, r.Name
		ev.RepoOwner = r.Owner.Login
		if ev.RepoOwner == "" {
			ev.RepoOwner = r.Owner.Name
		}
	}
	switch event {
	case "push", "pull_request", "deployment":
		if env.Repository == nil || ev.RepoID == 0 || ev.RepoOwner == "" || ev.RepoName == "" {
			return pipeline.WebhookEvent{}, pipeline.Invalid("repository", "missing from the payload")
		}
	default:
		return ev, nil
	}
	if decodeErr != nil {
		return pipeline.WebhookEvent{}, pipeline.Invalid("body", "malformed %s payload", event)
	}
	switch p := payload.(type) {
	case *pushPayload:
		return push(ev, p)
	case *pullRequestPayload:
		return pullRequest(ev, p)
	default:
		return deployment(ev, p.(*deploymentPayload))
	}
}

func push(ev pipeline.WebhookEvent, e *pushPayload) (pipeline.WebhookEvent, error) {
	ref := str(e.Ref)
	switch {
	case strings.HasPrefix(ref, "refs/heads/") && len(ref) > len("refs/heads/"):
		ev.Branch = strings.TrimPrefix(ref, "refs/heads/")
	case strings.HasPrefix(ref, "refs/tags/") && len(ref) > len("refs/tags/"):
		ev.Branch = strings.TrimPrefix(ref, "refs/tags/")
		ev.Tag = true
	default:
		return pipeline.WebhookEvent{}, pipeline.Invalid("ref", "push of %q is not a branch or tag", ref)
	}
	ev.Commit = str(e.After)
	ev.Deleted = (e.Deleted != nil && *e.Deleted) || ev.Commit == zeroSHA
	if !ev.Deleted && !shaRE.MatchString(ev.Commit) {
		return pipeline.WebhookEvent{}, pipeline.Invalid("after", "not a commit SHA")
	}
	if p := e.Pusher; p != nil {
		if n := str(p.Name); n != "" {
			ev.Author = n
		} else if l := str(p.Login); l != "" {
			ev.Author = l
		}
	}
	return ev, nil
}

func pullRequest(ev pipeline.WebhookEvent, e *pullRequestPayload) (pipeline.WebhookEvent, error) {
	pr := e.PullRequest
	if pr == nil {
		return pipeline.WebhookEvent{}, pipeline.Invalid("pull_request", "missing from the payload")
	}
	ev.Action = str(e.Action)
	if h := pr.Head; h != nil {
		ev.Branch, ev.Commit = str(h.Ref), str(h.SHA)
	}
	if !shaRE.MatchString(ev.Commit) {
		return pipeline.WebhookEvent{}, pipeline.Invalid("pull_request.head.sha", "not a commit SHA")
	}
	if ev.Author == "" && pr.User != nil {
		ev.Author = str(pr.User.Login)
	}
	var baseID int64
	if b := pr.Base; b != nil && b.Repo != nil && b.Repo.ID != nil {
		baseID = *b.Repo.ID
	}
	if baseID == 0 {
		baseID = ev.RepoID
	}
	// A head repository that is gone (deleted fork) is treated as a fork.
	ev.Fork = true
	if h := pr.Head; h != nil && h.Repo != nil {
		var headID int64
		if h.Repo.ID != nil {
			headID = *h.Repo.ID
		}
		ev.Fork = headID != baseID
	}
	return ev, nil
}

func deployment(ev pipeline.WebhookEvent, e *deploymentPayload) (pipeline.WebhookEvent, error) {
	d := e.Deployment
	if d == nil {
		return pipeline.WebhookEvent{}, pipeline.Invalid("deployment", "missing from the payload")
	}
	ev.Commit = str(d.SHA)
	ev.Branch = str(d.Ref)
	if !shaRE.MatchString(ev.Commit) {
		return pipeline.WebhookEvent{}, pipeline.Invalid("deployment.sha", "not a commit SHA")
	}
	if c := d.Creator; c != nil {
		if l := str(c.Login); l != "" {
			ev.Author = l
		}
	}
	return ev, nil
}
