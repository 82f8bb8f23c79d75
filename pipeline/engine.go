package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kontinuous/kontinuous/pipeline/spec"
)

// EngineConfig wires the build engine.
type EngineConfig struct {
	Store Store
	// SCM is the default forge; Forges, when set, every enabled forge: a
	// pipeline's forge calls go to its creator's forge (OwnerUserID).
	SCM      Forge
	Forges   *Forges
	Logs     LogStore
	Executor Executor
	// PublicURL is the server's base URL (KONTINUOUS_URL, status links).
	PublicURL string
	Logger    *slog.Logger
	// StageTimeout applies to stages whose spec sets none (default 1h).
	StageTimeout time.Duration
	// Namespace decides where a pipeline's stages run given the namespace
	// its spec asks for ("" = none); an error refuses the build. Nil: the
	// spec's namespace is refused unless empty, and "" is used.
	Namespace func(p Pipeline, requested string) (string, error)
	// InternalRegistry is KONTINUOUS_INTERNAL_REGISTRY (optional).
	InternalRegistry string
	// Workers bounds builds running at once on this instance (default 4).
	Workers int
	// Notifier posts commit statuses and Slack messages (default: none
	// are sent).
	Notifier Notifier
	// StaleAfter: a running build whose runner has not beaten its heart
	// for this long is taken over (default 45 s).
	StaleAfter time.Duration
	// CancelWait bounds how long Cancel waits for a live runner to stop
	// the build's stage before answering (default 10 s).
	CancelWait time.Duration
	// AllowForkBuilds lets pull requests from forks run on the local
	// executor. Off by default: the local executor runs stages as the
	// server's own user on the server's host, where a fork's untrusted
	// code could read the data dir and the auth secret. When off, a fork
	// build on the local executor is recorded but FAILs at start, before
	// anything is cloned or run, saying so (ForkRefusedMessage). Other
	// executors (kubernetes) run fork builds either way. On every executor
	// a fork build gets no pipeline secrets, its deploy stages fail
	// (ForkDeployMessage) and its command stages' dependencies are not
	// applied (see runStage). The server exposes it as --allow-fork-builds.
	AllowForkBuilds bool
}

// ForkRefusedMessage is the message of a fork build refused by the local
// executor (see EngineConfig.AllowForkBuilds).
const ForkRefusedMessage = "pull requests from forks do not run on the local executor; the server operator can allow them with --allow-fork-builds"

// ForkDeployMessage is the message of a deploy stage of a fork build: it
// fails, before the executor sees it, so that nobody takes the build for
// one that deployed.
const ForkDeployMessage = "deploy stages do not run for pull requests from forks"

// forkDependenciesLine is the stage log line of a fork build's command
// stage whose dependencies the engine dropped.
const forkDependenciesLine = "[kontinuous] dependencies are not applied for pull requests from forks; this stage runs without them\n"

// forkStage is st as a fork build may run it: a command stage's
// dependencies (manifests the executor would apply with the server's
// credentials) are dropped. It reports whether it dropped any.
func forkStage(st Stage) (Stage, bool) {
	if st.Type != spec.TypeCommand {
		return st, false
	}
	if _, ok := st.Params["dependencies"]; !ok {
		return st, false
	}
	params := make(map[string]any, len(st.Params))
	for k, v := range st.Params {
		if k != "dependencies" {
			params[k] = v
		}
	}
	st.Params = params
	return st, true
}

// cancelRequestedMessage is the build's message while its cancel is
// requested (Build.CancelRequested): the build stays unfinished (so that
// recovery still sees it) until the runner has stopped its stage, or until
// recovery finds the runner gone and ends the build itself.
const cancelRequestedMessage = "cancel requested; waiting for the running stage to stop"

// cancelRequested reports whether b is being canceled or was canceled.
func cancelRequested(b *Build) bool { return b.cancelRequested() }

// errNoop aborts an UpdateBuild that has nothing to change.
var errNoop = errors.New("nothing to change")

// runnerLive reports whether b's runner has beaten its heart recently.
// While the store refused writes, no runner could: a runner counts as
// live until StaleAfter has passed since this engine last saw the store
// refuse one, so that after an outage (a NOSPACE alarm disarmed, etcd
// back) runners get to record their stages before anyone takes their
// builds over.
func (e *Engine) runnerLive(b *Build) bool {
	if b.Runner == "" {
		return false
	}
	if time.Since(time.Unix(0, b.Heartbeat)) < e.cfg.StaleAfter {
		return true
	}
	return time.Since(time.Unix(0, e.storeTrouble.Load())) < e.cfg.StaleAfter
}

// noteStore records a store failure that a write met (see runnerLive).
func (e *Engine) noteStore(err error) {
	if errors.Is(err, ErrUnavailable) {
		e.storeTrouble.Store(time.Now().UnixNano())
	}
}

// applyCancel ends b as CANCELED (Build.Cancel) now.
func applyCancel(b *Build) []int { return b.Cancel(Now()) }

// updateRetry applies fn like Store.UpdateBuild, retrying with backoff
// when the store fails (etcd unreachable, a lost leader) until the write
// succeeds or ctx ends. Errors of fn and ErrNotFound are not retried. Each
// attempt gets a heartbeat period (StaleAfter/3, at least a second).
func (e *Engine) updateRetry(ctx context.Context, owner, repo string, number int, fn func(*Build) error) (Build, error) {
	backoff := 100 * time.Millisecond
	perAttempt := max(e.cfg.StaleAfter/3, time.Second)
	for attempt := 1; ; attempt++ {
		var fnErr error
		actx, cancel := context.WithTimeout(ctx, perAttempt)
		b, err := e.cfg.Store.UpdateBuild(actx, owner, repo, number, func(b *Build) error {
			fnErr = fn(b)
			return fnErr
		})
		cancel()
		e.noteStore(err)
		// A record too large to store never will be: not retried.
		if err == nil || fnErr != nil || errors.Is(err, ErrNotFound) || errors.Is(err, ErrInvalid) || errors.Is(err, ErrTooLarge) || ctx.Err() != nil {
			return b, err
		}
		e.log.Warn("recording build state; will retry", "pipeline", Key(owner, repo), "build", number, "attempt", attempt, "error", err.Error())
		select {
		case <-ctx.Done():
			return b, err
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// createLogRetry opens a stage's log, retrying while the store is
// unavailable (an etcd leader election, a member restarting) for as long as
// a build's heartbeat may be late (StaleAfter): a short outage must not
// fail a stage that never ran.
func (e *Engine) createLogRetry(ctx context.Context, ref LogRef) (io.WriteCloser, error) {
	backoff := 100 * time.Millisecond
	perAttempt := max(e.cfg.StaleAfter/3, time.Second)
	deadline := time.Now().Add(e.cfg.StaleAfter)
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, perAttempt)
		lw, err := e.cfg.Logs.Create(actx, ref)
		cancel()
		if err == nil || !errors.Is(err, ErrUnavailable) || ctx.Err() != nil || time.Now().After(deadline) {
			return lw, err
		}
		e.log.Warn("opening a stage log; will retry", "pipeline", ref.Pipeline, "build", ref.Build, "stage", ref.Stage, "attempt", attempt, "error", err.Error())
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// advance is updateRetry for one step of a build: a build that ended
// meanwhile is left as it is, and one whose cancel was requested is ended
// CANCELED instead of taking the step (fn is not called for either).
func (e *Engine) advance(ctx context.Context, owner, repo string, number int, fn func(*Build) error) (Build, error) {
	return e.updateRetry(ctx, owner, repo, number, func(nb *Build) error {
		if nb.Status.Done() {
			return nil
		}
		if cancelRequested(nb) {
			applyCancel(nb)
			return nil
		}
		return fn(nb)
	})
}

// logFinisher is implemented by log stores that can mark a log finished
// without writing to it (logstore.Files).
type logFinisher interface {
	Finish(ctx context.Context, ref LogRef) error
}

// finishLog marks a stage's log finished so that followers stop waiting.
func (e *Engine) finishLog(ctx context.Context, p Pipeline, build, stage int) {
	f, ok := e.cfg.Logs.(logFinisher)
	if !ok {
		return
	}
	if err := f.Finish(ctx, LogRef{Pipeline: p.Key(), Build: build, Stage: stage}); err != nil {
		e.log.Warn("finish stage log", "pipeline", p.Key(), "build", build, "stage", stage, "error", err.Error())
	}
}

// afterCancel does what follows a cancel recorded without the build's
// runner: the stages' logs end, their commit statuses say so, and the
// build's resources are released.
func (e *Engine) afterCancel(ctx context.Context, b Build, changed []int) {
	e.afterEnd(ctx, b, changed, "failure", canceledMessage)
}

// afterEnd follows a build ended by another path than its runner: the
// stages it ended (positions changed) get their logs finished and a
// commit status (state, desc), then the build is finished.
func (e *Engine) afterEnd(ctx context.Context, b Build, changed []int, state, desc string) {
	p, err := e.cfg.Store.GetPipeline(ctx, b.Owner, b.Repo)
	if err != nil {
		e.log.Warn("ended build: pipeline not readable", "pipeline", Key(b.Owner, b.Repo), "build", b.Number, "error", err.Error())
		return
	}
	for _, i := range changed {
		e.finishLog(ctx, p, b.Number, b.Stages[i].Index)
		e.postStatus(p, b, b.Stages[i], state, desc)
	}
	e.finish(ctx, p, b)
}

// cancelOrphan ends a build whose cancel was requested but whose runner is
// gone (absent or stale): nobody else will.
func (e *Engine) cancelOrphan(ctx context.Context, owner, repo string, number int) {
	var changed []int
	b, err := e.cfg.Store.UpdateBuild(ctx, owner, repo, number, func(b *Build) error {
		if b.Status.Done() || !cancelRequested(b) || (e.runnerLive(b) && b.Runner != e.instance) {
			return errNoop
		}
		changed = applyCancel(b)
		return nil
	})
	if err != nil {
		if !errors.Is(err, errNoop) && ctx.Err() == nil {
			e.log.Warn("ending a canceled build", "pipeline", Key(owner, repo), "build", number, "error", err.Error())
		}
		return
	}
	e.log.Info("ended a canceled build whose runner is gone", "pipeline", Key(owner, repo), "build", number)
	e.afterCancel(ctx, b, changed)
}

// Engine drives builds through their stages: PENDING → RUNNING → SUCCESS,
// FAIL or CANCELED, pausing at WAITING for wait stages. State lives in the
// store and every change is an optimistic-concurrency update, so any
// instance can advance any build; the instance that claims a build
// (Runner) runs it and proves it is alive with a heartbeat.
type Engine struct {
	cfg      EngineConfig
	log      *slog.Logger
	instance string
	sem      chan struct{}

	mu      sync.Mutex
	running map[string]context.CancelFunc      // build key → cancel (shutdown scope)
	cancels map[string]context.CancelCauseFunc // build key → cancel of its stages
	// again marks running builds enqueued again meanwhile (a re-run, an
	// approval): their run enqueues them once more when it ends.
	again map[string]bool
	// finished remembers the build ends this instance has finished
	// (cleanup, notification), so that two paths seeing the same end
	// (a cancel and the runner it stopped) do it once.
	finished map[string]bool
	wg       sync.WaitGroup
	ctx      context.Context
	stop     context.CancelFunc
	// storeTrouble is when a write of this engine last failed because
	// the store could not take it (etcd unreachable, NOSPACE), Unix ns.
	storeTrouble atomic.Int64
}

// NewEngine returns an engine; call Start to recover and run builds.
func NewEngine(cfg EngineConfig) *Engine {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.StageTimeout <= 0 {
		cfg.StageTimeout = time.Hour
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 4
	}
	if cfg.Notifier == nil {
		cfg.Notifier = noNotifier{}
	}
	if cfg.StaleAfter <= 0 {
		cfg.StaleAfter = 45 * time.Second
	}
	if cfg.CancelWait <= 0 {
		cfg.CancelWait = defaultCancelWait
	}
	cfg.PublicURL = strings.TrimSuffix(cfg.PublicURL, "/")
	id, _ := randomString(9) // crypto/rand does not fail on supported platforms
	return &Engine{cfg: cfg, log: cfg.Logger, instance: id, sem: make(chan struct{}, cfg.Workers),
		running: map[string]context.CancelFunc{}, again: map[string]bool{}, cancels: map[string]context.CancelCauseFunc{}}
}

// Instance is this engine's runner id.
func (e *Engine) Instance() string { return e.instance }

// Start recovers builds left behind by a crash or another instance and
// keeps doing so periodically until Stop.
func (e *Engine) Start(ctx context.Context) {
	e.ctx, e.stop = context.WithCancel(context.WithoutCancel(ctx))
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		e.recover(e.ctx, true)
		t := time.NewTicker(e.cfg.StaleAfter / 3)
		defer t.Stop()
		for {
			select {
			case <-e.ctx.Done():
				return
			case <-t.C:
				e.recover(e.ctx, false)
			}
		}
	}()
}

// Stop cancels running stages' supervision and waits for goroutines. The
// builds it was running are finished by the next instance's recovery.
func (e *Engine) Stop(ctx context.Context) error {
	if e.stop == nil {
		return nil
	}
	e.stop()
	done := make(chan struct{})
	go func() { e.wg.Wait(); close(done) }()
	select {
	case <-done:
		// The status queues stop with the engine's context.
		return e.cfg.Notifier.Wait(ctx)
	case <-ctx.Done():
		return ctx.Err()
	}
}

func buildKey(owner, repo string, n int) string { return Key(owner, repo) + "#" + strconv.Itoa(n) }

// recover looks at every unfinished build: queued ones are run, running
// ones whose runner is gone are resumed (resumable executors) or failed
// with a message, never left RUNNING; canceled ones whose runner is gone
// are ended. A build it cannot handle is logged and skipped, never the
// end of the sweep.
func (e *Engine) recover(ctx context.Context, startup bool) {
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	builds, err := e.cfg.Store.ActiveBuilds(rctx)
	if err != nil {
		if ctx.Err() == nil {
			e.log.Warn("recover builds", "error", err.Error())
		}
		return
	}
	for _, b := range builds {
		if ctx.Err() != nil {
			return
		}
		e.recoverOne(ctx, b, startup)
	}
}

// recoverOne is recover for one build.
func (e *Engine) recoverOne(ctx context.Context, b Build, startup bool) {
	defer func() {
		if v := recover(); v != nil {
			e.log.Error("recovering a build failed; skipped", "pipeline", Key(b.Owner, b.Repo), "build", b.Number, "panic", fmt.Sprint(v))
		}
	}()
	if b.Owner == "" || b.Repo == "" || b.Number <= 0 {
		e.log.Warn("recover builds: skipping a malformed build record", "pipeline", Key(b.Owner, b.Repo), "build", b.Number)
		return
	}
	if e.isRunning(b.Owner, b.Repo, b.Number) {
		return
	}
	if cancelRequested(&b) {
		if !e.runnerLive(&b) {
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			e.cancelOrphan(cctx, b.Owner, b.Repo, b.Number)
		}
		return
	}
	if b.Status == StatusWaiting {
		e.expireWait(ctx, b)
		return
	}
	stale := !e.runnerLive(&b)
	if b.Runner == e.instance || (stale && (b.Status == StatusPending || b.Status == StatusRunning)) {
		if startup && b.Runner != "" {
			e.log.Info("taking over build", "pipeline", Key(b.Owner, b.Repo), "build", b.Number)
		}
		e.Enqueue(b.Owner, b.Repo, b.Number)
	}
}

func (e *Engine) isRunning(owner, repo string, n int) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	_, ok := e.running[buildKey(owner, repo, n)]
	return ok
}

// Enqueue runs a build asynchronously on this instance (if it can claim it).
func (e *Engine) Enqueue(owner, repo string, number int) {
	if e.ctx == nil {
		e.log.Error("engine not started; build left queued", "pipeline", Key(owner, repo), "build", number)
		return
	}
	key := buildKey(owner, repo, number)
	ctx, cancel := context.WithCancel(e.ctx)
	e.mu.Lock()
	if _, ok := e.running[key]; ok {
		// Its run may be past the point where it would see this (ending:
		// cleaning up, notifying): it enqueues the build again when done.
		e.again[key] = true
		e.mu.Unlock()
		cancel()
		return
	}
	e.running[key] = cancel
	e.mu.Unlock()
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		defer func() {
			e.mu.Lock()
			delete(e.running, key)
			again := e.again[key]
			delete(e.again, key)
			e.mu.Unlock()
			cancel()
			if again && e.ctx.Err() == nil {
				e.Enqueue(owner, repo, number)
			}
		}()
		select {
		case e.sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		defer func() { <-e.sem }()
		// A bug in a build's run must not take the server down: the
		// build fails saying so and the server goes on.
		defer func() {
			if v := recover(); v != nil {
				e.log.Error("build run panicked", "pipeline", Key(owner, repo), "build", number,
					"panic", fmt.Sprint(v), "stack", string(debug.Stack()))
				e.failAfterPanic(owner, repo, number)
			}
		}()
		if err := e.run(ctx, owner, repo, number); err != nil && ctx.Err() == nil {
			e.log.Warn("build run", "pipeline", Key(owner, repo), "build", number, "error", err.Error())
		}
	}()
}

// panicMessage is the message of a build (and stage) whose run panicked.
const panicMessage = "internal error in the server while running this build; its log has the details"

// failAfterPanic ends a build whose run panicked on this instance.
func (e *Engine) failAfterPanic(owner, repo string, number int) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(e.ctx), 30*time.Second)
	defer cancel()
	var changed []int
	b, err := e.updateRetry(ctx, owner, repo, number, func(b *Build) error {
		changed = nil
		if b.Status.Done() || (b.Runner != e.instance && b.Runner != "") {
			return errNoop
		}
		changed = b.FailRunning(panicMessage, Now())
		return nil
	})
	if err != nil {
		if !errors.Is(err, errNoop) {
			e.log.Warn("failing a build after a panic", "pipeline", Key(owner, repo), "build", number, "error", err.Error())
		}
		return
	}
	e.afterEnd(ctx, b, changed, "error", panicMessage)
}

var errClaimed = errors.New("build is run by another instance")

// claim makes this instance the build's runner.
func (e *Engine) claim(ctx context.Context, owner, repo string, number int) (Build, error) {
	b, err := e.cfg.Store.UpdateBuild(ctx, owner, repo, number, func(b *Build) error {
		if !b.Claim(e.instance, e.runnerLive(b), Now()) {
			return errClaimed
		}
		return nil
	})
	e.noteStore(err)
	return b, err
}

// run drives one build from its current stage until it ends or waits.
func (e *Engine) run(ctx context.Context, owner, repo string, number int) error {
	b, err := e.claim(ctx, owner, repo, number)
	if errors.Is(err, errClaimed) {
		return nil
	}
	if err != nil {
		return err
	}
	if cancelRequested(&b) {
		// Canceled while no runner drove it (or its runner died).
		e.cancelOrphan(ctx, owner, repo, number)
		return nil
	}
	p, err := e.cfg.Store.GetPipeline(ctx, owner, repo)
	if err != nil {
		return err
	}
	// Watch for cancellation from any instance, and beat the heart.
	bctx, done := e.watchRun(ctx, owner, repo, number)
	defer done()

	if b.Fork && !e.cfg.AllowForkBuilds && e.cfg.Executor.Name() == "local" {
		b, err = e.failBuild(ctx, p, b, ForkRefusedMessage)
		e.finish(ctx, p, b)
		return err
	}
	if len(b.Stages) == 0 {
		b, err = e.prepare(ctx, p, b)
		if err != nil || b.Status.Done() {
			e.finish(ctx, p, b)
			return err
		}
	}
	def, err := e.definition(p, b)
	if err != nil {
		b, err = e.failBuild(ctx, p, b, "invalid "+SpecPath+": "+err.Error())
		e.finish(ctx, p, b)
		return err
	}
	for i := max(b.CurrentStage, 0); i < len(b.Stages); i++ {
		st := b.Stages[i]
		if st.Status == StatusSuccess {
			continue
		}
		if st.Type == spec.TypeWait {
			b, err = e.wait(ctx, p, b, i)
			if err == nil && b.Status.Done() {
				e.finish(ctx, p, b)
			}
			return err
		}
		if st.Status == StatusRunning && !e.cfg.Executor.Resumable() {
			// The process that ran it died with the previous server.
			// Best effort: ends followers of the interrupted log.
			e.finishLog(ctx, p, b.Number, st.Index)
			b, err = e.endStage(ctx, p, b, i, StatusFail, "the server stopped while this stage was running; re-run the build from this stage", StageOutcome{})
			if err != nil {
				return err
			}
			e.finish(ctx, p, b)
			return nil
		}
		b, err = e.runStage(bctx, ctx, p, b, def, i)
		if errors.Is(err, ErrTakenOver) {
			e.log.Info("build taken over by another instance; stopped here", "pipeline", p.Key(), "build", number)
			return nil
		}
		if err != nil {
			return err
		}
		if b.Status.Done() {
			e.finish(ctx, p, b)
			return nil
		}
	}
	return e.succeed(ctx, p, number)
}

// watchRun returns the context of a build's run on this instance: it ends
// when the build is canceled (from any instance, seen by the watch or the
// heartbeat) or taken over by another instance. done releases it.
func (e *Engine) watchRun(ctx context.Context, owner, repo string, number int) (bctx context.Context, done func()) {
	bctx, cancel := context.WithCancelCause(ctx)
	key := buildKey(owner, repo, number)
	e.mu.Lock()
	e.cancels[key] = cancel
	e.mu.Unlock()
	go func() {
		// Errors end the watch; the heartbeat below still notices cancels.
		_ = e.cfg.Store.WatchBuild(bctx, owner, repo, number, func(nb Build) bool {
			switch {
			case cancelRequested(&nb):
				cancel(ErrBuildCanceled)
				return false
			case nb.Runner != "" && nb.Runner != e.instance:
				cancel(ErrTakenOver)
				return false
			}
			return true
		})
	}()
	go e.heartbeat(bctx, cancel, owner, repo, number)
	return bctx, func() {
		cancel(nil)
		e.mu.Lock()
		delete(e.cancels, key)
		e.mu.Unlock()
	}
}

// succeed ends a build whose stages all ran: SUCCESS, or CANCELED when a
// cancel came meanwhile.
func (e *Engine) succeed(ctx context.Context, p Pipeline, number int) error {
	owner, repo := p.Owner, p.Repo
	var changed []int
	b, err := e.updateRetry(ctx, owner, repo, number, func(nb *Build) error {
		changed = nil
		if nb.Status.Done() {
			return errNoop
		}
		if cancelRequested(nb) {
			changed = applyCancel(nb)
			return nil
		}
		nb.Succeed(Now())
		return nil
	})
	if errors.Is(err, errNoop) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, i := range changed {
		e.postStatus(p, b, b.Stages[i], "failure", canceledMessage)
	}
	e.finish(ctx, p, b)
	return nil
}

// heartbeat proves every StaleAfter/3 that this instance still drives the
// build. It ends ctx (through cancel) when the build was canceled or when
// another instance has taken it over.
func (e *Engine) heartbeat(ctx context.Context, cancel context.CancelCauseFunc, owner, repo string, number int) {
	t := time.NewTicker(e.cfg.StaleAfter / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			var seen Build
			b, err := e.cfg.Store.UpdateBuild(ctx, owner, repo, number, func(b *Build) error {
				seen = *b
				if b.Runner != e.instance {
					return errClaimed
				}
				b.Heartbeat = Now()
				return nil
			})
			e.noteStore(err)
			switch {
			case errors.Is(err, errClaimed) && cancelRequested(&seen):
				cancel(ErrBuildCanceled)
				return
			case errors.Is(err, errClaimed):
				cancel(ErrTakenOver)
				return
			case err == nil && cancelRequested(&b):
				cancel(ErrBuildCanceled)
				return
			}
		}
	}
}

func (e *Engine) namespace(p Pipeline, requested string) (string, error) {
	if e.cfg.Namespace != nil {
		return e.cfg.Namespace(p, requested)
	}
	if requested != "" {
		return "", fmt.Errorf("metadata.namespace %q is not allowed: this server decides where stages run", requested)
	}
	return p.Namespace, nil
}

// definition loads the build's stored spec with its values.
func (e *Engine) definition(p Pipeline, b Build) (*spec.Definition, error) {
	// The namespace is decided before rendering; the spec's own request is
	// read from an unrendered parse.
	requested := ""
	if d, err := spec.Parse(b.Spec); err == nil {
		requested = d.Namespace()
	}
	ns, err := e.stageNamespace(p, requested, false)
	if err != nil {
		return nil, err
	}
	return spec.Load(b.Spec, e.values(p, b, ns))
}

// stageNamespace is the namespace of a build's stages (KONTINUOUS_NAMESPACE
// and, on the kubernetes executor, where they run). The server's namespace
// policy (EngineConfig.Namespace) applies where a namespace is used: on an
// executor that runs stages in namespaces, and for deploy stages
// (deploy). Elsewhere, as for the local executor's command stages, a
// spec's metadata.namespace (every original Kontinuous spec has one) is
// only a name and does not fail the build.
func (e *Engine) stageNamespace(p Pipeline, requested string, deploy bool) (string, error) {
	ns, err := e.namespace(p, requested)
	if err != nil && !deploy && !e.namespaced() {
		return requested, nil
	}
	return ns, err
}

// namespaced reports whether the executor runs stages in namespaces.
func (e *Engine) namespaced() bool {
	n, ok := e.cfg.Executor.(NamespacedExecutor)
	return ok && n.RunsInNamespaces()
}

// prepare reads .pipeline.yml at the build's commit and lays out stages.
func (e *Engine) prepare(ctx context.Context, p Pipeline, b Build) (Build, error) {
	tok, err := e.ownerToken(ctx, p)
	if err != nil {
		return e.failBuild(ctx, p, b, err.Error())
	}
	// A flaky forge gets a few tries before the build fails.
	var f File
	backoff := time.Second
	for attempt := 1; ; attempt++ {
		f, err = e.scm(p).FileAt(ctx, tok, p.Owner, p.Repo, SpecPath, b.Commit)
		transient := errors.Is(err, ErrUpstream) || errors.Is(err, ErrRateLimited) || errors.Is(err, ErrUnavailable)
		if err == nil || !transient || attempt == 5 {
			break
		}
		e.log.Warn("reading the pipeline spec; will retry", "pipeline", p.Key(), "build", b.Number, "attempt", attempt, "error", err.Error())
		select {
		case <-ctx.Done():
			return b, ctx.Err()
		case <-time.After(backoff):
		}
		backoff *= 2
	}
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return e.failBuild(ctx, p, b, fmt.Sprintf("no %s at commit %s", SpecPath, b.Commit))
		}
		if errors.Is(err, ErrUnavailable) || ctx.Err() != nil {
			return b, err
		}
		return e.failBuild(ctx, p, b, "reading "+SpecPath+": "+PublicMessage(err))
	}
	b.Spec = f.Content
	def, err := e.definition(p, b)
	if err != nil {
		b2, uerr := e.cfg.Store.UpdateBuild(ctx, p.Owner, p.Repo, b.Number, func(nb *Build) error {
			nb.Spec = f.Content
			return nil
		})
		if uerr == nil {
			b = b2
		}
		return e.failBuild(ctx, p, b, "invalid "+SpecPath+": "+err.Error())
	}
	stages := make([]Stage, len(def.Spec.Template.Stages))
	for i, s := range def.Spec.Template.Stages {
		stages[i] = Stage{
			ID: fmt.Sprintf("%s-%d", b.ID, i+1), Name: s.Name, Type: s.Type, Index: i + 1,
			Params: s.Params, Labels: s.Labels, Status: StatusPending,
			Artifacts: s.Artifacts, Secrets: def.StageSecrets(i), Vars: def.StageVars(i),
		}
		if stages[i].Params == nil {
			stages[i].Params = map[string]any{}
		}
	}
	nb, err := e.updateRetry(ctx, p.Owner, p.Repo, b.Number, func(nb *Build) error {
		if nb.Status.Done() {
			return nil
		}
		nb.Spec = f.Content
		if cancelRequested(nb) {
			applyCancel(nb)
			return nil
		}
		nb.Start(stages, Now())
		return nil
	})
	if errors.Is(err, ErrTooLarge) {
		return e.failBuild(ctx, p, b, BuildTooLargeMessage)
	}
	return nb, err
}

// BuildTooLargeMessage is the message of a build whose record (its spec,
// stages, their params and vars) exceeds what the store accepts.
const BuildTooLargeMessage = "this build is too large to record: its " + SpecPath + " with its stages' params and vars exceeds the store's request size limit (about 1.5 MiB on etcd); keep large values out of the spec (vars shared by every stage count once)"

func (e *Engine) ownerToken(ctx context.Context, p Pipeline) (ForgeToken, error) {
	u, err := e.cfg.Store.GetUser(ctx, p.OwnerUserID)
	if err == nil && u.Token.Valid() {
		u.Token, err = FreshToken(ctx, e.scm(p), e.cfg.Store, u)
	}
	if errors.Is(err, ErrUnauthorized) {
		return ForgeToken{}, fmt.Errorf("the pipeline owner's forge connection is not usable: %w", err)
	}
	if err != nil || !u.Token.Valid() {
		return ForgeToken{}, fmt.Errorf("the pipeline owner's forge token is not available; its creator must log in again")
	}
	return u.Token, nil
}

func (e *Engine) failBuild(ctx context.Context, p Pipeline, b Build, msg string) (Build, error) {
	nb, err := e.advance(ctx, p.Owner, p.Repo, b.Number, func(nb *Build) error {
		nb.Fail(msg, Now())
		return nil
	})
	if err != nil {
		return b, err
	}
	if nb.Status == StatusFail {
		e.log.Info("build failed", "pipeline", p.Key(), "build", b.Number, "reason", msg)
	}
	return nb, nil
}

// wait pauses the build at stage i until someone with push approves it.
func (e *Engine) wait(ctx context.Context, p Pipeline, b Build, i int) (Build, error) {
	nb, err := e.advance(ctx, p.Owner, p.Repo, b.Number, func(nb *Build) error {
		nb.Wait(i, Now())
		return nil
	})
	if err == nil && nb.Status == StatusWaiting {
		e.postStatus(p, nb, nb.Stages[i], "pending", "waiting for approval")
	}
	return nb, err
}

// expireWait FAILs b's waiting stage once the stage's own timeout (spec
// `timeout` on a wait stage; none: it waits for as long as it takes) has
// passed since it began waiting. Any server's recovery sweep may do it:
// the update checks that the stage still waits, so an approval that came
// first wins.
func (e *Engine) expireWait(ctx context.Context, b Build) {
	i := b.CurrentStage
	if i < 0 || i >= len(b.Stages) || b.Stages[i].Status != StatusWaiting || b.Stages[i].Started == 0 {
		return
	}
	d, err := toSpecStage(b.Stages[i]).Timeout()
	if err != nil || d <= 0 || time.Since(time.Unix(0, b.Stages[i].Started)) < d {
		return
	}
	msg := "not approved within " + d.String()
	uctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	nb, err := e.updateRetry(uctx, b.Owner, b.Repo, b.Number, func(nb *Build) error {
		if nb.Status != StatusWaiting || nb.CurrentStage != i || i >= len(nb.Stages) || nb.Stages[i].Status != StatusWaiting {
			return errNoop
		}
		nb.EndStage(i, StatusFail, msg, Now())
		return nil
	})
	if err != nil {
		if !errors.Is(err, errNoop) && ctx.Err() == nil {
			e.log.Warn("ending a wait past its timeout", "pipeline", Key(b.Owner, b.Repo), "build", b.Number, "error", err.Error())
		}
		return
	}
	e.log.Info("wait stage timed out", "pipeline", Key(b.Owner, b.Repo), "build", b.Number, "stage", i+1)
	p, err := e.cfg.Store.GetPipeline(uctx, b.Owner, b.Repo)
	if err != nil {
		return
	}
	e.postStatus(p, nb, nb.Stages[i], "failure", msg)
	e.finish(uctx, p, nb)
}

// runStage runs stage i. bctx is canceled on build cancel; ctx is the
// engine's, for bookkeeping after a cancel.
func (e *Engine) runStage(bctx, ctx context.Context, p Pipeline, b Build, def *spec.Definition, i int) (Build, error) {
	st := b.Stages[i]
	if b.Fork && st.Type == spec.TypeDeploy {
		// A fork's code decides what a deploy would apply, with the
		// server's credentials: never, on any executor.
		return e.endStage(ctx, p, b, i, StatusFail, ForkDeployMessage, StageOutcome{})
	}
	ns, err := e.stageNamespace(p, def.Namespace(), st.Type == spec.TypeDeploy)
	if err != nil {
		return e.endStage(ctx, p, b, i, StatusFail, err.Error(), StageOutcome{})
	}
	b, err = e.advance(ctx, p.Owner, p.Repo, b.Number, func(nb *Build) error {
		nb.StartStage(i, Now())
		return nil
	})
	if err != nil {
		return b, err
	}
	if b.Status.Done() {
		return b, nil
	}
	st = b.Stages[i] // with this run's start
	e.postStatus(p, b, st, "pending", "running")

	env, names, secretValues, failMsg, err := e.stageEnv(ctx, p, b, st, ns)
	if err != nil {
		return b, err
	}
	if failMsg != "" {
		return e.endStage(ctx, p, b, i, StatusFail, failMsg, StageOutcome{})
	}
	timeout := e.cfg.StageTimeout
	if d, err := toSpecStage(st).Timeout(); err == nil && d > 0 {
		timeout = d
	}
	tok, err := e.ownerToken(ctx, p)
	if err != nil {
		return e.endStage(ctx, p, b, i, StatusFail, err.Error(), StageOutcome{})
	}
	ref := LogRef{Pipeline: p.Key(), Build: b.Number, Stage: st.Index}
	secretValues = append(secretValues, tok.AccessToken)
	lw, err := e.createLogRetry(ctx, ref)
	if err != nil {
		if ctx.Err() != nil {
			return b, err
		}
		return e.endStage(ctx, p, b, i, StatusFail, maskString("could not open the stage log: "+err.Error(), secretValues), StageOutcome{})
	}
	masked := NewMasker(lw, secretValues)
	jobStage, dropped := st, false
	if b.Fork {
		jobStage, dropped = forkStage(st)
	}
	job := StageJob{
		Owner: p.Owner, Repo: p.Repo, BuildNumber: b.Number, BuildID: b.ID,
		Commit: b.Commit, Branch: b.Branch, CloneURL: b.CloneURL, CloneToken: tok.AccessToken,
		Stage: jobStage, Env: env, SecretNames: names, Timeout: timeout, Namespace: ns,
		ServerURL: e.cfg.PublicURL,
	}
	job.CloneUser, job.CloneToken = e.scm(p).CloneCredentials(tok)
	var outcome StageOutcome
	var omu sync.Mutex
	report := func(o StageOutcome) {
		omu.Lock()
		outcome = o
		omu.Unlock()
		// Best effort: the final update below records it too.
		_, _ = e.cfg.Store.UpdateBuild(ctx, p.Owner, p.Repo, b.Number, func(nb *Build) error {
			applyOutcome(&nb.Stages[i], o)
			return nil
		})
	}
	fmt.Fprintf(masked, "[kontinuous] stage %d %q (%s) on %s, timeout %s\n", st.Index, st.Name, st.Type, e.cfg.Executor.Name(), timeout)
	if dropped {
		fmt.Fprint(masked, forkDependenciesLine)
	}
	runErr := e.cfg.Executor.RunStage(bctx, job, masked, report)
	status, msg := StatusSuccess, ""
	switch {
	case runErr == nil:
	case bctx.Err() != nil && ctx.Err() == nil && errors.Is(context.Cause(bctx), ErrTakenOver):
		// Another instance drives the build now: stop here and leave
		// the build's state to it.
		fmt.Fprintf(masked, "[kontinuous] another server instance took this build over; this one stopped the stage\n")
		masked.Close()
		lw.Close()
		return b, ErrTakenOver
	case bctx.Err() != nil && ctx.Err() == nil:
		status, msg = StatusCanceled, canceledMessage
	case ctx.Err() != nil:
		// The server is stopping: release the build so the next start
		// (or another instance) finishes it at once.
		fmt.Fprintf(masked, "[kontinuous] the server is stopping; stage interrupted\n")
		masked.Close()
		lw.Close()
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Second)
		defer cancel()
		// Best effort: if etcd is gone too, recovery waits for staleness.
		_, _ = e.cfg.Store.UpdateBuild(rctx, p.Owner, p.Repo, b.Number, func(nb *Build) error {
			nb.Release(e.instance)
			return nil
		})
		return b, ctx.Err()
	default:
		status, msg = StatusFail, runErr.Error()
	}
	if status == StatusCanceled {
		fmt.Fprintf(masked, "[kontinuous] stage stopped: %s\n", msg)
	} else if msg != "" {
		fmt.Fprintf(masked, "[kontinuous] stage %s: %s\n", strings.ToLower(string(status)), msg)
	} else {
		fmt.Fprintf(masked, "[kontinuous] stage succeeded\n")
	}
	masked.Close()
	lw.Close()
	omu.Lock()
	o := outcome
	omu.Unlock()
	return e.endStage(ctx, p, b, i, status, maskString(msg, secretValues), o)
}

// endStage records a stage's end; a failure or cancel ends the build. The
// write is retried until it succeeds or the engine stops: a transient
// store error must not leave the stage RUNNING. A build that ended
// meanwhile (canceled by another instance) is left as it is.
func (e *Engine) endStage(ctx context.Context, p Pipeline, b Build, i int, status Status, msg string, o StageOutcome) (Build, error) {
	var final Status
	var finalMsg string
	nb, err := e.updateRetry(ctx, p.Owner, p.Repo, b.Number, func(nb *Build) error {
		if nb.Status.Done() || i >= len(nb.Stages) {
			return errNoop
		}
		applyOutcome(&nb.Stages[i], o)
		final, finalMsg = nb.EndStage(i, status, msg, Now())
		return nil
	})
	if errors.Is(err, errNoop) {
		return e.cfg.Store.GetBuild(ctx, p.Owner, p.Repo, b.Number)
	}
	if err != nil {
		return b, err
	}
	state := map[Status]string{StatusSuccess: "success", StatusFail: "failure", StatusCanceled: "failure"}[final]
	desc := finalMsg
	if desc == "" {
		desc = strings.ToLower(string(final))
	}
	e.postStatus(p, nb, nb.Stages[i], state, desc)
	return nb, nil
}

// finish releases a build's executor resources and notifies.
func (e *Engine) finish(ctx context.Context, p Pipeline, b Build) {
	if !b.Status.Done() {
		return
	}
	// One end of a build (a re-run from a stage ends it again, later).
	end := buildKey(p.Owner, p.Repo, b.Number) + "@" + strconv.FormatInt(b.Finished, 10)
	e.mu.Lock()
	if e.finished[end] {
		e.mu.Unlock()
		return
	}
	if e.finished == nil || len(e.finished) >= 10000 {
		e.finished = map[string]bool{} // bounded; duplicates that far apart do not meet
	}
	e.finished[end] = true
	e.mu.Unlock()
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := e.cfg.Executor.CleanupBuild(cctx, p.Owner, p.Repo, b.Number); err != nil {
		e.log.Warn("cleanup build", "pipeline", p.Key(), "build", b.Number, "error", err.Error())
	}
	e.log.Info("build finished", "pipeline", p.Key(), "build", b.Number, "status", string(b.Status))
	e.notify(cctx, p, b)
}

// Continue approves the WAITING wait stage index and resumes the build.
func (e *Engine) Continue(ctx context.Context, owner, repo string, number, index int) (Build, error) {
	b, err := e.cfg.Store.UpdateBuild(ctx, owner, repo, number, func(b *Build) error {
		return b.Approve(index, Now())
	})
	if err != nil {
		return b, err
	}
	if p, err := e.cfg.Store.GetPipeline(ctx, owner, repo); err == nil {
		e.postStatus(p, b, b.Stages[stagePos(&b, index)], "success", "approved")
	}
	e.Enqueue(owner, repo, number)
	return b, nil
}

// defaultCancelWait is EngineConfig.CancelWait's default.
const defaultCancelWait = 10 * time.Second

// Cancel ends a build. A build no live instance drives (queued, waiting,
// or whose runner is gone: none or a stale heartbeat) is ended at once:
// its current stages become CANCELED, their logs end and their commit
// statuses say so. A build a live runner drives is marked for cancel; the
// runner (this instance, or another through the watch) stops the running
// stage and ends the build CANCELED; Cancel waits a little for that and
// returns the build as it then is. Should the runner die first, the
// recovery sweep of any instance ends the build.
func (e *Engine) Cancel(ctx context.Context, owner, repo string, number int) (Build, error) {
	var now bool
	var changed []int
	b, err := e.cfg.Store.UpdateBuild(ctx, owner, repo, number, func(b *Build) error {
		var err error
		now, changed, err = b.RequestCancel(e.runnerLive(b), Now())
		return err
	})
	if err != nil {
		return b, err
	}
	// A stage this instance runs stops now (also when its heart was late
	// and the build was ended above).
	e.mu.Lock()
	c, ok := e.cancels[buildKey(owner, repo, number)]
	e.mu.Unlock()
	if ok {
		c(ErrBuildCanceled)
	}
	if now {
		e.afterCancel(ctx, b, changed)
		return b, nil
	}
	wctx, cancel := context.WithTimeout(ctx, e.cfg.CancelWait)
	defer cancel()
	// The watch ends with the build's end or the wait's: either way b
	// is the latest version seen.
	_ = e.cfg.Store.WatchBuild(wctx, owner, repo, number, func(nb Build) bool {
		b = nb
		return !nb.Status.Done()
	})
	return b, nil
}

// CancelPipeline cancels every unfinished build of p (before deletion).
func (e *Engine) CancelPipeline(ctx context.Context, p Pipeline) {
	builds, err := e.cfg.Store.ActiveBuilds(ctx)
	if err != nil {
		return
	}
	for _, b := range builds {
		if Key(b.Owner, b.Repo) == p.Key() {
			// Errors are ignored: the pipeline is being deleted anyway.
			_, _ = e.Cancel(ctx, p.Owner, p.Repo, b.Number)
		}
	}
}

// RunFrom re-runs a finished build from stage index on: later stages go
// back to PENDING and the build runs again.
func (e *Engine) RunFrom(ctx context.Context, owner, repo string, number, index int) (Build, error) {
	b, err := e.cfg.Store.UpdateBuild(ctx, owner, repo, number, func(b *Build) error {
		return b.RunFrom(index)
	})
	if err != nil {
		return b, err
	}
	e.Enqueue(owner, repo, number)
	return b, nil
}

// Trigger creates a build and queues it. For deliveries already seen it
// returns the original build and an error wrapping ErrConflict.
func (e *Engine) Trigger(ctx context.Context, p Pipeline, b Build) (Build, error) {
	b.Owner, b.Repo = p.Owner, p.Repo
	b.Status = StatusPending
	b.Created = Now()
	b.CloneURL = p.CloneURL
	b.Stages = []Stage{}
	nb, err := e.cfg.Store.CreateBuild(ctx, p.Owner, p.Repo, b)
	if err != nil {
		return nb, err
	}
	e.log.Info("build queued", "pipeline", p.Key(), "build", nb.Number, "event", nb.Event, "commit", nb.Commit)
	e.Enqueue(p.Owner, p.Repo, nb.Number)
	return nb, nil
}

// postStatus has the notifier post a commit status for stage st, after
// the build's earlier ones; it never blocks the build.
func (e *Engine) postStatus(p Pipeline, b Build, st Stage, state, desc string) {
	if b.Commit == "" {
		return
	}
	if len(desc) > 140 {
		desc = desc[:137] + "..."
	}
	// The contract: the stage name is the context.
	cs := CommitStatus{State: state, Context: st.Name, Description: desc,
		TargetURL: fmt.Sprintf("%s/api/v1/pipelines/%s/%s/builds/%d", e.cfg.PublicURL, p.Owner, p.Repo, b.Number)}
	post := func(ctx context.Context) error {
		tok, err := e.ownerToken(ctx, p)
		if err != nil {
			return err
		}
		return e.scm(p).SetCommitStatus(ctx, tok, p.Owner, p.Repo, b.Commit, cs)
	}
	base := e.ctx
	if base == nil {
		base = context.Background()
	}
	e.cfg.Notifier.CommitStatus(base, buildKey(p.Owner, p.Repo, b.Number), post)
}

// notify sends the Slack notification a spec asks for at build end.
func (e *Engine) notify(ctx context.Context, p Pipeline, b Build) {
	if len(b.Spec) == 0 {
		return
	}
	def, err := e.definition(p, b)
	if err != nil {
		return
	}
	notifs := def.Spec.Template.Notif
	defaultSecrets := def.Spec.Template.Secrets
	if b.Fork {
		// A fork's spec is not trusted: its notifications come from the
		// pipeline's stored settings only, never from its spec's fields
		// or the secrets it names.
		notifs, defaultSecrets = storedNotifs(p), nil
	}
	for _, n := range notifs {
		if n.Type != spec.NotifSlack {
			continue
		}
		keys := map[string]string{"url": "slackurl", "channel": "slackchannel", "username": "slackuser"}
		for k, v := range n.Metadata {
			keys[k] = v
		}
		names := n.Secrets
		if len(names) == 0 {
			names = defaultSecrets
		}
		vals := map[string]string{}
		for _, name := range names {
			set, err := e.cfg.Store.GetSecret(ctx, p.Owner, p.Repo, name)
			if err != nil {
				continue
			}
			for k, v := range set.Data {
				vals[k] = v
			}
		}
		url := vals[keys["url"]]
		if url == "" {
			e.log.Warn("slack notification skipped: no slackurl secret", "pipeline", p.Key())
			continue
		}
		msg := SlackMessage{
			Text:    fmt.Sprintf("Build %d of %s/%s (%s, %.12s) ended: %s", b.Number, p.Owner, p.Repo, b.Branch, b.Commit, b.Status),
			Channel: vals[keys["channel"]], Username: vals[keys["username"]],
		}
		if err := e.cfg.Notifier.Slack(ctx, url, msg); err != nil {
			e.log.Warn("slack notification failed", "pipeline", p.Key(), "error", err.Error())
		}
	}
}
