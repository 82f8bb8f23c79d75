package bitbucket

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"

	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/forge/forgeutil"
)

// The webhook payloads, only what we read.
type (
	whRepo struct {
		UUID     string `json:"uuid"`
		FullName string `json:"full_name"`
	}
	whActor struct {
		Nickname    string `json:"nickname"`
		Username    string `json:"username"`
		DisplayName string `json:"display_name"`
	}
	whPush struct {
		Actor      whActor `json:"actor"`
		Repository *whRepo `json:"repository"`
		Push       struct {
			Changes []struct {
				New *struct {
					Type   string `json:"type"`
					Name   string `json:"name"`
					Target struct {
						Hash string `json:"hash"`
					} `json:"target"`
				} `json:"new"`
			} `json:"changes"`
		} `json:"push"`
	}
	whEnd struct {
		Branch struct {
			Name string `json:"name"`
		} `json:"branch"`
		Commit struct {
			Hash string `json:"hash"`
		} `json:"commit"`
		Repository *whRepo `json:"repository"`
	}
	whPullRequest struct {
		Actor       whActor `json:"actor"`
		Repository  *whRepo `json:"repository"`
		PullRequest struct {
			Source      whEnd `json:"source"`
			Destination whEnd `json:"destination"`
		} `json:"pullrequest"`
	}
)

func (a whActor) login() string {
	for _, s := range []string{a.Nickname, a.Username, a.DisplayName} {
		if s != "" {
			return s
		}
	}
	return ""
}

var eventRE = regexp.MustCompile(`^[a-z_]+:[a-z_]+$`)

// ParseWebhook implements pipeline.SCM: the first of ParseWebhookEvents.
func (f *Forge) ParseWebhook(req pipeline.WebhookRequest, secret string) (pipeline.WebhookEvent, error) {
	evs, err := f.ParseWebhookEvents(req, secret)
	if err != nil {
		return pipeline.WebhookEvent{}, err
	}
	return evs[0], nil
}

var _ pipeline.WebhookEventsParser = (*Forge)(nil)

// ParseWebhookEvents implements pipeline.WebhookEventsParser.
// X-Hub-Signature is checked against secret in constant time before
// anything is parsed.
//
//   - repo:push → Kind "push": one event per changed branch; a push whose
//     changes are all deletions is one Deleted event, all tags one Tag.
//   - pullrequest:created / pullrequest:updated → Kind "pull_request" with
//     Action "opened" / "synchronize", the source branch and commit (as
//     Bitbucket sends it: 12 characters; see ExpandCommit), Fork when the
//     source repository's uuid is not the destination's.
//   - anything else → Kind is the event key (the service ignores it).
//
// RepoID is ID64 of the payload's repository.uuid.
func (f *Forge) ParseWebhookEvents(req pipeline.WebhookRequest, secret string) ([]pipeline.WebhookEvent, error) {
	if err := signature.Verify(req.Signature, req.Body, secret); err != nil {
		return nil, fmt.Errorf("bitbucket: webhook: %w", err)
	}
	evs, err := parseEvent(req.Event, req.Body)
	if err != nil {
		return nil, fmt.Errorf("bitbucket: webhook %s: %w", safeEvent(req.Event), err)
	}
	for i := range evs {
		evs[i].Delivery = req.Delivery
	}
	return evs, nil
}

func safeEvent(e string) string {
	if eventRE.MatchString(e) {
		return e
	}
	return "(invalid event)"
}

// signature is Bitbucket Cloud's X-Hub-Signature with its messages.
var signature = forgeutil.Signature{Header: "X-Hub-Signature", Malformed: "missing or malformed %s"}

func repoFields(ev *pipeline.WebhookEvent, r *whRepo) error {
	if r == nil || r.UUID == "" {
		return pipeline.Invalid("repository", "the payload names no repository")
	}
	ev.RepoID = ID64(r.UUID)
	ev.RepoOwner, ev.RepoName, _ = strings.Cut(r.FullName, "/")
	return nil
}

func parseEvent(event string, body []byte) ([]pipeline.WebhookEvent, error) {
	switch event {
	case "repo:push":
		var p whPush
		if err := json.Unmarshal(body, &p); err != nil {
			return nil, pipeline.Invalid("body", "malformed repo:push payload")
		}
		ev := pipeline.WebhookEvent{Kind: pipeline.EventPush, Author: p.Actor.login()}
		if err := repoFields(&ev, p.Repository); err != nil {
			return nil, err
		}
		var builds []pipeline.WebhookEvent
		tags := 0
		for _, c := range p.Push.Changes {
			switch {
			case c.New == nil:
			case c.New.Type == "tag" || c.New.Type == "annotated_tag":
				tags++
			case c.New.Type == "branch":
				b := ev
				b.Branch, b.Commit = c.New.Name, c.New.Target.Hash
				builds = append(builds, b)
			}
		}
		if len(builds) == 0 {
			if tags > 0 {
				ev.Tag = true
			} else {
				ev.Deleted = true
			}
			return []pipeline.WebhookEvent{ev}, nil
		}
		return builds, nil
	case "pullrequest:created", "pullrequest:updated":
		var p whPullRequest
		if err := json.Unmarshal(body, &p); err != nil {
			return nil, pipeline.Invalid("body", "malformed %s payload", event)
		}
		ev := pipeline.WebhookEvent{Kind: pipeline.EventPullRequest, Action: "opened", Author: p.Actor.login()}
		if event == "pullrequest:updated" {
			ev.Action = "synchronize"
		}
		if err := repoFields(&ev, p.Repository); err != nil {
			return nil, err
		}
		src, dst := p.PullRequest.Source, p.PullRequest.Destination
		ev.Branch, ev.Commit = src.Branch.Name, src.Commit.Hash
		dstUUID := p.Repository.UUID
		if dst.Repository != nil && dst.Repository.UUID != "" {
			dstUUID = dst.Repository.UUID
		}
		ev.Fork = src.Repository == nil || !strings.EqualFold(src.Repository.UUID, dstUUID)
		return []pipeline.WebhookEvent{ev}, nil
	}
	if !eventRE.MatchString(event) {
		return nil, pipeline.Invalid(HeaderEvent, "not a Bitbucket event key")
	}
	ev := pipeline.WebhookEvent{Kind: event}
	var env struct {
		Repository *whRepo `json:"repository"`
	}
	if json.Unmarshal(body, &env) == nil && env.Repository != nil {
		_ = repoFields(&ev, env.Repository)
	}
	return []pipeline.WebhookEvent{ev}, nil
}
