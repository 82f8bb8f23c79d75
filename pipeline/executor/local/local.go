// Package local runs stages as processes on the server's own machine: the
// "local" executor. It implements pipeline.Executor.
//
// Each build gets a workspace, <WorkDir>/<owner>/<repo>/<build>/, holding
// src (the checkout at the build's commit, cloned on the build's first
// stage), home (the HOME of its commands) and tmp (their TMPDIR).
// CleanupBuild removes it.
//
// Stage types:
//
//   - command: argv = command + args, run without a shell (write
//     ["sh", "-c", "..."] to get one) in working_dir under src, with the
//     stage's environment only: job.Env plus PATH, HOME and TMPDIR. The
//     server's own environment is never passed on. The command and the
//     processes it starts form one process group, which is killed (SIGTERM,
//     then SIGKILL after a grace period) when the stage is canceled or times
//     out, and when the command exits. image and dependencies are ignored:
//     the log says so.
//   - docker_build, docker_publish: run the docker CLI against the engine at
//     Config.DockerHost (default unix:///var/run/docker.sock); the stage
//     fails saying so when no engine answers there.
//   - deploy: renders deploy_file with the stage's environment and runs
//     kubectl apply with Config.Kubeconfig (default ~/.kube/config); the
//     stage fails saying so when there is none.
//   - wait: handled by the engine; RunStage refuses it.
package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kontinuous/kontinuous/pipeline"
)

// DefaultPath is the PATH given to commands when Config.Path is empty.
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Config configures an Executor.
type Config struct {
	// WorkDir holds the build workspaces (<data-dir>/workspaces). Required.
	WorkDir string
	// DefaultTimeout bounds a stage whose job has no Timeout and whose spec
	// sets none; default 1h.
	DefaultTimeout time.Duration
	// Logger receives the executor's own events (never secrets); default
	// discards them.
	Logger *slog.Logger
	// DockerHost is the Docker engine for docker stages; default
	// unix:///var/run/docker.sock.
	DockerHost string
	// Kubeconfig is the kubeconfig file for deploy stages; default
	// ~/.kube/config of the user running the server.
	Kubeconfig string
	// Path is the PATH given to commands (and where docker and kubectl are
	// looked up); default DefaultPath.
	Path string
	// KillGrace is how long a canceled command has between SIGTERM and
	// SIGKILL; default 5s.
	KillGrace time.Duration
	// Sandbox, when set, runs command stages in it (NewSandbox); the
	// parent of WorkDir (the server's data directory) is never shown to
	// them. Nil runs them on the host as the server's user: isolation off,
	// a stage can then read the server's environment and data directory.
	Sandbox *Sandbox
	// Hide are more files and directories of the server that sandboxed
	// stages must not see even where a shown directory holds them (/etc,
	// /opt): its TLS and etcd keys, its kubeconfig. A file is shown empty,
	// a directory as an empty tmpfs.
	Hide []string
	// SandboxUnavailable, when set and Sandbox is nil, makes every command
	// stage fail at once with this error (isolation is required but this
	// host cannot provide it).
	SandboxUnavailable error
}

// Executor is the local executor.
type Executor struct {
	cfg Config
	log *slog.Logger

	mu    sync.Mutex
	locks map[string]chan struct{} // per-build workspace locks
}

var _ pipeline.Executor = (*Executor)(nil)

// New returns an executor with cfg's defaults filled in.
func New(cfg Config) *Executor {
	if cfg.DefaultTimeout <= 0 {
		cfg.DefaultTimeout = time.Hour
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.DockerHost == "" {
		cfg.DockerHost = "unix:///var/run/docker.sock"
	}
	if cfg.Path == "" {
		cfg.Path = DefaultPath
	}
	if cfg.KillGrace <= 0 {
		cfg.KillGrace = 5 * time.Second
	}
	if abs, err := filepath.Abs(cfg.WorkDir); err == nil && cfg.WorkDir != "" {
		cfg.WorkDir = abs // the sandbox binds absolute paths
	}
	return &Executor{cfg: cfg, log: cfg.Logger, locks: map[string]chan struct{}{}}
}

// Name is "local".
func (x *Executor) Name() string { return "local" }

// Resumable is false: a stage's process does not outlive the server.
func (x *Executor) Resumable() bool { return false }

// timeoutError is the error of a stage that ran out of time.
type timeoutError struct{ d time.Duration }

func (e *timeoutError) Error() string { return "stage timed out after " + e.d.String() }

// Unwrap makes errors.Is(err, context.DeadlineExceeded) true.
func (e *timeoutError) Unwrap() error { return context.DeadlineExceeded }

// stopped returns the error of a stage whose ctx ended: a timeout, or the
// cancellation (wrapping ctx.Err()).
func stopped(ctx context.Context) error {
	var te *timeoutError
	if cause := context.Cause(ctx); errors.As(cause, &te) {
		return te
	}
	return fmt.Errorf("stage canceled: %w", ctx.Err())
}

// RunStage runs one stage and returns nil when it succeeded. Errors say why
// it failed and carry no secrets: "command exited with status 2", "stage
// timed out after 10m0s" (wraps context.DeadlineExceeded), "stage
// canceled: context canceled" (wraps ctx.Err()), or a pipeline error such
// as pipeline.Invalid("working_dir", ...) or a pipeline.ErrNotImplemented
// for a Docker engine or cluster that is not there.
func (x *Executor) RunStage(ctx context.Context, job pipeline.StageJob, log io.Writer, report func(pipeline.StageOutcome)) error {
	if report == nil {
		report = func(pipeline.StageOutcome) {}
	}
	st := job.Stage
	switch st.Type {
	case "command", "docker_build", "docker_publish", "deploy":
	case "wait":
		return pipeline.Errorf(pipeline.ErrInvalid, "wait stages are run by the engine, not by the local executor")
	default:
		return pipeline.Invalid("type", "unknown stage type %q", st.Type)
	}
	timeout := job.Timeout
	if timeout <= 0 {
		t, err := specStage(st).Timeout()
		if err != nil {
			return invalidSpec(err)
		}
		timeout = t
	}
	if timeout <= 0 {
		timeout = x.cfg.DefaultTimeout
	}
	ctx, cancel := context.WithTimeoutCause(ctx, timeout, &timeoutError{timeout})
	defer cancel()

	attrs := []any{"owner", job.Owner, "repo", job.Repo, "build", job.BuildNumber, "stage", st.Index, "type", st.Type}
	x.log.Info("stage starting", attrs...)
	err := x.run(ctx, job, log, report)
	if err != nil {
		x.log.Info("stage failed", append(attrs, "error", err.Error())...)
	} else {
		x.log.Info("stage succeeded", attrs...)
	}
	return err
}

// tools are the programs and files a stage type needs from the server.
type tools struct {
	docker, kubectl, kubeconfig string
}

// tools checks, before any clone, that the server can run the stage type.
func (x *Executor) tools(ctx context.Context, typ string) (tools, error) {
	var t tools
	var err error
	switch typ {
	case "command":
		if x.cfg.Sandbox == nil && x.cfg.SandboxUnavailable != nil {
			err = pipeline.Errorf(pipeline.ErrNotImplemented, "%v", x.cfg.SandboxUnavailable)
		}
	case "docker_build", "docker_publish":
		t.docker, err = x.dockerCheck(ctx, typ)
	case "deploy":
		if t.kubeconfig, err = x.kubeconfig(); err != nil {
			break
		}
		if t.kubectl, err = lookPath("kubectl", "", x.cfg.Path); err != nil {
			err = pipeline.Errorf(pipeline.ErrNotImplemented, "deploy needs the kubectl command; it is not installed on the server")
		}
	}
	return t, err
}

func (x *Executor) run(ctx context.Context, job pipeline.StageJob, log io.Writer, report func(pipeline.StageOutcome)) error {
	t, err := x.tools(ctx, job.Stage.Type)
	if err != nil {
		return err
	}
	ws, err := x.workspace(ctx, job, log)
	if err != nil {
		return err
	}
	switch job.Stage.Type {
	case "command":
		return x.runCommand(ctx, job, ws, log)
	case "docker_build":
		return x.runDockerBuild(ctx, job, t.docker, ws, log, report)
	case "docker_publish":
		return x.runDockerPublish(ctx, job, t.docker, ws, log, report)
	default: // deploy
		return x.runDeploy(ctx, job, t, ws, log)
	}
}

// logf writes one line of the executor's own to a stage's log.
func logf(w io.Writer, format string, args ...any) {
	// The log is best effort: a failing log must not fail the stage.
	_, _ = fmt.Fprintf(w, "[kontinuous] "+format+"\n", args...)
}

var namePart = regexp.MustCompile(`^[A-Za-z0-9._-]{1,100}$`)

// buildDir returns the workspace of one build.
func (x *Executor) buildDir(owner, repo string, build int) (string, error) {
	if x.cfg.WorkDir == "" {
		return "", errors.New("local executor: no WorkDir configured")
	}
	for field, v := range map[string]string{"owner": owner, "repo": repo} {
		if !namePart.MatchString(v) || v == "." || v == ".." {
			return "", pipeline.Invalid(field, "%q is not a valid name", v)
		}
	}
	if build < 1 {
		return "", pipeline.Invalid("build", "build number %d is not positive", build)
	}
	return filepath.Join(x.cfg.WorkDir, strings.ToLower(owner), strings.ToLower(repo), strconv.Itoa(build)), nil
}

// lock takes the workspace lock of one build, or fails when ctx ends.
func (x *Executor) lock(ctx context.Context, dir string) (unlock func(), err error) {
	x.mu.Lock()
	l := x.locks[dir]
	if l == nil {
		l = make(chan struct{}, 1)
		x.locks[dir] = l
	}
	x.mu.Unlock()
	select {
	case l <- struct{}{}:
		return func() { <-l }, nil
	case <-ctx.Done():
		return nil, stopped(ctx)
	}
}

// CleanupBuild removes a build's workspace. A missing one is not an error.
func (x *Executor) CleanupBuild(ctx context.Context, owner, repo string, build int) error {
	dir, err := x.buildDir(owner, repo, build)
	if err != nil {
		return err
	}
	unlock, err := x.lock(ctx, dir)
	if err != nil {
		return err
	}
	defer unlock()
	defer func() {
		x.mu.Lock()
		delete(x.locks, dir)
		x.mu.Unlock()
	}()
	if err := removeAll(dir); err != nil {
		return fmt.Errorf("local executor: remove workspace of %s/%s build %d: %w", owner, repo, build, err)
	}
	return nil
}

// removeAll removes dir, also when a build left read-only directories in
// it (Go's module cache does).
func removeAll(dir string) error {
	if err := os.RemoveAll(dir); err == nil {
		return nil
	}
	// Make every directory writable, then try again.
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error { // errors surface in the second RemoveAll
		if err == nil && d.IsDir() {
			_ = os.Chmod(p, 0o700)
		}
		return nil
	})
	return os.RemoveAll(dir)
}
