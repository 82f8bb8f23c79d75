package pipeline_test

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/pipelinetest/fakegithub"
)

// A webhook delivery on the in-memory store: verified before anything is
// parsed, answered alike for a missing pipeline and a bad signature,
// ignored when it makes no build, and remembered by its signed body.
func TestWebhookDeliveriesAreVerifiedFilteredAndRememberedByTheirBody(t *testing.T) {
	w := newMemWorld(t, nil) // not started: builds stay queued
	p := w.create()
	if _, err := w.store.UpdatePipeline(t.Context(), "acme", "app", func(p *pipeline.Pipeline) error {
		p.Events = []string{"pull_request", "push"}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	secret := p.WebhookSecret
	if secret == "" {
		t.Fatal("the created pipeline has no webhook secret")
	}
	sha := w.repo.Commit("main", map[string]string{"x.txt": "x"}, "pushed")
	push := fakegithub.PushPayload(w.repo, "main", "", sha, "alice")
	delivery := func(event, id, key string, body []byte) pipeline.WebhookRequest {
		return pipeline.WebhookRequest{Event: event, Delivery: id, Signature: fakegithub.SignPayload(key, body), Body: body}
	}
	badSignature := "webhook signature does not match"

	cases := []struct {
		name    string
		repo    string
		req     pipeline.WebhookRequest
		want    error
		message string // PublicMessage of the error
		outcome pipeline.WebhookOutcome
		reason  string
	}{
		{name: "wrong secret", req: delivery("push", "d1", "not-the-secret", push), want: pipeline.ErrUnauthorized, message: badSignature},
		{name: "unsigned", req: pipeline.WebhookRequest{Event: "push", Delivery: "d1", Body: push}, want: pipeline.ErrUnauthorized, message: badSignature},
		{name: "body changed after signing", req: pipeline.WebhookRequest{Event: "push", Delivery: "d1",
			Signature: fakegithub.SignPayload(secret, push), Body: append([]byte(" "), push...)}, want: pipeline.ErrUnauthorized, message: badSignature},
		{name: "missing pipeline", repo: "nope", req: delivery("push", "d1", secret, push), want: pipeline.ErrUnauthorized, message: badSignature},
		{name: "another forge's format", req: func() pipeline.WebhookRequest {
			r := delivery("push", "d1", secret, push)
			r.Forge = "bitbucket"
			return r
		}(), want: pipeline.ErrUnauthorized, message: badSignature},
		{name: "no delivery id", req: delivery("push", " ", secret, push), want: pipeline.ErrInvalid, message: "delivery: a delivery id is required"},
		{name: "another repository", req: delivery("push", "d1", secret, withRepoID(t, push, w.repo.ID+1)), want: pipeline.ErrInvalid},
		{name: "ping", req: delivery("ping", "d2", secret, fakegithub.PingPayload(w.repo)), outcome: pipeline.WebhookPong},
		{name: "event not subscribed", req: delivery("deployment", "d3", secret, fakegithub.DeploymentPayload(w.repo, sha, "main", "prod")),
			outcome: pipeline.WebhookIgnored, reason: "the pipeline is not subscribed to deployment"},
		{name: "branch deletion", req: delivery("push", "d4", secret, fakegithub.PushPayload(w.repo, "old", sha, fakegithub.ZeroSHA, "alice")),
			outcome: pipeline.WebhookIgnored, reason: "branch deletion"},
		{name: "tag push", req: delivery("push", "d5", secret, fakegithub.PushPayload(w.repo, "refs/tags/v1", "", sha, "alice")),
			outcome: pipeline.WebhookIgnored, reason: "tag push"},
		{name: "pull request closed", req: delivery("pull_request", "d6", secret, fakegithub.PullRequestPayload(w.repo, "closed", 7, "feature", sha, false)),
			outcome: pipeline.WebhookIgnored, reason: "pull_request action closed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			repo := tc.repo
			if repo == "" {
				repo = "app"
			}
			res, err := w.svc.HandleWebhook(t.Context(), "acme", repo, tc.req)
			wantErr(t, "delivery", err, tc.want)
			if tc.message != "" && pipeline.PublicMessage(err) != tc.message {
				t.Fatalf("message %q, want %q", pipeline.PublicMessage(err), tc.message)
			}
			if res.Outcome != tc.outcome || res.Reason != tc.reason || res.Build != nil {
				t.Fatalf("answered %+v, want %s %q", res, tc.outcome, tc.reason)
			}
			if bs, err := w.store.ListBuilds(t.Context(), "acme", "app", 0, 0); err != nil || len(bs) != 0 {
				t.Fatalf("builds: %d %v", len(bs), err)
			}
		})
	}

	// WebhookTarget, asked before the body is read, answers as above.
	wantErr(t, "target", w.svc.WebhookTarget(t.Context(), "acme", "app"), nil)
	if err := w.svc.WebhookTarget(t.Context(), "acme", "nope"); pipeline.PublicMessage(err) != badSignature {
		t.Fatalf("target of a missing pipeline: %v", err)
	}
	wantErr(t, "target with a bad name", w.svc.WebhookTarget(t.Context(), "acme", "a..b/c"), pipeline.ErrInvalid)

	res, err := w.svc.HandleWebhook(t.Context(), "acme", "app", delivery("push", "d7", secret, push))
	if err != nil || res.Outcome != pipeline.WebhookCreated || res.Build == nil {
		t.Fatalf("push: %+v %v", res, err)
	}
	b := *res.Build
	if got := fmt.Sprintf("%d %s %s %s %s %s %v", b.Number, b.Status, b.Event, b.Branch, b.Commit, b.Author, b.Fork); got != "1 PENDING push main "+sha+" alice false" {
		t.Fatalf("build %s", got)
	}
	// The same body again, under another delivery id: the original build.
	res, err = w.svc.HandleWebhook(t.Context(), "acme", "app", delivery("push", "d8", secret, push))
	if err != nil || res.Outcome != pipeline.WebhookDuplicate || res.Build == nil || res.Build.Number != 1 {
		t.Fatalf("redelivery: %+v %v", res, err)
	}
	prHead := w.repo.Commit("feature", map[string]string{"f.txt": "f"}, "feature")
	res, err = w.svc.HandleWebhook(t.Context(), "acme", "app", delivery("pull_request", "d9", secret,
		fakegithub.PullRequestPayload(w.repo, "opened", 7, "feature", prHead, true)))
	if err != nil || res.Outcome != pipeline.WebhookCreated || res.Build == nil || res.Build.Number != 2 ||
		res.Build.Event != "pull_request" || res.Build.Commit != prHead || !res.Build.Fork {
		t.Fatalf("pull request from a fork: %+v %v", res, err)
	}
	if bs, err := w.store.ListBuilds(t.Context(), "acme", "app", 0, 0); err != nil || len(bs) != 2 {
		t.Fatalf("builds: %d %v", len(bs), err)
	}
}

func TestDefinitionIsReadWithReadAccessAndChangedByAdminsOnly(t *testing.T) {
	w := newMemWorld(t, nil)
	w.create()
	const spec = "kind: Pipeline\n"
	w.repo.Commit("main", map[string]string{pipeline.SpecPath: spec}, "spec")
	ctx := t.Context()

	for _, tc := range []struct {
		caller, ref string
		want        error
		field       string
	}{
		{"dave", "", nil, ""},
		{"dave", "main", nil, ""},
		{"bob", "", pipeline.ErrNotFound, ""},
		{"eve", "", pipeline.ErrUnauthorized, ""},
		{"dave", "bad..ref", pipeline.ErrInvalid, "ref"},
		{"dave", "no-such-branch", pipeline.ErrNotFound, ""},
	} {
		d, err := w.svc.GetDefinition(ctx, memCallers[tc.caller], "acme", "app", tc.ref)
		wantErr(t, tc.caller+" reads at "+tc.ref, err, tc.want)
		if f := invalidField(err); f != tc.field {
			t.Fatalf("field %q, want %q", f, tc.field)
		}
		content, _ := base64.StdEncoding.DecodeString(d.Content)
		if tc.want == nil && (string(content) != spec || len(d.SHA) != 40) {
			t.Fatalf("%s reads %q %q", tc.caller, content, d.SHA)
		}
		if tc.want != nil && d != (pipeline.Definition{}) {
			t.Fatalf("a refused read answered %+v", d)
		}
	}
	cur, err := w.svc.GetDefinition(ctx, memCallers["alice"], "acme", "app", "")
	if err != nil {
		t.Fatal(err)
	}
	next := "kind: Pipeline\n# changed\n"
	update := func(option, branch string) pipeline.DefinitionUpdate {
		return pipeline.DefinitionUpdate{Definition: pipeline.Definition{Content: base64.StdEncoding.EncodeToString([]byte(next)), SHA: cur.SHA},
			Commit: pipeline.CommitOption{Message: "change the spec", Option: option, BranchName: branch}}
	}
	head := w.repo.Head("main")
	for _, tc := range []struct {
		name, caller string
		u            pipeline.DefinitionUpdate
		want         error
		field        string
	}{
		{"read access", "dave", update("commit", ""), pipeline.ErrForbidden, ""},
		{"push access", "carol", update("commit", ""), pipeline.ErrForbidden, ""},
		{"no access", "bob", update("commit", ""), pipeline.ErrNotFound, ""},
		{"not base64", "alice", pipeline.DefinitionUpdate{Definition: pipeline.Definition{Content: "%%%"}}, pipeline.ErrInvalid, "definition.content"},
		{"empty", "alice", pipeline.DefinitionUpdate{}, pipeline.ErrInvalid, "definition.content"},
		{"unknown option", "alice", update("merge", ""), pipeline.ErrInvalid, "commit.option"},
		{"bad branch", "alice", update("commit", "-x"), pipeline.ErrInvalid, "commit.branch_name"},
		{"pull request without a branch", "alice", update("pull_request", ""), pipeline.ErrInvalid, "commit.branch_name"},
	} {
		_, err := w.svc.UpdateDefinition(ctx, memCallers[tc.caller], "acme", "app", tc.u)
		wantErr(t, tc.name, err, tc.want)
		if f := invalidField(err); f != tc.field {
			t.Fatalf("%s: field %q, want %q", tc.name, f, tc.field)
		}
	}
	if w.repo.Head("main") != head || len(w.gh.PullRequests("acme", "app")) != 0 {
		t.Fatal("a refused update committed")
	}

	res, err := w.svc.UpdateDefinition(ctx, memCallers["alice"], "acme", "app", update("pull_request", "spec-change"))
	if err != nil || res.Branch != "spec-change" || res.PullRequest == "" || res.Commit != w.repo.Head("spec-change") || w.repo.Head("main") != head {
		t.Fatalf("through a pull request: %+v %v", res, err)
	}
	if prs := w.gh.PullRequests("acme", "app"); len(prs) != 1 || prs[0].Head != "spec-change" || prs[0].Base != "main" || prs[0].Title != "change the spec" {
		t.Fatalf("pull requests %+v", prs)
	}
	res, err = w.svc.UpdateDefinition(ctx, memCallers["alice"], "acme", "app", update("", ""))
	if err != nil || res.Branch != "main" || res.PullRequest != "" || res.Commit != w.repo.Head("main") || res.Commit == head {
		t.Fatalf("straight to main: %+v %v", res, err)
	}
	if got, ok := w.repo.File("main", pipeline.SpecPath); !ok || got != next {
		t.Fatalf("main's spec %q %v", got, ok)
	}
}

func TestRepositoriesAreTheCallersOwn(t *testing.T) {
	w := newMemWorld(t, nil)
	w.gh.AddRepo("alice", "tool") // alice's own: admin
	w.gh.AddRepo("acme", "secret")
	ctx := t.Context()
	list, err := w.svc.AllRepositories(ctx, memCallers["alice"])
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range list.Repositories {
		names = append(names, r.Forge+":"+r.FullName)
	}
	if got := strings.Join(names, " "); got != "github:acme/app github:alice/tool" || len(list.Reconnect) != 0 {
		t.Fatalf("alice's repositories: %s reconnect %v", got, list.Reconnect)
	}
	if _, err := w.svc.AllRepositories(ctx, memCallers["eve"]); !errors.Is(err, pipeline.ErrUnauthorized) {
		t.Fatalf("without a token: %v", err)
	}
	for _, tc := range []struct {
		caller, repo string
		want         error
	}{
		{"alice", "app", nil},
		{"dave", "app", nil},
		{"bob", "app", pipeline.ErrNotFound},
		{"alice", "secret", pipeline.ErrNotFound},
		{"alice", "a..b/c", pipeline.ErrInvalid},
	} {
		r, err := w.svc.Repository(ctx, memCallers[tc.caller], "acme", tc.repo)
		wantErr(t, tc.caller+" "+tc.repo, err, tc.want)
		if tc.want == nil && (r.FullName != "acme/app" || r.DefaultBranch != "main") {
			t.Fatalf("%s sees %+v", tc.caller, r)
		}
		if tc.want == pipeline.ErrNotFound && pipeline.PublicMessage(err) != "repository acme/"+tc.repo+" not found" {
			t.Fatalf("message %q", pipeline.PublicMessage(err))
		}
	}
}

// Authorize is the check the API's filter makes once per request: the
// caller it returns carries the grant, which the use cases then take.
func TestAuthorizeGrantsWhatWasCheckedOnly(t *testing.T) {
	w := newMemWorld(t, nil)
	w.create()
	ctx := t.Context()
	for _, tc := range []struct {
		caller string
		need   pipeline.Permission
		want   error
	}{
		{"dave", pipeline.PermRead, nil},
		{"dave", pipeline.PermPush, pipeline.ErrForbidden},
		{"carol", pipeline.PermPush, nil},
		{"carol", pipeline.PermAdmin, pipeline.ErrForbidden},
		{"alice", pipeline.PermAdmin, nil},
		{"bob", pipeline.PermRead, pipeline.ErrNotFound},
		{"eve", pipeline.PermRead, pipeline.ErrUnauthorized},
	} {
		_, err := w.svc.Authorize(ctx, memCallers[tc.caller], "acme", "app", tc.need)
		wantErr(t, fmt.Sprintf("%s needs %s", tc.caller, tc.need), err, tc.want)
	}
	// A reader's grant lets them read without asking GitHub again, and
	// does not let them write.
	c, err := w.svc.Authorize(ctx, memCallers["dave"], "acme", "app", pipeline.PermRead)
	if err != nil {
		t.Fatal(err)
	}
	w.gh.ResetRequests()
	if _, err := w.svc.ListBuilds(ctx, c, "acme", "app", 0, 0); err != nil {
		t.Fatal(err)
	}
	if reqs := w.gh.Requests(); len(reqs) != 0 {
		t.Fatalf("a granted read asked GitHub: %+v", reqs)
	}
	if _, err := w.svc.CancelBuild(ctx, c, "acme", "app", 1); !errors.Is(err, pipeline.ErrForbidden) {
		t.Fatalf("a reader's grant cancels: %v", err)
	}
	if err := w.svc.FollowBuilds(ctx, c, "acme", "app", 0, 10, func(pipeline.BuildEvent) error { return nil }); !errors.Is(err, pipeline.ErrNotImplemented) {
		t.Fatalf("following builds on a store without a build stream: %v", err)
	}
}
