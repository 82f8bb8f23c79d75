package bitbucketdc

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/forge/forgeutil"
)

// ParseWebhook implements pipeline.SCM: the X-Hub-Signature is checked in
// constant time before the body is parsed. It returns the first event
// ParseWebhookEvents returns.
func (f *Forge) ParseWebhook(req pipeline.WebhookRequest, secret string) (pipeline.WebhookEvent, error) {
	evs, err := f.ParseWebhookEvents(req, secret)
	if err != nil {
		return pipeline.WebhookEvent{}, err
	}
	return evs[0], nil
}

// ParseWebhookEvents implements pipeline.WebhookEventsParser: a
// repo:refs_changed delivery is a push per branch change that is not a
// deletion (a change of tags only is one tag push, of deletions only one
// branch deletion); pr:opened and pr:from_ref_updated are pull requests
// building the source's latest commit, a fork when the source repository
// is not the target's. The slice is never empty when err is nil.
func (f *Forge) ParseWebhookEvents(req pipeline.WebhookRequest, secret string) ([]pipeline.WebhookEvent, error) {
	if err := signature.Verify(req.Signature, req.Body, secret); err != nil {
		return nil, fmt.Errorf("bitbucketdc: webhook: %w", err)
	}
	evs, err := parse(req.Event, req.Body)
	if err != nil {
		return nil, fmt.Errorf("bitbucketdc: webhook: %w", err)
	}
	for i := range evs {
		evs[i].Delivery = req.Delivery
	}
	return evs, nil
}

// signature is Data Center's X-Hub-Signature with its messages.
var signature = forgeutil.Signature{Header: "X-Hub-Signature", Malformed: "malformed %s"}

type hookRepo struct {
	ID      int64  `json:"id"`
	Slug    string `json:"slug"`
	Project struct {
		Key string `json:"key"`
	} `json:"project"`
}

type hookRef struct {
	ID           string    `json:"id"`
	DisplayID    string    `json:"displayId"`
	LatestCommit string    `json:"latestCommit"`
	Repository   *hookRepo `json:"repository"`
}

type payload struct {
	Actor struct {
		Name string `json:"name"`
	} `json:"actor"`
	Repository *hookRepo `json:"repository"`
	Changes    []struct {
		Ref struct {
			ID        string `json:"id"`
			DisplayID string `json:"displayId"`
			Type      string `json:"type"`
		} `json:"ref"`
		ToHash string `json:"toHash"`
		Type   string `json:"type"`
	} `json:"changes"`
	PullRequest *struct {
		FromRef hookRef `json:"fromRef"`
		ToRef   hookRef `json:"toRef"`
	} `json:"pullRequest"`
}

func parse(event string, body []byte) ([]pipeline.WebhookEvent, error) {
	ev, more, err := parseOne(event, body)
	if err != nil {
		return nil, err
	}
	return append([]pipeline.WebhookEvent{ev}, more...), nil
}

// parseOne returns the delivery's first event and, for a refs_changed
// delivery changing several branches, the others.
func parseOne(event string, body []byte) (pipeline.WebhookEvent, []pipeline.WebhookEvent, error) {
	if event == "diagnostics:ping" {
		return pipeline.WebhookEvent{Kind: "ping"}, nil, nil
	}
	var p payload
	if err := json.Unmarshal(body, &p); err != nil {
		return pipeline.WebhookEvent{}, nil, pipeline.Invalid("body", "is not a Bitbucket Data Center webhook payload")
	}
	ev := pipeline.WebhookEvent{Kind: event, Author: p.Actor.Name}
	setRepo := func(r *hookRepo) error {
		if r == nil || r.ID == 0 {
			return pipeline.Invalid("repository", "the payload names no repository")
		}
		ev.RepoID, ev.RepoOwner, ev.RepoName = r.ID, r.Project.Key, r.Slug
		return nil
	}
	switch event {
	case "repo:refs_changed":
		ev.Kind = pipeline.EventPush
		if err := setRepo(p.Repository); err != nil {
			return ev, nil, err
		}
		if len(p.Changes) == 0 {
			return ev, nil, pipeline.Invalid("changes", "the payload changes no ref")
		}
		ev.Tag, ev.Deleted = true, true
		var pushes []pipeline.WebhookEvent
		for _, c := range p.Changes {
			if c.Ref.Type != "BRANCH" {
				continue
			}
			ev.Tag = false
			if c.Type == "DELETE" {
				continue
			}
			push := ev
			push.Tag, push.Deleted = false, false
			push.Branch = c.Ref.DisplayID
			if push.Branch == "" {
				push.Branch = strings.TrimPrefix(c.Ref.ID, "refs/heads/")
			}
			push.Commit = c.ToHash
			pushes = append(pushes, push)
		}
		if len(pushes) > 0 {
			return pushes[0], pushes[1:], nil
		}
		if ev.Tag {
			ev.Deleted = false
		}
		return ev, nil, nil
	case "pr:opened", "pr:from_ref_updated":
		ev.Kind = pipeline.EventPullRequest
		ev.Action = "opened"
		if event == "pr:from_ref_updated" {
			ev.Action = "synchronize"
		}
		if p.PullRequest == nil {
			return ev, nil, pipeline.Invalid("pullRequest", "the payload names no pull request")
		}
		if err := setRepo(p.PullRequest.ToRef.Repository); err != nil {
			return ev, nil, err
		}
		from := p.PullRequest.FromRef
		ev.Branch, ev.Commit = from.DisplayID, from.LatestCommit
		ev.Fork = from.Repository == nil || from.Repository.ID != ev.RepoID
		return ev, nil, nil
	}
	_ = setRepo(p.Repository) // other events are ignored; the repository is informative
	return ev, nil, nil
}
