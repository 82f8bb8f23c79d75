package api

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kontinuous/kontinuous/auth"
	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/etcdstore"
	githubscm "github.com/kontinuous/kontinuous/pipeline/forge/github"
	"github.com/kontinuous/kontinuous/pipeline/logstore"
	"github.com/kontinuous/kontinuous/pipeline/pipelinetest"
	"github.com/kontinuous/kontinuous/pipeline/pipelinetest/fakegithub"
	"github.com/kontinuous/kontinuous/pipeline/secretbox"
)

// The access matrix of every build route, on the real parts below the
// HTTP layer (the Service, the engine, a real embedded etcd, the file
// log store, the GitHub adapter talking to the stand-in GitHub): a user
// without access gets 404 on every route, one with read access gets 403
// on every write, and neither changes anything stored. An admin gets
// through on every route, so a 404 here is the access check speaking,
// not a route that does not exist.

// callerOf resolves the authenticated identity to a pipeline.Caller, as
// the server's wiring does.
type callerOf struct{ users auth.UserReader }

func (c callerOf) Caller(ctx context.Context) (pipeline.Caller, error) {
	id, err := auth.FromContext(ctx)
	if err != nil {
		return pipeline.Caller{}, err
	}
	tok, err := auth.GitHubToken(ctx, id, c.users)
	if err != nil {
		return pipeline.Caller{}, err
	}
	return pipeline.Caller{UserID: id.UserID, Login: id.Login, Token: tok}, nil
}

// idleExec is an executor that is never asked to run anything here (the
// engine is not started): the matrix is about the routes' checks.
type idleExec struct{}

func (idleExec) Name() string    { return "local" }
func (idleExec) Resumable() bool { return false }
func (idleExec) RunStage(context.Context, pipeline.StageJob, io.Writer, func(pipeline.StageOutcome)) error {
	return nil
}
func (idleExec) CleanupBuild(context.Context, string, string, int) error { return nil }

type accessWorld struct {
	url    string
	store  pipeline.Store
	logs   *logstore.Files
	tokens map[string]string // login → Bearer token
	repo   *fakegithub.Repo  // acme/app on the stand-in GitHub
	fake   *fakegithub.Server
	svc    *pipeline.Service
}

var accessSecret = []byte("0123456789abcdef0123456789abcdef")

func newAccessWorld(t *testing.T) *accessWorld {
	t.Helper()
	box, err := secretbox.New(accessSecret)
	if err != nil {
		t.Fatal(err)
	}
	store := etcdstore.NewCached(etcdstore.New(pipelinetest.StartEtcd(t), box, etcdstore.Options{OpTimeout: time.Minute}), etcdstore.CacheOptions{})
	if err := store.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(store.Close)
	return newAccessWorldOn(t, store, store)
}

// newAccessWorldOn is newAccessWorld on store; revocations may be nil
// (logouts are then not checked, which no test here relies on).
func newAccessWorldOn(t *testing.T, store pipeline.Store, revocations auth.RevocationStore) *accessWorld {
	t.Helper()
	gh := fakegithub.New(t)
	users := []struct {
		login, perm string
		id          int64
	}{{"alice", "admin", 1001}, {"bob", "", 1002}, {"dave", "read", 1004}}
	repo := gh.AddRepo("acme", "app")
	for _, u := range users {
		gh.AddUser(u.login, u.id, "tok-"+u.login)
		if u.perm != "" {
			gh.Grant(u.login, "acme", "app", u.perm)
		}
	}
	scm, err := githubscm.New(githubscm.Config{APIURL: gh.APIURL})
	if err != nil {
		t.Fatal(err)
	}
	logs, err := logstore.New(filepath.Join(t.TempDir(), "logs"), logstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.DiscardHandler)
	engine := pipeline.NewEngine(pipeline.EngineConfig{Store: store, SCM: scm, Logs: logs, Executor: idleExec{},
		PublicURL: "http://kontinuous.test", Logger: quiet})
	svc := pipeline.NewService(pipeline.ServiceConfig{Store: store, SCM: scm, Logs: logs, PublicURL: "http://kontinuous.test", Logger: quiet, Engine: engine})
	v, err := auth.NewVerifier(t.Context(), auth.VerifierConfig{Secret: accessSecret, Revocations: revocations})
	if err != nil {
		t.Fatal(err)
	}
	issuer, err := auth.NewIssuer(auth.IssuerConfig{Secret: accessSecret})
	if err != nil {
		t.Fatal(err)
	}
	w := &accessWorld{store: store, logs: logs, tokens: map[string]string{}, repo: repo, fake: gh, svc: svc}
	ctx := t.Context()
	for _, u := range users {
		pu := pipeline.User{ID: fmt.Sprintf("github|%d", u.id), Login: u.login, Token: pipeline.ForgeToken{AccessToken: "tok-" + u.login}}
		if err := store.PutUser(ctx, pu); err != nil {
			t.Fatal(err)
		}
		if w.tokens[u.login], _, err = issuer.Issue(pu); err != nil {
			t.Fatal(err)
		}
	}
	cl := callerOf{users: store}
	srv, err := New(Config{Authenticator: v, Logger: quiet, Resources: []Resource{
		NewPipelineResources(svc, cl), NewBuildResources(svc, cl, v),
	}})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	w.url = ts.URL

	if _, err := store.CreatePipeline(ctx, pipeline.Pipeline{Owner: "acme", Repo: "app", Events: []string{"push"}, Login: "alice",
		OwnerUserID: "github|1001", RepoID: repo.ID, CloneURL: repo.CloneURL, DefaultBranch: "main", WebhookSecret: "hook-secret-0123456789abcdef"}); err != nil {
		t.Fatal(err)
	}
	sha := repo.Commit("main", map[string]string{"README.md": "x"}, "c")
	cmd := func(name string, i int, st pipeline.Status) pipeline.Stage {
		return pipeline.Stage{ID: fmt.Sprintf("s-%d", i), Name: name, Type: "command", Index: i, Status: st,
			Params: map[string]any{"command": []any{"true"}}}
	}
	now := pipeline.Now()
	// #1 a finished build with a log; #2 a running build no runner drives;
	// #3 a build waiting for approval.
	seed := []func(*pipeline.Build){
		func(b *pipeline.Build) {
			b.Status, b.Started, b.Finished = pipeline.StatusSuccess, now, now
			b.Stages = []pipeline.Stage{cmd("one", 1, pipeline.StatusSuccess), cmd("two", 2, pipeline.StatusSuccess)}
		},
		func(b *pipeline.Build) {
			b.Status, b.Started = pipeline.StatusRunning, now
			b.Stages = []pipeline.Stage{cmd("one", 1, pipeline.StatusRunning)}
		},
		func(b *pipeline.Build) {
			b.Status, b.Started = pipeline.StatusWaiting, now
			b.Stages = []pipeline.Stage{cmd("one", 1, pipeline.StatusSuccess),
				{ID: "s-2", Name: "approve", Type: "wait", Index: 2, Status: pipeline.StatusWaiting}, cmd("three", 3, pipeline.StatusPending)}
			b.CurrentStage = 1
		},
	}
	for _, mod := range seed {
		b, err := store.CreateBuild(ctx, "acme", "app", pipeline.Build{Event: "push", Branch: "main", Commit: sha, Author: "alice",
			Status: pipeline.StatusPending, Created: now, CloneURL: repo.CloneURL, Stages: []pipeline.Stage{}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := store.UpdateBuild(ctx, "acme", "app", b.Number, func(b *pipeline.Build) error { mod(b); return nil }); err != nil {
			t.Fatal(err)
		}
	}
	lw, err := logs.Create(ctx, pipeline.LogRef{Pipeline: "acme/app", Build: 1, Stage: 1})
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(lw, "hello from stage one")
	if err := lw.Close(); err != nil {
		t.Fatal(err)
	}
	return w
}

// snapshot is everything stored about acme/app's builds: each build as
// etcd has it, and each stage's log.
func (w *accessWorld) snapshot(t *testing.T) string {
	t.Helper()
	builds, err := w.store.ListBuilds(t.Context(), "acme", "app", 200, 0)
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	for _, s := range builds {
		b, err := w.store.GetBuild(t.Context(), "acme", "app", s.Number)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := json.Marshal(b)
		fmt.Fprintf(&out, "%s\n", raw)
		for _, st := range b.Stages {
			data, err := w.logs.Read(t.Context(), pipeline.LogRef{Pipeline: "acme/app", Build: b.Number, Stage: st.Index})
			fmt.Fprintf(&out, "log %d/%d: %q %v\n", b.Number, st.Index, data, err)
		}
	}
	return out.String()
}

type accessReply struct {
	status int
	body   string
}

func (w *accessWorld) do(t *testing.T, method, path, login string, accept string) accessReply {
	t.Helper()
	return w.doBody(t, method, path, login, accept, "")
}

// doBody is do with a JSON body ("" for none).
func (w *accessWorld) doBody(t *testing.T, method, path, login, accept, body string) accessReply {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, w.url+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if login != "" {
		req.Header.Set("Authorization", "Bearer "+w.tokens[login])
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return accessReply{resp.StatusCode, string(b)}
}

// buildRoute is one build route with what to call it on.
type buildRoute struct {
	name   string
	method string
	path   string
	accept string
	write  bool
	// ok is the admin's answer when the route goes through.
	ok int
}

// logBase64 is build 1's stage log as the JSON form of the logs route
// carries it.
var logBase64 = base64.StdEncoding.EncodeToString([]byte("hello from stage one\n"))

const buildsPath = "/api/v1/pipelines/acme/app/builds"

// buildRoutes lists every build route. The writes are in an order in
// which each goes through for an admin: restart and run-from need the
// finished build 1, cancel the running build 2 (which then can be
// deleted), approve the waiting build 3.
var buildRoutes = []buildRoute{
	{"list", "GET", buildsPath, "", false, 200},
	{"get", "GET", buildsPath + "/1", "", false, 200},
	{"stages", "GET", buildsPath + "/1/stages", "", false, 200},
	{"one stage", "GET", buildsPath + "/1/stages/1", "", false, 200},
	{"log", "GET", buildsPath + "/1/stages/1/logs", "text/plain", false, 200},
	{"log as JSON", "GET", buildsPath + "/1/stages/1/logs", "", false, 200},
	{"log followed", "GET", buildsPath + "/1/stages/1/logs?follow=true", "text/event-stream", false, 200},
	{"restart", "POST", buildsPath + "/1/restart", "", true, 201},
	{"run from", "POST", buildsPath + "/1/stages/1/run", "", true, 200},
	{"cancel", "POST", buildsPath + "/2/cancel", "", true, 200},
	{"delete", "DELETE", buildsPath + "/2", "", true, 204},
	{"approve", "POST", buildsPath + "/3/stages/2?continue=yes", "", true, 200},
}

func TestBuildRoutesAccessMatrix(t *testing.T) {
	buildRoutesAccessMatrix(t, newAccessWorld(t))
}

func buildRoutesAccessMatrix(t *testing.T, w *accessWorld) {
	before := w.snapshot(t)
	unchanged := func(t *testing.T, what string) {
		t.Helper()
		if after := w.snapshot(t); after != before {
			t.Fatalf("%s changed what is stored:\nbefore:\n%s\nafter:\n%s", what, before, after)
		}
	}
	for _, r := range buildRoutes {
		t.Run(r.name, func(t *testing.T) {
			// No token: 401.
			if got := w.do(t, r.method, r.path, "", r.accept); got.status != http.StatusUnauthorized {
				t.Errorf("%s %s without a token: %d %s", r.method, r.path, got.status, got.body)
			}
			unchanged(t, "an anonymous "+r.name)
			// No access: 404, as if the pipeline did not exist, and never
			// a word of it.
			got := w.do(t, r.method, r.path, "bob", r.accept)
			if got.status != http.StatusNotFound {
				t.Errorf("%s %s by a user without access: %d %s", r.method, r.path, got.status, got.body)
			}
			if strings.Contains(got.body, "hello from stage one") || strings.Contains(got.body, logBase64) || strings.Contains(got.body, `"number"`) {
				t.Errorf("%s by a user without access reveals the build: %s", r.name, got.body)
			}
			unchanged(t, "a stranger's "+r.name)
			// Read access: reads go through, writes are 403.
			got = w.do(t, r.method, r.path, "dave", r.accept)
			want := r.ok
			if r.write {
				want = http.StatusForbidden
			}
			if got.status != want {
				t.Errorf("%s %s with read access: %d %s, want %d", r.method, r.path, got.status, got.body, want)
			}
			if !r.write && strings.HasPrefix(r.path, buildsPath+"/1/stages/1/logs") && !strings.Contains(got.body, "hello from stage one") && !strings.Contains(got.body, logBase64) {
				t.Errorf("%s with read access lacks the log: %s", r.name, got.body)
			}
			unchanged(t, "a reader's "+r.name)
		})
	}
	// The admin gets through on every route: the answers above came from
	// the access checks, not from routes or builds that do not exist.
	for _, r := range buildRoutes {
		if got := w.do(t, r.method, r.path, "alice", r.accept); got.status != r.ok {
			t.Errorf("%s %s by an admin: %d %s, want %d", r.method, r.path, got.status, got.body, r.ok)
		}
	}
	if w.snapshot(t) == before {
		t.Error("the admin's writes changed nothing: the matrix proves nothing")
	}
}

// TestAgentStatusUpdatesRefused: no executor posts stage status updates,
// so the route takes approvals only: an update is refused (401, the
// contract's error shape) whoever sends it, and nothing is stored.
func TestAgentStatusUpdatesRefused(t *testing.T) {
	agentStatusUpdatesRefused(t, newAccessWorld(t))
}

func agentStatusUpdatesRefused(t *testing.T, w *accessWorld) {
	before := w.snapshot(t)
	for _, login := range []string{"", "alice"} {
		got := w.do(t, "POST", buildsPath+"/2/stages/1", login, "")
		if got.status != http.StatusUnauthorized || !strings.Contains(got.body, `"Code"`) || !strings.Contains(got.body, "continue=yes") {
			t.Errorf("status update as %q: %d %s", login, got.status, got.body)
		}
	}
	if w.snapshot(t) != before {
		t.Error("a refused status update changed what is stored")
	}
}

// pipelineSnapshot is everything stored about acme/app outside its
// builds: the pipeline, its secret sets (names and keys; values are
// encrypted) and the repository's default branch head on the stand-in
// GitHub, with its pull requests (a definition update commits there).
func (w *accessWorld) pipelineSnapshot(t *testing.T, gh func() string) string {
	t.Helper()
	var out strings.Builder
	p, err := w.store.GetPipeline(t.Context(), "acme", "app")
	raw, _ := json.Marshal(p)
	fmt.Fprintf(&out, "pipeline %s %v\n", raw, err)
	sets, err := w.store.ListSecrets(t.Context(), "acme", "app")
	for _, s := range sets {
		raw, _ := json.Marshal(s)
		fmt.Fprintf(&out, "secret %s\n", raw)
	}
	fmt.Fprintf(&out, "secrets err %v\nmain %s\n%s", err, w.repo.Head("main"), gh())
	return out.String()
}

// TestPipelineRoutesAccessMatrix is TestBuildRoutesAccessMatrix for the
// pipeline's own routes (show, definition, secrets, delete): no token
// 401, no access 404 revealing nothing, read access 403 on everything that
// needs admin, nothing stored or committed by any of them; the admin gets
// through on every route.
func TestPipelineRoutesAccessMatrix(t *testing.T) {
	pipelineRoutesAccessMatrix(t, newAccessWorld(t))
}

func pipelineRoutesAccessMatrix(t *testing.T, w *accessWorld) {
	w.repo.Commit("main", map[string]string{".pipeline.yml": "stages:\n- name: one\n  type: command\n  command: [\"true\"]\n"}, "definition")
	if err := w.store.PutSecret(t.Context(), "acme", "app", pipeline.SecretSet{Name: "deploy", Data: map[string]string{"TOKEN": "s3cr3t-value"}}); err != nil {
		t.Fatal(err)
	}
	def := w.do(t, "GET", "/api/v1/pipelines/acme/app/definition", "alice", "")
	var d pipeline.Definition
	if def.status != http.StatusOK || json.Unmarshal([]byte(def.body), &d) != nil || d.SHA == "" {
		t.Fatalf("the admin's definition: %d %s", def.status, def.body)
	}
	update := fmt.Sprintf(`{"definition": {"content": %q, "sha": %q}, "commit": {"message": "m", "option": "commit"}}`,
		base64.StdEncoding.EncodeToString([]byte("stages:\n- name: two\n  type: command\n  command: [\"true\"]\n")), d.SHA)
	const pp = "/api/v1/pipelines/acme/app"
	routes := []struct {
		name, method, path, body string
		need                     pipeline.Permission
		ok                       int
	}{
		{"show", "GET", pp, "", pipeline.PermRead, 200},
		{"definition", "GET", pp + "/definition", "", pipeline.PermRead, 200},
		{"definition at a ref", "GET", pp + "/definition/main", "", pipeline.PermRead, 200},
		{"secrets", "GET", pp + "/secrets", "", pipeline.PermAdmin, 200},
		{"one secret", "GET", pp + "/secrets/deploy", "", pipeline.PermAdmin, 200},
		{"put a secret", "PUT", pp + "/secrets/other", `{"data": {"K": "v"}}`, pipeline.PermAdmin, 200},
		{"delete a secret", "DELETE", pp + "/secrets/deploy", "", pipeline.PermAdmin, 204},
		{"update the definition", "POST", pp + "/definition", update, pipeline.PermAdmin, 200},
		{"delete", "DELETE", pp, "", pipeline.PermAdmin, 204},
	}
	prs := func() string { return fmt.Sprint(len(w.fake.PullRequests("acme", "app"))) }
	before := w.pipelineSnapshot(t, prs)
	unchanged := func(t *testing.T, what string) {
		t.Helper()
		if after := w.pipelineSnapshot(t, prs); after != before {
			t.Fatalf("%s changed what is stored:\nbefore:\n%s\nafter:\n%s", what, before, after)
		}
	}
	for _, r := range routes {
		t.Run(r.name, func(t *testing.T) {
			if got := w.doBody(t, r.method, r.path, "", "", r.body); got.status != http.StatusUnauthorized {
				t.Errorf("%s %s without a token: %d %s", r.method, r.path, got.status, got.body)
			}
			unchanged(t, "an anonymous "+r.name)
			got := w.doBody(t, r.method, r.path, "bob", "", r.body)
			if got.status != http.StatusNotFound {
				t.Errorf("%s %s by a user without access: %d %s", r.method, r.path, got.status, got.body)
			}
			for _, secret := range []string{"hook-secret", "TOKEN", "deploy", `"owner"`, "content"} {
				if strings.Contains(got.body, secret) {
					t.Errorf("%s by a user without access reveals %q: %s", r.name, secret, got.body)
				}
			}
			unchanged(t, "a stranger's "+r.name)
			got = w.doBody(t, r.method, r.path, "dave", "", r.body)
			want := r.ok
			if r.need > pipeline.PermRead {
				want = http.StatusForbidden
			}
			if got.status != want {
				t.Errorf("%s %s with read access: %d %s, want %d", r.method, r.path, got.status, got.body, want)
			}
			if strings.Contains(got.body, "s3cr3t-value") || strings.Contains(got.body, "hook-secret") {
				t.Errorf("%s with read access shows a secret value: %s", r.name, got.body)
			}
			unchanged(t, "a reader's "+r.name)
		})
	}
	for _, r := range routes {
		if got := w.doBody(t, r.method, r.path, "alice", "", r.body); got.status != r.ok {
			t.Errorf("%s %s by an admin: %d %s, want %d", r.method, r.path, got.status, got.body, r.ok)
		}
	}
	if w.pipelineSnapshot(t, prs) == before {
		t.Error("the admin's writes changed nothing: the matrix proves nothing")
	}
}

// TestEveryPipelineRouteDeclaresItsPermission: each route under
// /api/v1/pipelines/{owner}/{repo} declares the permission it needs (the
// filter checks it before the handler runs), except the two public
// routes whose handlers authorize what they take from users themselves
// (manual triggers and approvals) and leave webhook deliveries and agent
// updates unauthenticated.
func TestEveryPipelineRouteDeclaresItsPermission(t *testing.T) {
	svc := specService(t)
	selfChecked := map[string]bool{
		"POST /api/v1/pipelines/{owner}/{repo}/builds":                                   true,
		"POST /api/v1/pipelines/{owner}/{repo}/builds/{buildNumber}/stages/{stageIndex}": true,
	}
	n := 0
	for _, res := range []Resource{NewPipelineResources(svc, nil), NewBuildResources(svc, nil, nil)} {
		for _, ws := range res.WebServices() {
			for _, r := range ws.Routes() {
				if !strings.HasPrefix(r.Path, "/api/v1/pipelines/{owner}/{repo}") {
					continue
				}
				n++
				key := r.Method + " " + strings.TrimSuffix(r.Path, "/")
				_, declared := r.Metadata[metaNeed].(pipeline.Permission)
				switch {
				case selfChecked[key] && (declared || !isPublic(r.Metadata)):
					t.Errorf("%s: a public route whose handler authorizes users itself, yet it declares %v / public %v", key, declared, isPublic(r.Metadata))
				case !selfChecked[key] && !declared:
					t.Errorf("%s declares no permission (use needs)", key)
				}
			}
		}
	}
	if n < 20 {
		t.Errorf("only %d pipeline routes found", n)
	}
}
