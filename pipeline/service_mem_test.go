package pipeline_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kontinuous/kontinuous/pipeline"
	githubscm "github.com/kontinuous/kontinuous/pipeline/forge/github"
	"github.com/kontinuous/kontinuous/pipeline/logstore"
	"github.com/kontinuous/kontinuous/pipeline/memstore"
	"github.com/kontinuous/kontinuous/pipeline/pipelinetest/fakegithub"
)

// These tests drive the Service's use cases on the in-memory store (no
// etcd), the stand-in GitHub and the file log store: who may do what
// (the 401/403/404 sentinels), what each use case validates, and what it
// leaves stored and installed on the forge.

// memWorld is a Service (and its engine) on the in-memory store. GitHub
// knows acme/app and four users: alice (admin), carol (push), dave (read)
// and bob (no access). eve is a caller without a forge token.
type memWorld struct {
	t      *testing.T
	gh     *fakegithub.Server
	repo   *fakegithub.Repo
	store  *memstore.Store
	logs   *logstore.Files
	scm    *githubscm.SCM
	engine *pipeline.Engine
	svc    *pipeline.Service
	// skew moves the GitHub adapter's clock (its permission cache) ahead.
	skew atomic.Int64
}

// advance moves the GitHub adapter's clock d ahead: its cached
// permission look-ups expire.
func (w *memWorld) advance(d time.Duration) { w.skew.Add(int64(d)) }

// memCallers are the callers of a memWorld by login.
var memCallers = map[string]pipeline.Caller{
	"alice": {UserID: "github|1001", Login: "alice", Token: pipeline.ForgeToken{AccessToken: "tok-alice"}},
	"bob":   {UserID: "github|1002", Login: "bob", Token: pipeline.ForgeToken{AccessToken: "tok-bob"}},
	"carol": {UserID: "github|1003", Login: "carol", Token: pipeline.ForgeToken{AccessToken: "tok-carol"}},
	"dave":  {UserID: "github|1004", Login: "dave", Token: pipeline.ForgeToken{AccessToken: "tok-dave"}},
	"eve":   {UserID: "github|1005", Login: "eve"},
}

// noExec is an executor for worlds whose engine is never started: nothing
// may ask it to run a stage.
type noExec struct{ t *testing.T }

func (noExec) Name() string    { return "local" }
func (noExec) Resumable() bool { return false }
func (x noExec) RunStage(context.Context, pipeline.StageJob, io.Writer, func(pipeline.StageOutcome)) error {
	x.t.Error("a stage was run by an engine that was never started")
	return errors.New("not started")
}
func (noExec) CleanupBuild(context.Context, string, string, int) error { return nil }

// newMemWorld builds a world whose engine runs stages on x; nil x is an
// engine that is not started (builds stay as the Service leaves them).
// A started engine is stopped, and checked to stop, when the test ends.
func newMemWorld(t *testing.T, x pipeline.Executor, mod ...func(*pipeline.EngineConfig)) *memWorld {
	t.Helper()
	// Registered first, so it runs last: after the engine stopped.
	t.Cleanup(func() { noEngineGoroutines(t) })
	w := &memWorld{t: t, store: memstore.New()}
	w.gh = fakegithub.New(t)
	w.repo = w.gh.AddRepo("acme", "app")
	for login, perm := range map[string]string{"alice": "admin", "bob": "", "carol": "push", "dave": "read"} {
		c := memCallers[login]
		var id int64
		if _, err := fmt.Sscanf(c.UserID, "github|%d", &id); err != nil {
			t.Fatal(err)
		}
		w.gh.AddUser(login, id, c.Token.AccessToken)
		if perm != "" {
			w.gh.Grant(login, "acme", "app", perm)
		}
	}
	scm, err := githubscm.New(githubscm.Config{APIURL: w.gh.APIURL,
		Now: func() time.Time { return time.Now().Add(time.Duration(w.skew.Load())) }})
	if err != nil {
		t.Fatal(err)
	}
	w.scm = scm
	if w.logs, err = logstore.New(filepath.Join(t.TempDir(), "logs"), logstore.Options{}); err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.DiscardHandler)
	start := x != nil
	if x == nil {
		x = noExec{t}
	}
	cfg := pipeline.EngineConfig{Store: w.store, SCM: scm, Logs: w.logs, Executor: x,
		PublicURL: "http://kontinuous.test", Logger: quiet, StaleAfter: 3 * time.Second}
	for _, m := range mod {
		m(&cfg)
	}
	w.engine = pipeline.NewEngine(cfg)
	if start {
		w.engine.Start(context.Background())
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), patience)
			defer cancel()
			if err := w.engine.Stop(ctx); err != nil {
				t.Errorf("engine stop: %v", err)
			}
		})
	}
	w.svc = pipeline.NewService(pipeline.ServiceConfig{Store: w.store, SCM: scm, Logs: w.logs,
		PublicURL: "http://kontinuous.test/", Logger: quiet, Engine: w.engine})
	return w
}

// create has alice create acme/app through the Service.
func (w *memWorld) create() pipeline.Pipeline {
	w.t.Helper()
	p, err := w.svc.CreatePipeline(w.t.Context(), memCallers["alice"], pipeline.NewPipeline{Owner: "acme", Repo: "app", Events: []string{"push"}})
	if err != nil {
		w.t.Fatal(err)
	}
	return p
}

// waitFor waits (patience at most) until build n of acme/app satisfies
// cond, and returns it.
func (w *memWorld) waitFor(n int, what string, cond func(pipeline.Build) bool) pipeline.Build {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(w.t.Context(), patience)
	defer cancel()
	var last pipeline.Build
	err := w.store.WatchBuild(ctx, "acme", "app", n, func(b pipeline.Build) bool {
		last = b
		return !cond(b)
	})
	if err != nil || !cond(last) {
		w.t.Fatalf("build %d never became %s (%v); last: %s %q stages %s", n, what, err, last.Status, last.Message, stageStates(last))
	}
	return last
}

// stageStates shows a build's stages as "name:STATUS:message" items.
func stageStates(b pipeline.Build) string {
	var out []string
	for _, st := range b.Stages {
		out = append(out, st.Name+":"+string(st.Status)+":"+st.Message)
	}
	return strings.Join(out, " | ")
}

// wantErr checks err against want: nil wants no error, otherwise err
// must wrap want.
func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	switch {
	case want == nil && err != nil:
		t.Fatalf("%s: unexpected error %v", what, err)
	case want != nil && !errors.Is(err, want):
		t.Fatalf("%s: error %v, want one wrapping %v", what, err, want)
	}
}

// invalidField is the field an ErrInvalid names ("" when err is none).
func invalidField(err error) string {
	var ie *pipeline.InvalidError
	if errors.As(err, &ie) {
		return ie.Field
	}
	return ""
}

func TestCreatePipelineNeedsAdminAndValidInputAndInstallsHookAndKey(t *testing.T) {
	w := newMemWorld(t, nil)
	w.gh.AddRepo("acme", "lib") // alice owns no grant there: not found for her
	nothingStored := func(t *testing.T) {
		t.Helper()
		if ps, err := w.store.ListPipelines(t.Context()); err != nil || len(ps) != 0 {
			t.Fatalf("pipelines stored: %+v %v", ps, err)
		}
		if h, k := w.gh.Hooks("acme", "app"), w.gh.DeployKeys("acme", "app"); len(h) != 0 || len(k) != 0 {
			t.Fatalf("installed on GitHub: hooks %+v keys %+v", h, k)
		}
	}
	push := []string{"push"}
	cases := []struct {
		name   string
		caller string
		req    pipeline.NewPipeline
		want   error
		field  string // of an ErrInvalid
	}{
		{"no forge token", "eve", pipeline.NewPipeline{Owner: "acme", Repo: "app", Events: push}, pipeline.ErrUnauthorized, ""},
		{"no access", "bob", pipeline.NewPipeline{Owner: "acme", Repo: "app", Events: push}, pipeline.ErrNotFound, ""},
		{"read access", "dave", pipeline.NewPipeline{Owner: "acme", Repo: "app", Events: push}, pipeline.ErrForbidden, ""},
		{"push access", "carol", pipeline.NewPipeline{Owner: "acme", Repo: "app", Events: push}, pipeline.ErrForbidden, ""},
		{"repository not on the forge", "alice", pipeline.NewPipeline{Owner: "acme", Repo: "nope", Events: push}, pipeline.ErrNotFound, ""},
		{"repository of another's", "alice", pipeline.NewPipeline{Owner: "acme", Repo: "lib", Events: push}, pipeline.ErrNotFound, ""},
		{"bad owner", "alice", pipeline.NewPipeline{Owner: "-acme", Repo: "app", Events: push}, pipeline.ErrInvalid, "owner"},
		{"bad repo", "alice", pipeline.NewPipeline{Owner: "acme", Repo: "..", Events: push}, pipeline.ErrInvalid, "repo"},
		{"no events", "alice", pipeline.NewPipeline{Owner: "acme", Repo: "app"}, pipeline.ErrInvalid, "events"},
		{"events without push", "alice", pipeline.NewPipeline{Owner: "acme", Repo: "app", Events: []string{"pull_request"}}, pipeline.ErrInvalid, "events"},
		{"unknown event", "alice", pipeline.NewPipeline{Owner: "acme", Repo: "app", Events: []string{"push", "issues"}}, pipeline.ErrInvalid, "events"},
		{"forge not enabled", "alice", pipeline.NewPipeline{Owner: "acme", Repo: "app", Events: push, Forge: "gitlab"}, pipeline.ErrInvalid, "forge"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := w.svc.CreatePipeline(t.Context(), memCallers[tc.caller], tc.req)
			wantErr(t, "create", err, tc.want)
			if got := invalidField(err); got != tc.field {
				t.Fatalf("invalid field %q, want %q (%v)", got, tc.field, err)
			}
			nothingStored(t)
		})
	}

	t.Run("deploy key refused: the webhook is removed again", func(t *testing.T) {
		w.gh.FailNext("POST", "/repos/acme/app/keys", 500, "")
		_, err := w.svc.CreatePipeline(t.Context(), memCallers["alice"], pipeline.NewPipeline{Owner: "acme", Repo: "app", Events: push})
		wantErr(t, "create", err, pipeline.ErrUpstream)
		nothingStored(t)
	})

	t.Run("refused by the server's configuration before any forge call", func(t *testing.T) {
		svc := pipeline.NewService(pipeline.ServiceConfig{Store: w.store, SCM: nil, CreateRefusal: "this server's URL is not reachable from GitHub"})
		_, err := svc.CreatePipeline(t.Context(), memCallers["alice"], pipeline.NewPipeline{Owner: "acme", Repo: "app", Events: push})
		wantErr(t, "create", err, pipeline.ErrConflict)
		if pipeline.PublicMessage(err) != "this server's URL is not reachable from GitHub" {
			t.Fatalf("message %q", pipeline.PublicMessage(err))
		}
		nothingStored(t)
	})

	p, err := w.svc.CreatePipeline(t.Context(), memCallers["alice"], pipeline.NewPipeline{Owner: "acme", Repo: "app",
		Events: []string{" push", "pull_request", "push"}, Login: "deploy-bot"})
	if err != nil {
		t.Fatal(err)
	}
	stored, err := w.store.GetPipeline(t.Context(), "acme", "app")
	if err != nil {
		t.Fatal(err)
	}
	if p.ID == "" || stored.ID != p.ID {
		t.Fatalf("returned id %q, stored %q", p.ID, stored.ID)
	}
	got := fmt.Sprintf("%v %s %s %s %d %s %s", stored.Events, stored.Login, stored.OwnerUserID, stored.Forge, stored.RepoID, stored.CloneURL, stored.DefaultBranch)
	want := fmt.Sprintf("[pull_request push] deploy-bot github|1001 github %d %s main", w.repo.ID, w.repo.CloneURL)
	if got != want {
		t.Fatalf("stored pipeline:\n got %s\nwant %s", got, want)
	}
	hooks, keys := w.gh.Hooks("acme", "app"), w.gh.DeployKeys("acme", "app")
	if len(hooks) != 1 || len(keys) != 1 {
		t.Fatalf("hooks %+v keys %+v", hooks, keys)
	}
	h := hooks[0]
	if h.ID != stored.WebhookID || h.URL != "http://kontinuous.test/api/v1/pipelines/acme/app/builds" || h.Secret == "" || h.Secret != stored.WebhookSecret ||
		!slices.Equal(h.Events, []string{"pull_request", "push"}) || !h.Active {
		t.Fatalf("webhook %+v; stored id %d", h, stored.WebhookID)
	}
	k := keys[0]
	if k.ID != stored.DeployKeyID || !k.ReadOnly || !strings.HasPrefix(k.Key, "ssh-ed25519 ") || !strings.HasPrefix(stored.DeployKeyPublic, k.Key) ||
		!strings.Contains(stored.DeployKeyPrivate, "OPENSSH PRIVATE KEY") {
		t.Fatalf("deploy key %+v; stored %d %q", k, stored.DeployKeyID, stored.DeployKeyPublic)
	}
	// The creator's token is kept: builds clone and post statuses with it.
	if u, err := w.store.GetUser(t.Context(), "github|1001"); err != nil || u.Token.AccessToken != "tok-alice" || u.Login != "alice" {
		t.Fatalf("stored creator %+v %v", u, err)
	}
	// What the API shows of it carries no secret material.
	raw, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{stored.WebhookSecret, "PRIVATE KEY", "tok-alice"} {
		if strings.Contains(string(raw), secret) {
			t.Fatalf("the created pipeline's JSON shows %q: %s", secret, raw)
		}
	}

	_, err = w.svc.CreatePipeline(t.Context(), memCallers["alice"], pipeline.NewPipeline{Owner: "ACME", Repo: "App", Events: push})
	wantErr(t, "create again", err, pipeline.ErrConflict)
	if h, k := w.gh.Hooks("acme", "app"), w.gh.DeployKeys("acme", "app"); len(h) != 1 || len(k) != 1 {
		t.Fatalf("a refused second create installed more: hooks %+v keys %+v", h, k)
	}
}

func TestPipelineReadAccessAndDeleteFollowForgePermissions(t *testing.T) {
	w := newMemWorld(t, nil)
	p := w.create()
	// A build with a log: deleting the pipeline takes both.
	b, err := w.store.CreateBuild(t.Context(), "acme", "app", pipeline.Build{Event: "push", Branch: "main", Commit: w.repo.Head("main"),
		Status: pipeline.StatusSuccess, Stages: []pipeline.Stage{{Name: "one", Type: "command", Index: 1, Status: pipeline.StatusSuccess}}})
	if err != nil {
		t.Fatal(err)
	}
	ref := pipeline.LogRef{Pipeline: "acme/app", Build: b.Number, Stage: 1}
	lw, err := w.logs.Create(t.Context(), ref)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(lw, "stage output")
	if err := lw.Close(); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		caller string
		want   error
		access pipeline.Access
	}{
		{"alice", nil, pipeline.Access{Read: true, Push: true, Admin: true}},
		{"carol", nil, pipeline.Access{Read: true, Push: true}},
		{"dave", nil, pipeline.Access{Read: true}},
		{"bob", pipeline.ErrNotFound, pipeline.Access{}},
		{"eve", pipeline.ErrUnauthorized, pipeline.Access{}},
	}
	for _, tc := range cases {
		t.Run(tc.caller, func(t *testing.T) {
			c := memCallers[tc.caller]
			got, err := w.svc.GetPipeline(t.Context(), c, "acme", "app")
			wantErr(t, "get", err, tc.want)
			if tc.want == nil && (got.ID != p.ID || got.Owner != "acme" || got.Repo != "app" || got.LatestBuild == nil || got.LatestBuild.Number != b.Number) {
				t.Fatalf("get: %+v", got)
			}
			if tc.want != nil && got.ID != "" {
				t.Fatalf("a refused get returned %+v", got)
			}
			a, err := w.svc.AccessOf(t.Context(), c, "acme", "app")
			wantErr(t, "access", err, tc.want)
			if a != tc.access {
				t.Fatalf("access %+v, want %+v", a, tc.access)
			}
			list, err := w.svc.ListPipelines(t.Context(), c)
			if tc.want == pipeline.ErrUnauthorized {
				wantErr(t, "list", err, tc.want)
			} else {
				wantErr(t, "list", err, nil)
				visible := len(list) == 1 && list[0].ID == p.ID
				if visible != (tc.want == nil) || len(list) > 1 {
					t.Fatalf("list: %+v", list)
				}
			}
			// Names are validated before anything is looked up.
			_, err = w.svc.GetPipeline(t.Context(), c, "acme", "a/b")
			wantErr(t, "get a bad name", err, pipeline.ErrInvalid)
			// Deleting needs admin; only the check answers here.
			if tc.caller != "alice" {
				want := tc.want
				if want == nil {
					want = pipeline.ErrForbidden
				}
				wantErr(t, "delete", w.svc.DeletePipeline(t.Context(), c, "acme", "app"), want)
				if _, err := w.store.GetPipeline(t.Context(), "acme", "app"); err != nil {
					t.Fatalf("a refused delete removed the pipeline: %v", err)
				}
			}
		})
	}
	if _, err := w.svc.GetPipeline(t.Context(), memCallers["alice"], "acme", "other"); !errors.Is(err, pipeline.ErrNotFound) {
		t.Fatalf("a pipeline never created: %v", err)
	}

	if err := w.svc.DeletePipeline(t.Context(), memCallers["alice"], "acme", "app"); err != nil {
		t.Fatal(err)
	}
	if _, err := w.store.GetPipeline(t.Context(), "acme", "app"); !errors.Is(err, pipeline.ErrNotFound) {
		t.Fatalf("pipeline after delete: %v", err)
	}
	if _, err := w.store.GetBuild(t.Context(), "acme", "app", b.Number); !errors.Is(err, pipeline.ErrNotFound) {
		t.Fatalf("build after delete: %v", err)
	}
	if data, err := w.logs.Read(t.Context(), ref); !errors.Is(err, pipeline.ErrNotFound) {
		t.Fatalf("log after delete: %q %v", data, err)
	}
	if h, k := w.gh.Hooks("acme", "app"), w.gh.DeployKeys("acme", "app"); len(h) != 0 || len(k) != 0 {
		t.Fatalf("left on GitHub: hooks %+v keys %+v", h, k)
	}
	wantErr(t, "delete again", w.svc.DeletePipeline(t.Context(), memCallers["alice"], "acme", "app"), pipeline.ErrNotFound)
}

// An orphaned pipeline (its repository deleted and another created under
// the name) is shown to its creator as orphaned, with nothing stored with
// it, and deleting it leaves the new repository's hooks alone.
func TestOrphanedPipelineIsShownToItsCreatorOnlyAndDeletedWithoutTouchingTheNewRepository(t *testing.T) {
	w := newMemWorld(t, nil)
	w.create()
	w.gh.DeleteRepo("acme", "app")
	w.gh.AddRepo("acme", "app")
	w.gh.Grant("dave", "acme", "app", "read")
	w.gh.Grant("carol", "acme", "app", "push")
	w.gh.Grant("alice", "acme", "app", "admin")
	w.advance(time.Hour) // what the adapter cached of the old repository expires
	other, err := w.svc.CreatePipeline(t.Context(), memCallers["alice"], pipeline.NewPipeline{Owner: "acme", Repo: "app", Events: []string{"push"}})
	if !errors.Is(err, pipeline.ErrConflict) || !strings.Contains(pipeline.PublicMessage(err), "orphaned") {
		t.Fatalf("create over an orphan: %+v %v", other, err)
	}

	got, err := w.svc.GetPipeline(t.Context(), memCallers["alice"], "acme", "app")
	if err != nil || !got.Orphaned || got.Owner != "acme" || len(got.Events) != 0 || got.LatestBuild != nil {
		t.Fatalf("the creator's view: %+v %v", got, err)
	}
	for _, login := range []string{"carol", "dave", "bob"} {
		if got, err := w.svc.GetPipeline(t.Context(), memCallers[login], "acme", "app"); !errors.Is(err, pipeline.ErrNotFound) {
			t.Errorf("%s sees the orphan: %+v %v", login, got, err)
		}
	}
	if a, err := w.svc.AccessOf(t.Context(), memCallers["alice"], "acme", "app"); err != nil || a != (pipeline.Access{}) {
		t.Fatalf("the creator's access to the orphan: %+v %v", a, err)
	}
	list, err := w.svc.ListPipelines(t.Context(), memCallers["alice"])
	if err != nil || len(list) != 1 || !list[0].Orphaned {
		t.Fatalf("the creator's list: %+v %v", list, err)
	}
	wantErr(t, "carol deletes", w.svc.DeletePipeline(t.Context(), memCallers["carol"], "acme", "app"), pipeline.ErrNotFound)
	w.gh.ResetRequests()
	if err := w.svc.DeletePipeline(t.Context(), memCallers["alice"], "acme", "app"); err != nil {
		t.Fatal(err)
	}
	for _, r := range w.gh.Requests() {
		if r.Method != "GET" {
			t.Errorf("deleting the orphan sent %s %s to the repository now holding its name", r.Method, r.Path)
		}
	}
	if _, err := w.store.GetPipeline(t.Context(), "acme", "app"); !errors.Is(err, pipeline.ErrNotFound) {
		t.Fatalf("orphan after delete: %v", err)
	}
	// The name is free again.
	if _, err := w.svc.CreatePipeline(t.Context(), memCallers["alice"], pipeline.NewPipeline{Owner: "acme", Repo: "app", Events: []string{"push"}}); err != nil {
		t.Fatal(err)
	}
}

func TestSecretsNeedAdminAreValidatedAndNeverShowValues(t *testing.T) {
	w := newMemWorld(t, nil)
	w.create()
	ctx := t.Context()
	alice := memCallers["alice"]
	cases := []struct {
		name   string
		caller string
		set    string
		data   map[string]string
		want   error
		field  string
	}{
		{"no access", "bob", "deploy", map[string]string{"K": "v"}, pipeline.ErrNotFound, ""},
		{"read access", "dave", "deploy", map[string]string{"K": "v"}, pipeline.ErrForbidden, ""},
		{"push access", "carol", "deploy", map[string]string{"K": "v"}, pipeline.ErrForbidden, ""},
		{"no forge token", "eve", "deploy", map[string]string{"K": "v"}, pipeline.ErrUnauthorized, ""},
		{"upper-case name", "alice", "Deploy", map[string]string{"K": "v"}, pipeline.ErrInvalid, "name"},
		{"name with a slash", "alice", "a/b", map[string]string{"K": "v"}, pipeline.ErrInvalid, "name"},
		{"no data", "alice", "deploy", nil, pipeline.ErrInvalid, "data"},
		{"key not an env name", "alice", "deploy", map[string]string{"1K": "v"}, pipeline.ErrInvalid, "data"},
		{"key with a dash", "alice", "deploy", map[string]string{"A-B": "v"}, pipeline.ErrInvalid, "data"},
		{"too large", "alice", "deploy", map[string]string{"K": strings.Repeat("x", 257<<10)}, pipeline.ErrInvalid, "data"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			set, err := w.svc.PutSecret(ctx, memCallers[tc.caller], "acme", "app", tc.set, tc.data)
			wantErr(t, "put", err, tc.want)
			if f := invalidField(err); f != tc.field {
				t.Fatalf("invalid field %q, want %q", f, tc.field)
			}
			if set.Name != "" {
				t.Fatalf("a refused put returned %+v", set)
			}
			if sets, err := w.store.ListSecrets(ctx, "acme", "app"); err != nil || len(sets) != 0 {
				t.Fatalf("stored: %+v %v", sets, err)
			}
			if tc.field == "" {
				_, err := w.svc.ListSecrets(ctx, memCallers[tc.caller], "acme", "app")
				wantErr(t, "list", err, tc.want)
				_, err = w.svc.GetSecret(ctx, memCallers[tc.caller], "acme", "app", "deploy")
				wantErr(t, "get", err, tc.want)
				wantErr(t, "delete", w.svc.DeleteSecret(ctx, memCallers[tc.caller], "acme", "app", "deploy"), tc.want)
			}
		})
	}

	values := map[string]string{"TOKEN": "s3cr3t-token", "USER": "deployer-name"}
	put, err := w.svc.PutSecret(ctx, alice, "acme", "app", "deploy", values)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.svc.PutSecret(ctx, alice, "acme", "app", "slack", map[string]string{"slackurl": "https://hooks.example/s3cr3t-path"}); err != nil {
		t.Fatal(err)
	}
	listed, err := w.svc.ListSecrets(ctx, alice, "acme", "app")
	if err != nil {
		t.Fatal(err)
	}
	one, err := w.svc.GetSecret(ctx, alice, "acme", "app", "deploy")
	if err != nil {
		t.Fatal(err)
	}
	shown := fmt.Sprintf("%+v %+v %+v", put, listed, one)
	if want := "{Name:deploy Data:map[] Keys:[TOKEN USER]} [{Name:deploy Data:map[] Keys:[TOKEN USER]} {Name:slack Data:map[] Keys:[slackurl]}] {Name:deploy Data:map[] Keys:[TOKEN USER]}"; shown != want {
		t.Fatalf("shown:\n got %s\nwant %s", shown, want)
	}
	for _, v := range []string{"s3cr3t", "deployer-name"} {
		raw, _ := json.Marshal([]any{put, listed, one})
		if strings.Contains(shown, v) || strings.Contains(string(raw), v) {
			t.Fatalf("a value is shown: %s %s", shown, raw)
		}
	}
	// The store keeps the values (builds need them) and the pipeline
	// lists the set's name.
	if set, err := w.store.GetSecret(ctx, "acme", "app", "deploy"); err != nil || set.Data["TOKEN"] != "s3cr3t-token" {
		t.Fatalf("stored set %+v %v", set, err)
	}
	if p, err := w.svc.GetPipeline(ctx, memCallers["dave"], "acme", "app"); err != nil || !slices.Equal(p.Secrets, []string{"deploy", "slack"}) {
		t.Fatalf("pipeline secrets %v %v", p.Secrets, err)
	}
	if _, err := w.svc.GetSecret(ctx, alice, "acme", "app", "nope"); !errors.Is(err, pipeline.ErrNotFound) {
		t.Fatalf("get a missing set: %v", err)
	}
	if err := w.svc.DeleteSecret(ctx, alice, "acme", "app", "deploy"); err != nil {
		t.Fatal(err)
	}
	if _, err := w.svc.GetSecret(ctx, alice, "acme", "app", "deploy"); !errors.Is(err, pipeline.ErrNotFound) {
		t.Fatalf("get after delete: %v", err)
	}
	if listed, err := w.svc.ListSecrets(ctx, alice, "acme", "app"); err != nil || len(listed) != 1 || listed[0].Name != "slack" {
		t.Fatalf("list after delete: %+v %v", listed, err)
	}
	// A name no secret can have is a bad path parameter (400), on every
	// method, not a 404.
	if _, err := w.svc.GetSecret(ctx, alice, "acme", "app", "bad name"); invalidField(err) != "name" {
		t.Fatalf("get with a bad name: %v", err)
	}
	if err := w.svc.DeleteSecret(ctx, alice, "acme", "app", "Bad_Name"); invalidField(err) != "name" {
		t.Fatalf("delete with a bad name: %v", err)
	}
}

func TestManualTriggerValidatesItsInputAndPinsTheBranchHead(t *testing.T) {
	w := newMemWorld(t, nil) // not started: builds stay queued
	w.create()
	mainHead := w.repo.Head("main")
	featureHead := w.repo.Commit("feature/x", map[string]string{"f.txt": "x"}, "feature")
	cases := []struct {
		name   string
		caller string
		repo   string
		header string // X-Custom-Event
		body   pipeline.ManualTrigger
		want   error
		field  string
		// the queued build, for want == nil
		number                 int
		branch, commit, author string
	}{
		{name: "no forge token", caller: "eve", header: "dashboard", want: pipeline.ErrUnauthorized},
		{name: "no access", caller: "bob", header: "dashboard", want: pipeline.ErrNotFound},
		{name: "read access", caller: "dave", header: "dashboard", want: pipeline.ErrForbidden},
		{name: "no such pipeline", caller: "alice", repo: "nope", header: "dashboard", want: pipeline.ErrNotFound},
		{name: "event not a manual one", caller: "carol", header: "push", want: pipeline.ErrInvalid, field: "X-Custom-Event"},
		{name: "branch not a ref", caller: "carol", header: "cli", body: pipeline.ManualTrigger{Branch: "a..b"}, want: pipeline.ErrInvalid, field: "branch"},
		{name: "branch that does not exist", caller: "carol", header: "cli", body: pipeline.ManualTrigger{Branch: "gone"}, want: pipeline.ErrInvalid, field: "branch"},
		{name: "default branch by push access", caller: "carol", header: "dashboard",
			number: 1, branch: "main", commit: mainHead, author: "carol"},
		{name: "named branch and author", caller: "alice", header: "cli", body: pipeline.ManualTrigger{Branch: "feature/x", Author: "release-bot"},
			number: 2, branch: "feature/x", commit: featureHead, author: "release-bot"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			repo := tc.repo
			if repo == "" {
				repo = "app"
			}
			b, err := w.svc.TriggerBuild(t.Context(), memCallers[tc.caller], "acme", repo, tc.header, tc.body)
			wantErr(t, "trigger", err, tc.want)
			if f := invalidField(err); f != tc.field {
				t.Fatalf("invalid field %q, want %q (%v)", f, tc.field, err)
			}
			if tc.want != nil {
				if b.Number != 0 {
					t.Fatalf("a refused trigger returned build %d", b.Number)
				}
				return
			}
			got := fmt.Sprintf("%d %s %s %s %s %s", b.Number, b.Status, b.Event, b.Branch, b.Commit, b.Author)
			want := fmt.Sprintf("%d PENDING %s %s %s %s", tc.number, tc.header, tc.branch, tc.commit, tc.author)
			if got != want {
				t.Fatalf("build:\n got %s\nwant %s", got, want)
			}
			stored, err := w.store.GetBuild(t.Context(), "acme", "app", tc.number)
			if err != nil || stored.Commit != tc.commit || stored.CloneURL != w.repo.CloneURL {
				t.Fatalf("stored %+v %v", stored, err)
			}
		})
	}
	if bs, err := w.store.ListBuilds(t.Context(), "acme", "app", 0, 0); err != nil || len(bs) != 2 {
		t.Fatalf("builds stored: %d %v (refused triggers must store none)", len(bs), err)
	}
}

// leftoverMarks are functions of the engine, the in-memory store and the
// local executor: a goroutine whose stack names one still runs their
// work.
var leftoverMarks = []string{"kontinuous/pipeline.(*Engine)", "kontinuous/pipeline/memstore.", "kontinuous/pipeline/executor/local."}

// noEngineGoroutines waits (patience at most) until no goroutine runs the
// engine's, the in-memory store's or the local executor's code, and
// fails the test if one still does.
func noEngineGoroutines(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for {
		buf := make([]byte, 4<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var left []string
		for _, g := range strings.Split(string(buf), "\n\n") {
			for _, m := range leftoverMarks {
				if strings.Contains(g, m) {
					left = append(left, g)
					break
				}
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%d goroutines still run after the test:\n%s", len(left), strings.Join(left, "\n\n"))
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}
