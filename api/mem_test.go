package api

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/memstore"
	"github.com/kontinuous/kontinuous/pipeline/pipelinetest/fakegithub"
)

// The API on the in-memory store (no etcd): the access matrices of
// access_test.go, and the routes they leave out (create and list
// pipelines, manual triggers, webhook deliveries), through HTTP on the
// real Service, engine (not started) and stand-in GitHub.

func newMemAccessWorld(t *testing.T) *accessWorld {
	t.Helper()
	return newAccessWorldOn(t, memstore.New(), nil)
}

func TestBuildRoutesAccessMatrixOnTheMemoryStore(t *testing.T) {
	buildRoutesAccessMatrix(t, newMemAccessWorld(t))
}

func TestPipelineRoutesAccessMatrixOnTheMemoryStore(t *testing.T) {
	pipelineRoutesAccessMatrix(t, newMemAccessWorld(t))
}

func TestAgentStatusUpdatesRefusedOnTheMemoryStore(t *testing.T) {
	agentStatusUpdatesRefused(t, newMemAccessWorld(t))
}

// errorOf decodes the contract's error shape from a reply.
func errorOf(t *testing.T, r accessReply) Error {
	t.Helper()
	var e Error
	if err := json.Unmarshal([]byte(r.body), &e); err != nil || e.Code != r.status {
		t.Fatalf("reply %d is not in the error shape: %s (%v)", r.status, r.body, err)
	}
	return e
}

func TestCreateAndListPipelinesThroughTheAPI(t *testing.T) {
	w := newMemAccessWorld(t)
	w.fake.AddRepo("acme", "lib")
	w.fake.Grant("alice", "acme", "lib", "admin")
	w.fake.Grant("dave", "acme", "lib", "read")
	const pipelines = "/api/v1/pipelines"
	for _, tc := range []struct {
		name, login, body string
		status            int
		message           string // part of the error message
	}{
		{"no token", "", `{"owner": "acme", "repo": "lib", "events": ["push"]}`, 401, ""},
		{"no access", "bob", `{"owner": "acme", "repo": "lib", "events": ["push"]}`, 404, "not found"},
		{"read access", "dave", `{"owner": "acme", "repo": "lib", "events": ["push"]}`, 403, "admin"},
		{"not JSON", "alice", `{"owner": `, 400, ""},
		{"without push", "alice", `{"owner": "acme", "repo": "lib", "events": ["pull_request"]}`, 400, "events"},
		{"bad name", "alice", `{"owner": "acme", "repo": "..", "events": ["push"]}`, 400, "repo"},
		{"taken", "alice", `{"owner": "acme", "repo": "app", "events": ["push"]}`, 409, "already exists"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := w.doBody(t, "POST", pipelines, tc.login, "", tc.body)
			if got.status != tc.status {
				t.Fatalf("%d %s, want %d", got.status, got.body, tc.status)
			}
			if e := errorOf(t, got); !strings.Contains(e.Message, tc.message) {
				t.Fatalf("message %q lacks %q", e.Message, tc.message)
			}
			if _, err := w.store.GetPipeline(t.Context(), "acme", "lib"); err == nil {
				t.Fatal("a refused create stored acme/lib")
			}
			if h := w.fake.Hooks("acme", "lib"); len(h) != 0 {
				t.Fatalf("a refused create installed %+v", h)
			}
		})
	}

	got := w.doBody(t, "POST", pipelines, "alice", "", `{"owner": "acme", "repo": "lib", "events": ["pull_request", "push"]}`)
	var created pipeline.Pipeline
	if got.status != http.StatusCreated || json.Unmarshal([]byte(got.body), &created) != nil || created.Owner != "acme" || created.Repo != "lib" ||
		fmt.Sprint(created.Events) != "[pull_request push]" || created.Forge != "github" {
		t.Fatalf("create: %d %s", got.status, got.body)
	}
	stored, err := w.store.GetPipeline(t.Context(), "acme", "lib")
	if err != nil || stored.ID != created.ID || stored.WebhookSecret == "" {
		t.Fatalf("stored %+v %v", stored, err)
	}
	for _, secret := range []string{stored.WebhookSecret, "PRIVATE KEY", "tok-alice", "deploy_key"} {
		if strings.Contains(got.body, secret) {
			t.Fatalf("the create reply shows %q: %s", secret, got.body)
		}
	}
	if h := w.fake.Hooks("acme", "lib"); len(h) != 1 || h[0].Secret != stored.WebhookSecret {
		t.Fatalf("hooks %+v", h)
	}

	// The list shows each caller the pipelines they can read.
	for login, want := range map[string]string{"alice": "acme/app acme/lib", "dave": "acme/app acme/lib", "bob": ""} {
		got := w.do(t, "GET", pipelines, login, "")
		var ps []pipeline.Pipeline
		if got.status != http.StatusOK || json.Unmarshal([]byte(got.body), &ps) != nil {
			t.Fatalf("%s's list: %d %s", login, got.status, got.body)
		}
		var names []string
		for _, p := range ps {
			names = append(names, p.Owner+"/"+p.Repo)
		}
		if strings.Join(names, " ") != want {
			t.Errorf("%s's list: %v, want %q", login, names, want)
		}
	}
	if got := w.do(t, "GET", pipelines, "", ""); got.status != http.StatusUnauthorized {
		t.Fatalf("anonymous list: %d %s", got.status, got.body)
	}

	// A pipeline shows its reader what they may do with it.
	for login, want := range map[string]string{"alice": `{"read":true,"push":true,"admin":true}`, "dave": `{"read":true,"push":false,"admin":false}`} {
		got := w.do(t, "GET", pipelines+"/acme/lib", login, "")
		var v struct {
			Permissions json.RawMessage `json:"permissions"`
		}
		if got.status != http.StatusOK || json.Unmarshal([]byte(got.body), &v) != nil || string(v.Permissions) != want {
			t.Errorf("%s's view: %d %s, want permissions %s", login, got.status, got.body, want)
		}
	}
}

// manualTrigger posts a manual trigger with the X-Custom-Event header.
func (w *accessWorld) manualTrigger(t *testing.T, login, event, body string) accessReply {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), "POST", w.url+buildsPath, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Custom-Event", event)
	if login != "" {
		req.Header.Set("Authorization", "Bearer "+w.tokens[login])
	}
	return send(t, req)
}

func send(t *testing.T, req *http.Request) accessReply {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return accessReply{resp.StatusCode, string(b)}
}

func TestManualTriggerThroughTheAPI(t *testing.T) {
	w := newMemAccessWorld(t)
	head := w.repo.Head("main")
	before, err := w.store.ListBuilds(t.Context(), "acme", "app", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, login, event, body string
		status                   int
	}{
		{"no token", "", "dashboard", `{}`, 401},
		{"no access", "bob", "dashboard", `{}`, 404},
		{"read access", "dave", "dashboard", `{}`, 403},
		{"not a manual event", "alice", "push", `{}`, 400},
		{"missing branch", "alice", "cli", `{"branch": "gone"}`, 400},
		{"bad branch", "alice", "cli", `{"branch": "-x"}`, 400},
		{"not JSON", "alice", "cli", `{"branch": `, 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := w.manualTrigger(t, tc.login, tc.event, tc.body)
			if got.status != tc.status {
				t.Fatalf("%d %s, want %d", got.status, got.body, tc.status)
			}
			errorOf(t, got)
		})
	}
	if after, err := w.store.ListBuilds(t.Context(), "acme", "app", 0, 0); err != nil || len(after) != len(before) {
		t.Fatalf("refused triggers stored builds: %d → %d %v", len(before), len(after), err)
	}
	got := w.manualTrigger(t, "alice", "cli", `{"author": "release-bot"}`)
	var b pipeline.Build
	if got.status != http.StatusCreated || json.Unmarshal([]byte(got.body), &b) != nil {
		t.Fatalf("trigger: %d %s", got.status, got.body)
	}
	if b.Number != len(before)+1 || b.Status != pipeline.StatusPending || b.Event != "cli" || b.Branch != "main" || b.Commit != head || b.Author != "release-bot" {
		t.Fatalf("triggered %+v", b)
	}
	if got := w.do(t, "GET", fmt.Sprintf("%s/%d", buildsPath, b.Number), "dave", ""); got.status != http.StatusOK || !strings.Contains(got.body, `"author":"release-bot"`) {
		t.Fatalf("the triggered build: %d %s", got.status, got.body)
	}
}

// delivery posts a GitHub webhook delivery of event, signed with secret
// ("" = unsigned).
func (w *accessWorld) delivery(t *testing.T, event, id, secret string, body []byte) accessReply {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), "POST", w.url+buildsPath, strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-GitHub-Event", event)
	req.Header.Set("X-GitHub-Delivery", id)
	if secret != "" {
		req.Header.Set("X-Hub-Signature-256", fakegithub.SignPayload(secret, body))
	}
	return send(t, req)
}

func TestWebhookDeliveriesThroughTheAPI(t *testing.T) {
	w := newMemAccessWorld(t)
	const secret = "hook-secret-0123456789abcdef" // newAccessWorldOn's
	sha := w.repo.Commit("main", map[string]string{"x.txt": "x"}, "pushed")
	push := fakegithub.PushPayload(w.repo, "main", "", sha, "alice")
	builds := func() int {
		bs, err := w.store.ListBuilds(t.Context(), "acme", "app", 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		return len(bs)
	}
	n := builds()

	for _, tc := range []struct {
		name, event, id, secret string
		body                    []byte
		status                  int
	}{
		{"unsigned", "push", "d-1", "", push, 401},
		{"signed with another secret", "push", "d-2", "not-the-secret", push, 401},
		{"ping", "ping", "d-3", secret, fakegithub.PingPayload(w.repo), 200},
		{"event the pipeline does not subscribe to", "pull_request", "d-4", secret, fakegithub.PullRequestPayload(w.repo, "opened", 1, "feature", sha, false), 202},
		{"branch deletion", "push", "d-5", secret, fakegithub.PushPayload(w.repo, "gone", sha, fakegithub.ZeroSHA, "alice"), 202},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := w.delivery(t, tc.event, tc.id, tc.secret, tc.body)
			if got.status != tc.status {
				t.Fatalf("%d %s, want %d", got.status, got.body, tc.status)
			}
			if tc.status >= 400 {
				errorOf(t, got)
			}
			if builds() != n {
				t.Fatal("the delivery made a build")
			}
		})
	}

	got := w.delivery(t, "push", "d-6", secret, push)
	var b pipeline.Build
	if got.status != http.StatusCreated || json.Unmarshal([]byte(got.body), &b) != nil || b.Number != n+1 || b.Commit != sha || b.Branch != "main" || b.Event != "push" || b.Author == "" {
		t.Fatalf("push: %d %s", got.status, got.body)
	}
	// A redelivery (same body, any id) answers the original build.
	got = w.delivery(t, "push", "d-7", secret, push)
	var again pipeline.Build
	if got.status != http.StatusOK || json.Unmarshal([]byte(got.body), &again) != nil || again.Number != b.Number {
		t.Fatalf("redelivery: %d %s", got.status, got.body)
	}
	if builds() != n+1 {
		t.Fatalf("%d builds after a delivery and its redelivery, want %d", builds(), n+1)
	}
	// A pipeline that does not exist answers as a bad signature does.
	req, err := http.NewRequestWithContext(t.Context(), "POST", w.url+"/api/v1/pipelines/acme/nope/builds", strings.NewReader(string(push)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-GitHub-Event", "push")
	req.Header.Set("X-GitHub-Delivery", "d-8")
	req.Header.Set("X-Hub-Signature-256", fakegithub.SignPayload(secret, push))
	missing := send(t, req)
	unsigned := w.delivery(t, "push", "d-9", "wrong", push)
	if missing.status != http.StatusUnauthorized || errorOf(t, missing).Message != errorOf(t, unsigned).Message {
		t.Fatalf("delivery to a missing pipeline: %d %s; to this one with a bad signature: %d %s", missing.status, missing.body, unsigned.status, unsigned.body)
	}
}

func TestBadgeRouteAnswersAlikeForWhatItMustNotReveal(t *testing.T) {
	w := newMemAccessWorld(t)
	w.fake.SetPublic("acme", "app", true)
	srv, err := New(Config{Authenticator: refuseAll{}, Logger: slog.New(slog.DiscardHandler), Resources: []Resource{NewBadgeResources(pipeline.NewBadges(w.svc))}})
	if err != nil {
		t.Fatal(err)
	}
	get := func(path, etag string) *httptest.ResponseRecorder {
		req := httptest.NewRequest("GET", path, nil)
		if etag != "" {
			req.Header.Set("If-None-Match", etag)
		}
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		return rec
	}
	// newAccessWorldOn's builds: #3 (the latest) waits for approval.
	for path, text := range map[string]string{
		"/api/v1/pipelines/acme/app/badge.svg":              ">waiting<",
		"/api/v1/pipelines/acme/app/badge.svg?branch=main":  ">waiting<",
		"/api/v1/pipelines/acme/app/badge.svg?branch=other": ">no builds<",
		"/api/v1/pipelines/acme/nope/badge.svg":             ">unknown<",
	} {
		rec := get(path, "")
		if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != "image/svg+xml; charset=utf-8" || !strings.Contains(rec.Body.String(), text) {
			t.Errorf("%s: %d %s %s, want %s", path, rec.Code, rec.Header().Get("Content-Type"), rec.Body, text)
		}
		etag := rec.Header().Get("ETag")
		if again := get(path, etag); etag == "" || again.Code != http.StatusNotModified || again.Body.Len() != 0 {
			t.Errorf("%s with its ETag %q: %d", path, etag, again.Code)
		}
	}
	// A private repository's badge is the missing pipeline's, byte for byte.
	w.fake.SetPublic("acme", "app", false)
	srv, err = New(Config{Authenticator: refuseAll{}, Logger: slog.New(slog.DiscardHandler), Resources: []Resource{NewBadgeResources(pipeline.NewBadges(w.svc))}})
	if err != nil {
		t.Fatal(err)
	}
	private, missing := get("/api/v1/pipelines/acme/app/badge.svg", ""), get("/api/v1/pipelines/acme/nope/badge.svg", "")
	if private.Code != http.StatusOK || private.Body.String() != missing.Body.String() || private.Header().Get("ETag") != missing.Header().Get("ETag") {
		t.Fatalf("private %d %s\nmissing %d %s", private.Code, private.Body, missing.Code, missing.Body)
	}
}

func TestRepositoriesAndBuildPagingThroughTheAPI(t *testing.T) {
	w := newMemAccessWorld(t)
	w.fake.AddRepo("acme", "hidden")
	got := w.do(t, "GET", "/api/v1/repositories", "alice", "")
	var repos []pipeline.Repository
	if got.status != http.StatusOK || json.Unmarshal([]byte(got.body), &repos) != nil || len(repos) != 1 ||
		repos[0].FullName != "acme/app" || repos[0].Forge != "github" || got.body == "" {
		t.Fatalf("alice's repositories: %d %s", got.status, got.body)
	}
	if got := w.do(t, "GET", "/api/v1/repositories", "bob", ""); got.status != http.StatusOK || strings.TrimSpace(got.body) != "[]" {
		t.Fatalf("bob's repositories: %d %s", got.status, got.body)
	}
	for _, tc := range []struct {
		path, login string
		status      int
	}{
		{"/api/v1/repositories/acme/app", "dave", 200},
		{"/api/v1/repositories/acme/app", "bob", 404},
		{"/api/v1/repositories/acme/hidden", "alice", 404},
		{"/api/v1/repositories/acme/app", "", 401},
		{buildsPath + "?limit=2", "dave", 200},
		{buildsPath + "?limit=0", "dave", 400},
		{buildsPath + "?limit=201", "dave", 400},
		{buildsPath + "?before=x", "dave", 400},
		{buildsPath + "?before=3", "dave", 200},
		{buildsPath + "/0", "dave", 400},
		{buildsPath + "/99", "dave", 404},
	} {
		if got := w.do(t, "GET", tc.path, tc.login, ""); got.status != tc.status {
			t.Errorf("GET %s as %q: %d %s, want %d", tc.path, tc.login, got.status, got.body, tc.status)
		}
	}
	// The pages: the newest two, then those before 3.
	for path, want := range map[string]string{buildsPath + "?limit=2": "[3 2]", buildsPath + "?before=3": "[2 1]"} {
		var bs []pipeline.Build
		got := w.do(t, "GET", path, "dave", "")
		if err := json.Unmarshal([]byte(got.body), &bs); err != nil {
			t.Fatalf("%s: %v %s", path, err, got.body)
		}
		var numbers []int
		for _, b := range bs {
			numbers = append(numbers, b.Number)
		}
		if fmt.Sprint(numbers) != want {
			t.Errorf("%s: %v, want %s", path, numbers, want)
		}
	}
}

func TestLintAnswersEveryProblemOrTheStageCount(t *testing.T) {
	srv, err := New(Config{Authenticator: allowAll{}, Logger: slog.New(slog.DiscardHandler), Resources: []Resource{NewLintResources()}})
	if err != nil {
		t.Fatal(err)
	}
	const good = `apiVersion: v1alpha1
kind: Pipeline
metadata:
  name: app
spec:
  selector:
    matchLabels: {app: app}
  template:
    metadata:
      name: app
    stages:
      - name: test
        type: command
        params: {command: ["true"]}
`
	goodJSON, _ := json.Marshal(LintRequest{Content: good}) // a string always marshals
	for _, tc := range []struct {
		name, ctype, body string
		status            int
		valid             bool
		stages            int
	}{
		{"valid YAML", "application/yaml", good, 200, true, 1},
		{"valid JSON", "application/json", string(goodJSON), 200, true, 1},
		{"unknown stage type", "text/plain", strings.Replace(good, "type: command", "type: teleport", 1), 200, false, 0},
		{"not YAML", "application/yaml", "kind: [", 200, false, 0},
		{"JSON without content", "application/json", `{}`, 400, false, 0},
		{"empty", "application/yaml", "", 400, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest("POST", "/api/v1/lint", strings.NewReader(tc.body))
			req.Header.Set("Content-Type", tc.ctype)
			rec := httptest.NewRecorder()
			srv.ServeHTTP(rec, req)
			if rec.Code != tc.status {
				t.Fatalf("%d %s, want %d", rec.Code, rec.Body, tc.status)
			}
			if tc.status != 200 {
				return
			}
			var res LintResult
			if err := json.Unmarshal(rec.Body.Bytes(), &res); err != nil {
				t.Fatal(err)
			}
			if res.Valid != tc.valid || (tc.valid && (res.Stages != tc.stages || len(res.Problems) != 0)) || (!tc.valid && len(res.Problems) == 0) {
				t.Fatalf("answered %s", rec.Body)
			}
		})
	}
}
