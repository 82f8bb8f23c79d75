package githubscm

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"

	"github.com/google/go-github/v60/github"

	"github.com/kontinuous/kontinuous/pipeline"
)

const zeroSHA = "0000000000000000000000000000000000000000"

var eventRE = regexp.MustCompile(`^[a-z_]{1,64}$`)

// ParseWebhook checks req's X-Hub-Signature-256 against secret in constant
// time before looking at the body (ErrUnauthorized when missing or wrong,
// or when secret is empty), then decodes it (ErrInvalid when malformed).
func (s *SCM) ParseWebhook(req pipeline.WebhookRequest, secret string) (pipeline.WebhookEvent, error) {
	if err := verifySignature(req.Signature, req.Body, secret); err != nil {
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

// verifySignature checks sig = "sha256=<hex HMAC-SHA256(secret, body)>".
func verifySignature(sig string, body []byte, secret string) error {
	if secret == "" {
		return pipeline.Errorf(pipeline.ErrUnauthorized, "webhook secret not configured")
	}
	if sig == "" {
		return pipeline.Errorf(pipeline.ErrUnauthorized, "missing X-Hub-Signature-256")
	}
	hexSig, ok := strings.CutPrefix(sig, "sha256=")
	got, err := hex.DecodeString(hexSig)
	if !ok || err != nil || len(got) != sha256.Size {
		return pipeline.Errorf(pipeline.ErrUnauthorized, "malformed X-Hub-Signature-256")
	}
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	if !hmac.Equal(m.Sum(nil), got) {
		return pipeline.Errorf(pipeline.ErrUnauthorized, "X-Hub-Signature-256 does not match")
	}
	return nil
}

// envelope is what every repository event carries.
type envelope struct {
	Repository *struct {
		ID    int64  `json:"id"`
		Name  string `json:"name"`
		Owner struct {
			Login string `json:"login"`
			Name  string `json:"name"`
		} `json:"owner"`
	} `json:"repository"`
	Sender struct {
		Login string `json:"login"`
	} `json:"sender"`
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
	var env envelope
	if err := json.Unmarshal(body, &env); err != nil {
		return pipeline.WebhookEvent{}, pipeline.Invalid("body", "malformed JSON payload")
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
	parsed, err := github.ParseWebHook(event, body)
	if err != nil {
		return pipeline.WebhookEvent{}, pipeline.Invalid("body", "malformed %s payload", event)
	}
	switch e := parsed.(type) {
	case *github.PushEvent:
		return push(ev, e)
	case *github.PullRequestEvent:
		return pullRequest(ev, e)
	case *github.DeploymentEvent:
		return deployment(ev, e)
	}
	return pipeline.WebhookEvent{}, pipeline.Invalid("body", "unexpected %s payload", event)
}

func push(ev pipeline.WebhookEvent, e *github.PushEvent) (pipeline.WebhookEvent, error) {
	ref := e.GetRef()
	switch {
	case strings.HasPrefix(ref, "refs/heads/") && len(ref) > len("refs/heads/"):
		ev.Branch = strings.TrimPrefix(ref, "refs/heads/")
	case strings.HasPrefix(ref, "refs/tags/") && len(ref) > len("refs/tags/"):
		ev.Branch = strings.TrimPrefix(ref, "refs/tags/")
		ev.Tag = true
	default:
		return pipeline.WebhookEvent{}, pipeline.Invalid("ref", "push of %q is not a branch or tag", ref)
	}
	ev.Commit = e.GetAfter()
	ev.Deleted = e.GetDeleted() || ev.Commit == zeroSHA
	if !ev.Deleted && !shaRE.MatchString(ev.Commit) {
		return pipeline.WebhookEvent{}, pipeline.Invalid("after", "not a commit SHA")
	}
	if n := e.GetPusher().GetName(); n != "" {
		ev.Author = n
	} else if l := e.GetPusher().GetLogin(); l != "" {
		ev.Author = l
	}
	return ev, nil
}

func pullRequest(ev pipeline.WebhookEvent, e *github.PullRequestEvent) (pipeline.WebhookEvent, error) {
	pr := e.GetPullRequest()
	if e.PullRequest == nil {
		return pipeline.WebhookEvent{}, pipeline.Invalid("pull_request", "missing from the payload")
	}
	ev.Action = e.GetAction()
	ev.Branch = pr.GetHead().GetRef()
	ev.Commit = pr.GetHead().GetSHA()
	if !shaRE.MatchString(ev.Commit) {
		return pipeline.WebhookEvent{}, pipeline.Invalid("pull_request.head.sha", "not a commit SHA")
	}
	if ev.Author == "" {
		ev.Author = pr.GetUser().GetLogin()
	}
	baseID := pr.GetBase().GetRepo().GetID()
	if baseID == 0 {
		baseID = ev.RepoID
	}
	head := pr.GetHead().GetRepo()
	// A head repository that is gone (deleted fork) is treated as a fork.
	ev.Fork = head == nil || head.GetID() != baseID
	return ev, nil
}

func deployment(ev pipeline.WebhookEvent, e *github.DeploymentEvent) (pipeline.WebhookEvent, error) {
	d := e.GetDeployment()
	if e.Deployment == nil {
		return pipeline.WebhookEvent{}, pipeline.Invalid("deployment", "missing from the payload")
	}
	ev.Commit = d.GetSHA()
	ev.Branch = d.GetRef()
	if !shaRE.MatchString(ev.Commit) {
		return pipeline.WebhookEvent{}, pipeline.Invalid("deployment.sha", "not a commit SHA")
	}
	if l := d.GetCreator().GetLogin(); l != "" {
		ev.Author = l
	}
	return ev, nil
}
