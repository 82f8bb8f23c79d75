package pipeline_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/etcdstore"
	githubscm "github.com/kontinuous/kontinuous/pipeline/forge/github"
	"github.com/kontinuous/kontinuous/pipeline/logstore"
	"github.com/kontinuous/kontinuous/pipeline/notify"
	"github.com/kontinuous/kontinuous/pipeline/pipelinetest"
	"github.com/kontinuous/kontinuous/pipeline/pipelinetest/fakegithub"
	"github.com/kontinuous/kontinuous/pipeline/secretbox"
)

// These tests drive the engine on a real embedded etcd, the stand-in
// GitHub and the file log store; the executor is a recording one (the
// engine's port), so a test can hold a stage running, see what the engine
// handed it, and make it fail or panic.

const hookSecret = "hook-secret-0123456789abcdef"

// patience bounds every wait for a condition that must come true:
// generous, since CI runs with -race on a busy 2-core machine. A passing
// test never waits that long; only a broken one does.
const patience = 2 * time.Minute

const specHead = `apiVersion: v1alpha1
kind: Pipeline
metadata:
  name: app
spec:
  selector:
    matchLabels: {app: app}
  template:
    metadata:
      name: app
`

const oneStage = specHead + `    stages:
      - name: one
        type: command
        params: {command: ["true"]}
`

type fixture struct {
	t     *testing.T
	gh    *fakegithub.Server
	repo  *fakegithub.Repo
	etcd  *pipelinetest.EtcdServer
	store *etcdstore.Store
	scm   *githubscm.SCM
	logs  *logstore.Files
	p     pipeline.Pipeline
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{t: t}
	f.etcd = pipelinetest.StartEtcdServer(t, filepath.Join(t.TempDir(), "etcd"))
	box, err := secretbox.New([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	f.store = etcdstore.New(f.etcd.Client(), box, etcdstore.Options{})
	f.gh = fakegithub.New(t)
	f.gh.AddUser("alice", 1001, "tok-alice")
	f.repo = f.gh.AddRepo("acme", "app")
	f.gh.Grant("alice", "acme", "app", "admin")
	if f.scm, err = githubscm.New(githubscm.Config{APIURL: f.gh.APIURL}); err != nil {
		t.Fatal(err)
	}
	if f.logs, err = logstore.New(filepath.Join(t.TempDir(), "logs"), logstore.Options{}); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if err := f.store.PutUser(ctx, pipeline.User{ID: "github|1001", Login: "alice", Token: pipeline.ForgeToken{AccessToken: "tok-alice"}}); err != nil {
		t.Fatal(err)
	}
	f.p, err = f.store.CreatePipeline(ctx, pipeline.Pipeline{
		Owner: "acme", Repo: "app", Events: []string{"push", "pull_request"}, Login: "alice",
		OwnerUserID: "github|1001", RepoID: f.repo.ID, CloneURL: f.repo.CloneURL, DefaultBranch: "main",
		WebhookSecret: hookSecret,
	})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// engine returns an engine on the fixture's store; started ones are
// stopped when the test ends.
func (f *fixture) engine(x pipeline.Executor, start bool, mod ...func(*pipeline.EngineConfig)) *pipeline.Engine {
	f.t.Helper()
	cfg := pipeline.EngineConfig{Store: f.store, SCM: f.scm, Logs: f.logs, Executor: x,
		PublicURL: "http://kontinuous.test", StaleAfter: 3 * time.Second,
		// Statuses and Slack go out as in the server; the stand-ins are
		// plain HTTP on loopback.
		Notifier: notify.New(notify.Config{Client: notify.Client(true)})}
	for _, m := range mod {
		m(&cfg)
	}
	e := pipeline.NewEngine(cfg)
	if start {
		e.Start(context.Background())
		f.t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), patience)
			defer cancel()
			if err := e.Stop(ctx); err != nil {
				f.t.Errorf("engine stop: %v", err)
			}
		})
	}
	return e
}

// stop stops an engine before the test ends.
func stop(t *testing.T, e *pipeline.Engine) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	if err := e.Stop(ctx); err != nil {
		t.Fatal(err)
	}
}

// commit puts spec on main and returns the commit.
func (f *fixture) commit(spec string) string {
	return f.repo.Commit("main", map[string]string{".pipeline.yml": spec}, "spec")
}

func (f *fixture) trigger(e *pipeline.Engine, b pipeline.Build) pipeline.Build {
	f.t.Helper()
	if b.Event == "" {
		b.Event = pipeline.EventPush
	}
	if b.Branch == "" {
		b.Branch = "main"
	}
	nb, err := e.Trigger(f.t.Context(), f.p, b)
	if err != nil {
		f.t.Fatal(err)
	}
	return nb
}

func (f *fixture) build(n int) pipeline.Build {
	f.t.Helper()
	b, err := f.store.GetBuild(f.t.Context(), "acme", "app", n)
	if err != nil {
		f.t.Fatal(err)
	}
	return b
}

// waitBuild polls build n until cond holds (patience at most).
func (f *fixture) waitBuild(n int, what string, cond func(pipeline.Build) bool) pipeline.Build {
	f.t.Helper()
	deadline := time.Now().Add(patience)
	var b pipeline.Build
	for time.Now().Before(deadline) {
		var err error
		b, err = f.store.GetBuild(f.t.Context(), "acme", "app", n)
		if err == nil && cond(b) {
			return b
		}
		time.Sleep(20 * time.Millisecond)
	}
	f.t.Fatalf("build %d never became %s; last: %s %q stages %+v", n, what, b.Status, b.Message, b.Stages)
	return b
}

// storedBuild creates a build and sets it to the state mod gives it, as a
// runner (maybe a dead one) would have left it.
func (f *fixture) storedBuild(sha string, mod func(*pipeline.Build)) pipeline.Build {
	f.t.Helper()
	ctx := f.t.Context()
	b, err := f.store.CreateBuild(ctx, "acme", "app", pipeline.Build{Event: "push", Branch: "main", Commit: sha,
		Author: "alice", Status: pipeline.StatusPending, Created: pipeline.Now(), CloneURL: f.repo.CloneURL, Stages: []pipeline.Stage{}})
	if err != nil {
		f.t.Fatal(err)
	}
	b, err = f.store.UpdateBuild(ctx, "acme", "app", b.Number, func(b *pipeline.Build) error {
		mod(b)
		return nil
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return b
}

// logEnded reports whether stage's log is finished: Follow returns.
func (f *fixture) logEnded(n, stage int) bool {
	ctx, cancel := context.WithTimeout(f.t.Context(), patience)
	defer cancel()
	err := f.logs.Follow(ctx, pipeline.LogRef{Pipeline: "acme/app", Build: n, Stage: stage}, func([]byte) error { return nil })
	return err == nil && ctx.Err() == nil
}

// waitStatus waits for a commit status of sha in context ctxName with state.
func (f *fixture) waitStatus(sha, ctxName, state string) {
	f.t.Helper()
	deadline := time.Now().Add(patience)
	for time.Now().Before(deadline) {
		for _, s := range f.gh.Statuses("acme", "app", sha) {
			if s.Context == ctxName && s.State == state {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	f.t.Fatalf("no %q status %q on %s; got %+v", ctxName, state, sha, f.gh.Statuses("acme", "app", sha))
}

// recExec is an executor that records each StageJob. With hold, a stage
// runs until its ctx ends (or release is closed); with panics, RunStage
// panics once.
type recExec struct {
	name    string
	hold    bool
	panics  bool
	release chan struct{}

	mu       sync.Mutex
	fail     error  // returned by every stage that is not held
	print    string // written to every stage's log (as a stage may print a secret)
	jobs     []pipeline.StageJob
	ended    []error // ctx errors seen by held stages
	panicked bool
	started  chan pipeline.StageJob
}

func newRecExec(name string, hold bool) *recExec {
	return &recExec{name: name, hold: hold, started: make(chan pipeline.StageJob, 16), release: make(chan struct{})}
}

func (x *recExec) Name() string    { return x.name }
func (x *recExec) Resumable() bool { return false }

func (x *recExec) RunStage(ctx context.Context, job pipeline.StageJob, log io.Writer, report func(pipeline.StageOutcome)) error {
	x.mu.Lock()
	x.jobs = append(x.jobs, job)
	doPanic := x.panics && !x.panicked
	if doPanic {
		x.panicked = true
	}
	print, fail := x.print, x.fail
	x.mu.Unlock()
	for k, v := range job.Env {
		fmt.Fprintf(log, "env %s=%s\n", k, v)
	}
	if print != "" {
		fmt.Fprintf(log, "printed %s\n", print)
	}
	fmt.Fprintf(log, "stage %d started\n", job.Stage.Index)
	x.started <- job
	if doPanic {
		panic("executor bug")
	}
	if !x.hold {
		return fail
	}
	select {
	case <-ctx.Done():
		x.mu.Lock()
		x.ended = append(x.ended, context.Cause(ctx))
		x.mu.Unlock()
		return ctx.Err()
	case <-x.release:
		return nil
	}
}

func (x *recExec) CleanupBuild(context.Context, string, string, int) error { return nil }

func (x *recExec) jobCount() int {
	x.mu.Lock()
	defer x.mu.Unlock()
	return len(x.jobs)
}

func (x *recExec) endedCount() int {
	x.mu.Lock()
	defer x.mu.Unlock()
	return len(x.ended)
}

func (x *recExec) cause(i int) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	if i >= len(x.ended) {
		return nil
	}
	return x.ended[i]
}

// refExec is a recExec that reads secrets by name (as Kubernetes does).
type refExec struct{ *recExec }

func (refExec) SecretsByReference() bool { return true }

func waitStarted(t *testing.T, xs ...*recExec) (*recExec, pipeline.StageJob) {
	t.Helper()
	cases := time.After(patience)
	for {
		for _, x := range xs {
			select {
			case j := <-x.started:
				return x, j
			default:
			}
		}
		select {
		case <-cases:
			t.Fatal("no stage started")
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func TestCancelOnAnotherInstanceStopsTheRunnersStageThroughTheWatch(t *testing.T) {
	f := newFixture(t)
	xa, xb := newRecExec("local", true), newRecExec("local", true)
	a := f.engine(xa, true)
	b := f.engine(xb, true)
	sha := f.commit(oneStage)
	n := f.trigger(a, pipeline.Build{Commit: sha}).Number
	runner, _ := waitStarted(t, xa, xb)
	other := a
	if runner == xa {
		other = b
	}
	got, err := other.Cancel(t.Context(), "acme", "app", n)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != pipeline.StatusCanceled || got.Stages[0].Status != pipeline.StatusCanceled {
		t.Fatalf("cancel returned build %s stage %s %q", got.Status, got.Stages[0].Status, got.Message)
	}
	if runner.endedCount() != 1 || !errors.Is(runner.cause(0), pipeline.ErrBuildCanceled) {
		t.Fatalf("the runner's stage saw %d cancels (%v)", runner.endedCount(), runner.cause(0))
	}
	final := f.build(n)
	if final.Status != pipeline.StatusCanceled || final.Stages[0].Status != pipeline.StatusCanceled || final.Runner != "" || final.Message != "" {
		t.Fatalf("stored build %s stage %s runner %q message %q", final.Status, final.Stages[0].Status, final.Runner, final.Message)
	}
	if !f.logEnded(n, 1) {
		t.Fatal("the stage log was not finished")
	}
	if _, err := other.Cancel(t.Context(), "acme", "app", n); !errors.Is(err, pipeline.ErrConflict) {
		t.Fatalf("second cancel: %v, want ErrConflict", err)
	}
	if xa.jobCount()+xb.jobCount() != 1 {
		t.Fatalf("stage ran %d times", xa.jobCount()+xb.jobCount())
	}
}

// runningGhost is a build whose stage 1 a runner "ghost" left RUNNING,
// with its log open, heart last beaten at heartbeat.
func (f *fixture) runningGhost(heartbeat int64) (pipeline.Build, string) {
	f.t.Helper()
	sha := f.commit(oneStage)
	b := f.storedBuild(sha, func(b *pipeline.Build) {
		b.Spec = []byte(oneStage)
		b.Status = pipeline.StatusRunning
		b.Started = pipeline.Now()
		b.Stages = []pipeline.Stage{{ID: b.ID + "-1", Name: "one", Type: "command", Index: 1, Status: pipeline.StatusRunning,
			Started: pipeline.Now(), Params: map[string]any{"command": []any{"true"}}}}
		b.Runner = "ghost"
		b.Heartbeat = heartbeat
	})
	w, err := f.logs.Create(f.t.Context(), pipeline.LogRef{Pipeline: "acme/app", Build: b.Number, Stage: 1})
	if err != nil {
		f.t.Fatal(err)
	}
	fmt.Fprintln(w, "ghost was here")
	// The ghost never closes its log: it died.
	return b, sha
}

func TestCancelEndsABuildWhoseRunnerIsStale(t *testing.T) {
	f := newFixture(t)
	x := newRecExec("local", true)
	// Not started: this instance's recovery must not take the build over
	// first; Cancel alone must end it.
	e := f.engine(x, false)
	b, sha := f.runningGhost(time.Now().Add(-time.Hour).UnixNano())
	got, err := e.Cancel(t.Context(), "acme", "app", b.Number)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != pipeline.StatusCanceled || got.Stages[0].Status != pipeline.StatusCanceled || got.Finished == 0 || got.Stages[0].Finished == 0 {
		t.Fatalf("cancel returned build %s stage %s", got.Status, got.Stages[0].Status)
	}
	stored := f.build(b.Number)
	if stored.Status != pipeline.StatusCanceled || stored.Stages[0].Status != pipeline.StatusCanceled || stored.Runner != "" {
		t.Fatalf("stored build %s stage %s runner %q", stored.Status, stored.Stages[0].Status, stored.Runner)
	}
	if !f.logEnded(b.Number, 1) {
		t.Fatal("the stage log was not finished")
	}
	f.waitStatus(sha, "one", "failure")
	if x.jobCount() != 0 {
		t.Fatal("cancel ran a stage")
	}
}

func TestRecoveryEndsABuildWhoseCancelNeverCompleted(t *testing.T) {
	f := newFixture(t)
	// The ghost is alive when the cancel comes: the cancel is left to it.
	b, sha := f.runningGhost(pipeline.Now())
	canceler := f.engine(newRecExec("local", true), false, func(c *pipeline.EngineConfig) {
		c.StaleAfter = time.Hour
		c.CancelWait = time.Millisecond // the ghost will never answer
	})
	got, err := canceler.Cancel(t.Context(), "acme", "app", b.Number)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status.Done() || got.Stages[0].Status != pipeline.StatusRunning {
		t.Fatalf("with a live runner, cancel ended the build itself: %s stage %s", got.Status, got.Stages[0].Status)
	}
	if _, err := canceler.Cancel(t.Context(), "acme", "app", b.Number); !errors.Is(err, pipeline.ErrConflict) {
		t.Fatalf("second cancel while pending: %v, want ErrConflict", err)
	}
	// ... but the ghost dies without doing it. Another instance's recovery
	// ends the build CANCELED, without running anything.
	x := newRecExec("local", true)
	f.engine(x, true, func(c *pipeline.EngineConfig) { c.StaleAfter = time.Second })
	final := f.waitBuild(b.Number, "CANCELED", func(b pipeline.Build) bool { return b.Status.Done() })
	if final.Status != pipeline.StatusCanceled || final.Stages[0].Status != pipeline.StatusCanceled || final.Runner != "" || final.Message != "" {
		t.Fatalf("recovered build %s %q stage %s %q runner %q", final.Status, final.Message, final.Stages[0].Status, final.Stages[0].Message, final.Runner)
	}
	if !f.logEnded(b.Number, 1) {
		t.Fatal("the stage log was not finished")
	}
	f.waitStatus(sha, "one", "failure")
	if x.jobCount() != 0 {
		t.Fatal("recovery ran the canceled stage")
	}
}

func TestRunnerThatLostItsClaimStopsWithoutCancelingTheBuild(t *testing.T) {
	f := newFixture(t)
	x := newRecExec("local", true)
	e := f.engine(x, true)
	sha := f.commit(oneStage)
	n := f.trigger(e, pipeline.Build{Commit: sha}).Number
	waitStarted(t, x)
	// Another instance takes the build over (as after a long pause of this
	// one's heart).
	takeOver(t, f.store, n, x)
	// The runner writes its last log line after the executor returned
	// and then writes nothing to the build.
	if !f.logEnded(n, 1) {
		t.Fatal("the stage log was not closed")
	}
	b := f.build(n)
	if b.Status != pipeline.StatusRunning || b.Stages[0].Status != pipeline.StatusRunning || b.Runner != "other" {
		t.Fatalf("after a takeover the old runner changed the build: %s stage %s %q runner %q", b.Status, b.Stages[0].Status, b.Stages[0].Message, b.Runner)
	}
}

func TestRunFromNeedsEveryEarlierStageToHaveSucceeded(t *testing.T) {
	f := newFixture(t)
	e := f.engine(newRecExec("local", false), false)
	sha := f.commit(oneStage)
	st := func(i int, s pipeline.Status) pipeline.Stage {
		return pipeline.Stage{ID: fmt.Sprintf("s%d", i), Name: fmt.Sprintf("s%d", i), Type: "command", Index: i, Status: s, Params: map[string]any{}}
	}
	b := f.storedBuild(sha, func(b *pipeline.Build) {
		b.Spec = []byte(oneStage)
		b.Status = pipeline.StatusFail
		b.Finished = pipeline.Now()
		b.Stages = []pipeline.Stage{st(1, pipeline.StatusSuccess), st(2, pipeline.StatusFail), st(3, pipeline.StatusPending)}
		b.CurrentStage = 1
	})
	before, _ := json.Marshal(f.build(b.Number))
	if _, err := e.RunFrom(t.Context(), "acme", "app", b.Number, 3); !errors.Is(err, pipeline.ErrConflict) {
		t.Fatalf("re-run from 3 after stage 2 failed: %v, want ErrConflict", err)
	}
	after, _ := json.Marshal(f.build(b.Number))
	if string(before) != string(after) {
		t.Fatalf("a refused re-run changed the build:\n%s\n%s", before, after)
	}
	got, err := e.RunFrom(t.Context(), "acme", "app", b.Number, 2)
	if err != nil {
		t.Fatalf("re-run from the failed stage: %v", err)
	}
	if got.Status != pipeline.StatusPending || got.CurrentStage != 1 || got.Stages[0].Status != pipeline.StatusSuccess || got.Stages[1].Status != pipeline.StatusPending {
		t.Fatalf("re-run from 2: %s current %d stages %+v", got.Status, got.CurrentStage, got.Stages)
	}
}

// deliver signs body and hands it to svc as a push delivery.
func deliver(t *testing.T, svc *pipeline.Service, delivery string, body []byte) (pipeline.WebhookResult, error) {
	return svc.HandleWebhook(t.Context(), "acme", "app", pipeline.WebhookRequest{
		Event: "push", Delivery: delivery, Signature: fakegithub.SignPayload(hookSecret, body), Body: body})
}

// withRepoID rewrites a payload's repository id.
func withRepoID(t *testing.T, body []byte, id int64) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatal(err)
	}
	m["repository"].(map[string]any)["id"] = id
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestWebhookFromAnotherRepositoryOfTheSameNameIsRefused(t *testing.T) {
	f := newFixture(t)
	e := f.engine(newRecExec("local", false), false)
	svc := pipeline.NewService(pipeline.ServiceConfig{Store: f.store, SCM: f.scm, Logs: f.logs, Engine: e, PublicURL: "http://kontinuous.test"})
	sha := f.commit(oneStage)
	body := fakegithub.PushPayload(f.repo, "main", "", sha, "alice")
	// acme/app deleted and created again (or another repository renamed
	// to it): same name, another id.
	_, err := deliver(t, svc, "d-other", withRepoID(t, body, f.repo.ID+7))
	var ie *pipeline.InvalidError
	if !errors.As(err, &ie) || ie.Field != "repository" {
		t.Fatalf("delivery for another repository id: %v, want an ErrInvalid naming repository", err)
	}
	if bs, err := f.store.ListBuilds(t.Context(), "acme", "app", 0, 0); err != nil || len(bs) != 0 {
		t.Fatalf("builds after a refused delivery: %d, %v", len(bs), err)
	}
	res, err := deliver(t, svc, "d-own", body)
	if err != nil || res.Outcome != pipeline.WebhookCreated {
		t.Fatalf("delivery for the pipeline's repository: %+v, %v", res, err)
	}
}

const secretSpec = specHead + `    secrets: [creds]
    stages:
      - name: one
        type: command
        params: {command: ["true"]}
`

func TestSecretsByReferenceStayOutOfTheStageEnv(t *testing.T) {
	f := newFixture(t)
	const value = "s3cr3t-value-xyz"
	if err := f.store.PutSecret(t.Context(), "acme", "app", pipeline.SecretSet{Name: "creds", Data: map[string]string{"API_TOKEN": value}}); err != nil {
		t.Fatal(err)
	}
	sha := f.commit(secretSpec)

	// By value (local): the value is in Env, masked in the log.
	byValue := newRecExec("local", false)
	e := f.engine(byValue, true)
	n := f.trigger(e, pipeline.Build{Commit: sha}).Number
	_, job := waitStarted(t, byValue)
	if job.Env["API_TOKEN"] != value || !slices.Equal(job.SecretNames, []string{"creds"}) {
		t.Fatalf("by value: env API_TOKEN %q names %v", job.Env["API_TOKEN"], job.SecretNames)
	}
	f.waitBuild(n, "SUCCESS", func(b pipeline.Build) bool { return b.Status == pipeline.StatusSuccess })
	stop(t, e) // its recovery must not run the next builds
	// The executor printed its env: the variable is there, the value is not.
	if log := f.stageLog(n, 1); !strings.Contains(log, "env API_TOKEN="+pipeline.Mask) || strings.Contains(log, value) {
		t.Fatalf("by value: the stage log does not mask the secret:\n%s", log)
	}

	// By reference: names only; the log still masks the value should the
	// stage print it.
	inner := newRecExec("kubernetes", false)
	inner.print = "token=" + value // as the cluster's Secret would reach the stage
	e2 := f.engine(refExec{inner}, true)
	n = f.trigger(e2, pipeline.Build{Commit: sha}).Number
	_, job = waitStarted(t, inner)
	if v, ok := job.Env["API_TOKEN"]; ok || !slices.Equal(job.SecretNames, []string{"creds"}) {
		t.Fatalf("by reference: env API_TOKEN %q (%v) names %v", v, ok, job.SecretNames)
	}
	for k, v := range job.Env {
		if strings.Contains(v, value) {
			t.Fatalf("by reference: env %s holds the secret", k)
		}
	}
	f.waitBuild(n, "SUCCESS", func(b pipeline.Build) bool { return b.Status == pipeline.StatusSuccess })
	if log := f.stageLog(n, 1); !strings.Contains(log, "printed token="+pipeline.Mask) || strings.Contains(log, value) {
		t.Fatalf("by reference: the stage log does not mask the secret:\n%s", log)
	}
	inner.mu.Lock()
	inner.print = ""
	inner.mu.Unlock()

	// A secret not stored here is left to the executor (the cluster's
	// Secret of that name): the stage runs with the name.
	missing := strings.Replace(secretSpec, "[creds]", "[nope]", 1)
	n = f.trigger(e2, pipeline.Build{Commit: f.commit(missing)}).Number
	_, job = waitStarted(t, inner)
	if !slices.Equal(job.SecretNames, []string{"nope"}) {
		t.Fatalf("by reference, not stored here: names %v", job.SecretNames)
	}
	f.waitBuild(n, "SUCCESS", func(b pipeline.Build) bool { return b.Status == pipeline.StatusSuccess })

	// By value, a secret the pipeline lacks fails the stage before it runs.
	stop(t, e2)
	plain := newRecExec("local", false)
	e3 := f.engine(plain, true)
	n = f.trigger(e3, pipeline.Build{Commit: f.commit(missing)}).Number
	b := f.waitBuild(n, "FAIL", func(b pipeline.Build) bool { return b.Status.Done() })
	if b.Status != pipeline.StatusFail || !strings.Contains(b.Stages[0].Message, `secret "nope" does not exist`) {
		t.Fatalf("missing secret by value: %s stage %q", b.Status, b.Stages[0].Message)
	}
	if plain.jobCount() != 0 {
		t.Fatalf("executor ran %d stages, want 0", plain.jobCount())
	}
}

func TestForkBuildsOnTheLocalExecutorFailUnlessAllowed(t *testing.T) {
	f := newFixture(t)
	if err := f.store.PutSecret(t.Context(), "acme", "app", pipeline.SecretSet{Name: "creds", Data: map[string]string{"API_TOKEN": "fork-must-not-see"}}); err != nil {
		t.Fatal(err)
	}
	sha := f.commit(secretSpec)
	fork := pipeline.Build{Event: pipeline.EventPullRequest, Branch: "feature", Commit: sha, Fork: true}

	local := newRecExec("local", false)
	e := f.engine(local, true)
	n := f.trigger(e, fork).Number
	b := f.waitBuild(n, "FAIL", func(b pipeline.Build) bool { return b.Status.Done() })
	if b.Status != pipeline.StatusFail || b.Message != pipeline.ForkRefusedMessage || len(b.Stages) != 0 {
		t.Fatalf("fork build on local: %s %q stages %d", b.Status, b.Message, len(b.Stages))
	}
	if local.jobCount() != 0 {
		t.Fatal("a fork build ran a stage on the local executor")
	}
	// A non-fork build of the same commit runs.
	n = f.trigger(e, pipeline.Build{Commit: sha}).Number
	if b := f.waitBuild(n, "done", func(b pipeline.Build) bool { return b.Status.Done() }); b.Status != pipeline.StatusSuccess {
		t.Fatalf("same-repository build: %s %q", b.Status, b.Message)
	}
	stop(t, e) // its recovery must not run the next builds

	// The operator allows them: the fork build runs, without secrets.
	allowed := newRecExec("local", false)
	ea := f.engine(allowed, true, func(c *pipeline.EngineConfig) { c.AllowForkBuilds = true })
	n = f.trigger(ea, fork).Number
	_, job := waitStarted(t, allowed)
	if _, ok := job.Env["API_TOKEN"]; ok || len(job.SecretNames) != 0 {
		t.Fatalf("allowed fork build got secrets: names %v", job.SecretNames)
	}
	if b := f.waitBuild(n, "done", func(b pipeline.Build) bool { return b.Status.Done() }); b.Status != pipeline.StatusSuccess {
		t.Fatalf("allowed fork build: %s %q", b.Status, b.Message)
	}
	stop(t, ea)

	// Kubernetes runs fork builds (without secrets) by default.
	kube := newRecExec("kubernetes", false)
	ek := f.engine(kube, true)
	n = f.trigger(ek, fork).Number
	_, job = waitStarted(t, kube)
	if _, ok := job.Env["API_TOKEN"]; ok {
		t.Fatal("fork build on kubernetes got secrets")
	}
	if b := f.waitBuild(n, "done", func(b pipeline.Build) bool { return b.Status.Done() }); b.Status != pipeline.StatusSuccess {
		t.Fatalf("fork build on kubernetes: %s %q", b.Status, b.Message)
	}
}

func TestPanicInABuildFailsItAndTheEngineGoesOn(t *testing.T) {
	f := newFixture(t)
	x := newRecExec("local", false)
	x.panics = true
	e := f.engine(x, true)
	sha := f.commit(oneStage)
	n := f.trigger(e, pipeline.Build{Commit: sha}).Number
	b := f.waitBuild(n, "FAIL", func(b pipeline.Build) bool { return b.Status.Done() })
	if b.Status != pipeline.StatusFail || !strings.Contains(b.Message, "internal error") ||
		b.Stages[0].Status != pipeline.StatusFail || !strings.Contains(b.Stages[0].Message, "internal error") || b.Runner != "" {
		t.Fatalf("after a panic: build %s %q stage %s %q runner %q", b.Status, b.Message, b.Stages[0].Status, b.Stages[0].Message, b.Runner)
	}
	n = f.trigger(e, pipeline.Build{Commit: sha}).Number
	if b := f.waitBuild(n, "done", func(b pipeline.Build) bool { return b.Status.Done() }); b.Status != pipeline.StatusSuccess {
		t.Fatalf("next build: %s %q", b.Status, b.Message)
	}
}

func TestStageEndIsRecordedAfterEtcdComesBack(t *testing.T) {
	f := newFixture(t)
	x := newRecExec("local", true)
	e := f.engine(x, true)
	sha := f.commit(oneStage)
	n := f.trigger(e, pipeline.Build{Commit: sha}).Number
	waitStarted(t, x)
	f.etcd.Stop()
	close(x.release) // the stage succeeds while etcd is away...
	// ... longer than one write attempt (a heartbeat period, 1 s here).
	time.Sleep(3 * time.Second)
	f.etcd.Start()
	b := f.waitBuild(n, "done", func(b pipeline.Build) bool { return b.Status.Done() })
	if b.Status != pipeline.StatusSuccess || b.Stages[0].Status != pipeline.StatusSuccess {
		t.Fatalf("after etcd came back: build %s %q stage %s %q", b.Status, b.Message, b.Stages[0].Status, b.Stages[0].Message)
	}
}

func TestStageLogErrorFailsTheStageSayingWhy(t *testing.T) {
	f := newFixture(t)
	// The log store's directory is replaced by a file: creating a stage
	// log fails.
	dir := filepath.Join(t.TempDir(), "logs")
	logs, err := logstore.New(dir, logstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir, []byte("not a directory"), 0o600); err != nil {
		t.Fatal(err)
	}
	f.logs = logs
	x := newRecExec("local", false)
	e := f.engine(x, true)
	n := f.trigger(e, pipeline.Build{Commit: f.commit(oneStage)}).Number
	b := f.waitBuild(n, "done", func(b pipeline.Build) bool { return b.Status.Done() })
	if b.Status != pipeline.StatusFail || b.Stages[0].Status != pipeline.StatusFail ||
		!strings.Contains(b.Stages[0].Message, "could not open the stage log") || strings.Contains(b.Stages[0].Message, "tok-alice") {
		t.Fatalf("log error: build %s stage %s %q", b.Status, b.Stages[0].Status, b.Stages[0].Message)
	}
	if x.jobCount() != 0 {
		t.Fatal("the stage ran without a log")
	}
}

// resumableExec is a recExec whose stages survive a server (Kubernetes).
type resumableExec struct{ *recExec }

func (resumableExec) Resumable() bool { return true }

// A stage a dead runner left RUNNING is resumed with its original start,
// by which a resumable executor recognises (and adopts) the same run.
func TestResumedStageKeepsItsStartForTheExecutor(t *testing.T) {
	f := newFixture(t)
	// A runner that died an hour ago, its stage RUNNING (its process, and
	// with it its log writer, gone).
	ghost := f.storedBuild(f.commit(oneStage), func(b *pipeline.Build) {
		b.Spec = []byte(oneStage)
		b.Status = pipeline.StatusRunning
		b.Started = pipeline.Now()
		b.Stages = []pipeline.Stage{{ID: b.ID + "-1", Name: "one", Type: "command", Index: 1, Status: pipeline.StatusRunning,
			Started: pipeline.Now() - int64(time.Minute), Params: map[string]any{"command": []any{"true"}}}}
		b.Runner = "ghost"
		b.Heartbeat = pipeline.Now() - int64(time.Hour)
	})
	started := ghost.Stages[0].Started
	inner := newRecExec("kubernetes", false)
	e := f.engine(resumableExec{inner}, true)
	_, job := waitStarted(t, inner)
	if job.Stage.Started != started {
		t.Fatalf("resumed stage started at %d, want its original start %d", job.Stage.Started, started)
	}
	b := f.waitBuild(ghost.Number, "SUCCESS", func(b pipeline.Build) bool { return b.Status.Done() })
	if b.Status != pipeline.StatusSuccess || b.Stages[0].Started != started {
		t.Fatalf("resumed build %s, stage started %d (want %d)", b.Status, b.Stages[0].Started, started)
	}
	stop(t, e)

	// A first run gets a fresh start, which the executor sees too.
	n := f.trigger(f.engine(resumableExec{inner}, true), pipeline.Build{Commit: f.commit(oneStage)}).Number
	_, job = waitStarted(t, inner)
	if job.Stage.Started == 0 {
		t.Fatal("a first run reached the executor without its start")
	}
	f.waitBuild(n, "SUCCESS", func(b pipeline.Build) bool { return b.Status == pipeline.StatusSuccess })
}

type cntExec struct {
	*recExec
	cleanups atomic.Int32
}

func (x *cntExec) CleanupBuild(context.Context, string, string, int) error {
	x.cleanups.Add(1)
	return nil
}

func TestACancelAndTheRunnerItStopsFinishTheBuildOnce(t *testing.T) {
	f := newFixture(t)
	x := &cntExec{recExec: newRecExec("local", true)}
	e := f.engine(x, true)
	sha := f.commit(oneStage)
	n := f.trigger(e, pipeline.Build{Commit: sha}).Number
	waitStarted(t, x.recExec)
	// The runner's heart is late (etcd was slow): make the stored heartbeat old.
	if _, err := f.store.UpdateBuild(t.Context(), "acme", "app", n, func(b *pipeline.Build) error {
		b.Heartbeat = pipeline.Now() - int64(time.Hour)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	got, err := e.Cancel(t.Context(), "acme", "app", n)
	if err != nil {
		t.Fatal(err)
	}
	// The runner looked dead: Cancel ended the build itself, at once.
	if got.Status != pipeline.StatusCanceled || got.Stages[0].Status != pipeline.StatusCanceled {
		t.Fatalf("cancel answered build %s stage %s, want CANCELED both", got.Status, got.Stages[0].Status)
	}
	// The runner it stopped (alive after all) sees the cancel as the cause.
	deadline := time.Now().Add(patience)
	for x.endedCount() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if x.endedCount() != 1 || !errors.Is(x.cause(0), pipeline.ErrBuildCanceled) {
		t.Fatalf("the running stage saw %d ends (%v), want one canceled", x.endedCount(), x.cause(0))
	}
	b := f.waitBuild(n, "CANCELED", func(b pipeline.Build) bool { return b.Status.Done() })
	if b.Status != pipeline.StatusCanceled || b.Stages[0].Status != pipeline.StatusCanceled || b.Runner != "" {
		t.Fatalf("stored build %s stage %s runner %q, want CANCELED, CANCELED, none", b.Status, b.Stages[0].Status, b.Runner)
	}
	if st := f.waitFinalStatus(sha, "one"); st.State != "failure" {
		t.Fatalf("canceled stage's commit status %+v, want failure", st)
	}
	for time.Now().Before(deadline) && x.cleanups.Load() < 1 {
		time.Sleep(10 * time.Millisecond)
	}
	// A second finish (the runner's, after the canceler's) would follow
	// within moments; a slow machine can only hide it, never fake it.
	settle := time.Now().Add(3 * time.Second)
	for time.Now().Before(settle) && x.cleanups.Load() < 2 {
		time.Sleep(50 * time.Millisecond)
	}
	if c := x.cleanups.Load(); c != 1 {
		t.Fatalf("build finished %d times (CleanupBuild + notify each time)", c)
	}
	if b := f.build(n); b.Status != pipeline.StatusCanceled || b.Stages[0].Status != pipeline.StatusCanceled {
		t.Fatalf("after the runner stopped: build %s stage %s, want CANCELED", b.Status, b.Stages[0].Status)
	}
}

// stageLog reads the stored log of build n's stage.
func (f *fixture) stageLog(n, stage int) string {
	f.t.Helper()
	b, err := f.logs.Read(f.t.Context(), pipeline.LogRef{Pipeline: "acme/app", Build: n, Stage: stage})
	if err != nil {
		f.t.Fatalf("log of build %d stage %d: %v", n, stage, err)
	}
	return string(b)
}

// waitFinalStatus waits until the newest commit status of sha in context
// ctxName is not "pending" and returns it.
func (f *fixture) waitFinalStatus(sha, ctxName string) fakegithub.Status {
	f.t.Helper()
	deadline := time.Now().Add(patience)
	var last fakegithub.Status
	for time.Now().Before(deadline) {
		for _, s := range f.gh.Statuses("acme", "app", sha) {
			if s.Context == ctxName {
				last = s
			}
		}
		if last.State != "" && last.State != "pending" {
			return last
		}
		time.Sleep(20 * time.Millisecond)
	}
	f.t.Fatalf("no final %q status on %s; got %+v", ctxName, sha, f.gh.Statuses("acme", "app", sha))
	return last
}

// statesOf lists the states of sha's statuses in context ctxName, oldest first.
func (f *fixture) statesOf(sha, ctxName string) []string {
	var out []string
	for _, s := range f.gh.Statuses("acme", "app", sha) {
		if s.Context == ctxName {
			out = append(out, s.State)
		}
	}
	return out
}

// A canceled stage's commit status is a failure, never a success: on
// the runner's own cancel (a live runner stops the stage), and when the
// canceler ends a build no live runner drives.
func TestCanceledStagesPostFailureStatuses(t *testing.T) {
	f := newFixture(t)
	x := newRecExec("local", true)
	e := f.engine(x, true)

	// A live runner: the cancel is handed to it and it ends the stage.
	sha := f.commit(oneStage)
	n := f.trigger(e, pipeline.Build{Commit: sha}).Number
	waitStarted(t, x)
	if _, err := e.Cancel(t.Context(), "acme", "app", n); err != nil {
		t.Fatal(err)
	}
	b := f.waitBuild(n, "CANCELED", func(b pipeline.Build) bool { return b.Status.Done() })
	if b.Status != pipeline.StatusCanceled || b.Stages[0].Status != pipeline.StatusCanceled {
		t.Fatalf("live runner: build %s stage %s, want CANCELED", b.Status, b.Stages[0].Status)
	}
	if st := f.waitFinalStatus(sha, "one"); st.State != "failure" || !strings.Contains(st.Description, "cancel") {
		t.Fatalf("live runner: canceled stage's status %+v, want failure saying canceled", st)
	}
	if got := f.statesOf(sha, "one"); slices.Contains(got, "success") {
		t.Fatalf("live runner: a canceled stage posted success: %v", got)
	}

	// No live runner (a queued build on an engine that is not started):
	// Cancel ends it itself.
	idle := f.engine(newRecExec("local", true), false)
	sha2 := f.commit(oneStage + "# second\n")
	queued := f.storedBuild(sha2, func(b *pipeline.Build) {
		b.Spec = []byte(oneStage)
		b.Stages = []pipeline.Stage{{ID: b.ID + "-1", Name: "one", Type: "command", Index: 1, Status: pipeline.StatusPending,
			Params: map[string]any{"command": []any{"true"}}}}
	})
	got, err := idle.Cancel(t.Context(), "acme", "app", queued.Number)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != pipeline.StatusCanceled || got.Stages[0].Status != pipeline.StatusCanceled {
		t.Fatalf("no runner: build %s stage %s, want CANCELED", got.Status, got.Stages[0].Status)
	}
	if st := f.waitFinalStatus(sha2, "one"); st.State != "failure" {
		t.Fatalf("no runner: canceled stage's status %+v, want failure", st)
	}
	if got := f.statesOf(sha2, "one"); slices.Contains(got, "success") {
		t.Fatalf("no runner: a canceled stage posted success: %v", got)
	}
}

func TestCommitStatusesCarryADescription(t *testing.T) {
	f := newFixture(t)
	x := newRecExec("local", false)
	e := f.engine(x, true)
	sha := f.commit(oneStage)
	f.trigger(e, pipeline.Build{Commit: sha})
	if st := f.waitFinalStatus(sha, "one"); st.State != "success" {
		t.Fatalf("a stage that succeeded has final status %+v", st)
	}
	// A stage that fails says so.
	failing := newRecExec("local", false)
	failing.fail = errors.New("exit status 3")
	stop(t, e)
	e2 := f.engine(failing, true)
	sha2 := f.commit(oneStage + "# fails\n")
	f.trigger(e2, pipeline.Build{Commit: sha2})
	if st := f.waitFinalStatus(sha2, "one"); st.State != "failure" || !strings.Contains(st.Description, "exit status 3") {
		t.Fatalf("a stage that failed has final status %+v", st)
	}
	want := map[string][]string{sha: {"pending", "success"}, sha2: {"pending", "failure"}}
	for c, states := range want {
		if got := f.statesOf(c, "one"); !slices.Equal(got, states) {
			t.Errorf("statuses of %s: %v, want %v", c, got, states)
		}
		for _, s := range f.gh.Statuses("acme", "app", c) {
			if s.Description == "" {
				t.Errorf("status %s/%s without description", s.Context, s.State)
			}
			if !strings.HasPrefix(s.TargetURL, "http://kontinuous.test/api/v1/pipelines/acme/app/builds/") {
				t.Errorf("status %s/%s links to %q", s.Context, s.State, s.TargetURL)
			}
		}
	}
}

// takeOver gives acme/app's build n to another instance ("other", as
// after a long pause of this one's heart) and waits until x's running
// stage has ended for that reason.
func takeOver(t *testing.T, store pipeline.Store, n int, x *recExec) {
	t.Helper()
	if _, err := store.UpdateBuild(t.Context(), "acme", "app", n, func(b *pipeline.Build) error {
		b.Runner, b.Heartbeat = "other", pipeline.Now()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(patience)
	for x.endedCount() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if x.endedCount() != 1 || !errors.Is(x.cause(0), pipeline.ErrTakenOver) {
		t.Fatalf("after the takeover the stage saw %d ends (%v)", x.endedCount(), x.cause(0))
	}
}
