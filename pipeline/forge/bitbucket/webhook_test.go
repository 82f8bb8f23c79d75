package bitbucket_test

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/forge/bitbucket"
)

func TestParseWebhook(t *testing.T) {
	s, f := setup(t)
	s.AddUser("alice")
	r := s.AddRepo("acme", "app")
	sha := r.Head("main")
	secret := "0123456789abcdef0123456789abcdef"
	parse := func(event string, body []byte) (pipeline.WebhookEvent, error) {
		return f.ParseWebhook(pipeline.WebhookRequest{Event: event, Delivery: "d", Signature: sign(secret, body), Body: body}, secret)
	}

	ev, err := parse("repo:push", s.PushPayload(r, "main", sha, "alice"))
	if err != nil || ev.Kind != "push" || ev.Branch != "main" || ev.Commit != sha || ev.RepoID != bitbucket.ID64(r.UUID) || ev.Author != "alice" || ev.Deleted {
		t.Fatalf("push: %+v %v", ev, err)
	}
	if ev, err := parse("repo:push", s.PushPayload(r, "gone", "", "alice")); err != nil || !ev.Deleted {
		t.Fatalf("deletion: %+v %v", ev, err)
	}
	// Two branches in one push: two builds.
	var two map[string]any
	_ = json.Unmarshal(s.PushPayload(r, "main", sha, "alice"), &two)
	ch := two["push"].(map[string]any)["changes"].([]any)
	other := map[string]any{"new": map[string]any{"type": "branch", "name": "dev", "target": map[string]any{"hash": sha}}}
	tag := map[string]any{"new": map[string]any{"type": "tag", "name": "v1", "target": map[string]any{"hash": sha}}}
	two["push"].(map[string]any)["changes"] = append(ch, other, tag)
	body, _ := json.Marshal(two)
	evs, err := f.ParseWebhookEvents(pipeline.WebhookRequest{Event: "repo:push", Delivery: "d", Signature: sign(secret, body), Body: body}, secret)
	if err != nil || len(evs) != 2 || evs[0].Branch != "main" || evs[1].Branch != "dev" || evs[1].Delivery != "d" {
		t.Fatalf("two branches: %+v %v", evs, err)
	}

	ev, err = parse("pullrequest:created", s.PullRequestPayload(r, 1, "feature", sha, "alice", false))
	if err != nil || ev.Kind != "pull_request" || ev.Action != "opened" || ev.Branch != "feature" || ev.Commit != sha[:12] || ev.Fork {
		t.Fatalf("pr: %+v %v", ev, err)
	}
	if ev, err := parse("pullrequest:updated", s.PullRequestPayload(r, 1, "feature", sha, "mallory", true)); err != nil || !ev.Fork || ev.Action != "synchronize" {
		t.Fatalf("fork pr: %+v %v", ev, err)
	}
	if ev, err := parse("repo:fork", []byte(`{}`)); err != nil || ev.Kind != "repo:fork" {
		t.Fatalf("other event: %+v %v", ev, err)
	}

	body = s.PushPayload(r, "main", sha, "alice")
	for name, sig := range map[string]string{"wrong secret": sign("other", body), "unsigned": "", "malformed": "sha256=zz"} {
		_, err := f.ParseWebhook(pipeline.WebhookRequest{Event: "repo:push", Delivery: "d", Signature: sig, Body: body}, secret)
		if !errors.Is(err, pipeline.ErrUnauthorized) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := parse("repo:push", []byte(`{"repository":`)); !errors.Is(err, pipeline.ErrInvalid) {
		t.Fatalf("malformed: %v", err)
	}
}
