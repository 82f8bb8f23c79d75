package local

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/spec"
)

// lineLog is a stage log that tests can read while the stage writes.
type lineLog struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	watch string
	seen  chan struct{}
}

// newLineLog returns a log; seen is closed once watch has been written.
func newLineLog(watch string) *lineLog {
	return &lineLog{watch: watch, seen: make(chan struct{})}
}

func (l *lineLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	if l.watch != "" && strings.Contains(l.buf.String(), l.watch) {
		l.watch = ""
		close(l.seen)
	}
	return len(p), nil
}

func (l *lineLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// output is the log without the executor's own lines.
func (l *lineLog) output() []string {
	var out []string
	for line := range strings.Lines(l.String()) {
		if !strings.HasPrefix(line, "[kontinuous] ") {
			out = append(out, strings.TrimSuffix(line, "\n"))
		}
	}
	return out
}

func newExecutor(t *testing.T, cfg Config) *Executor {
	t.Helper()
	if cfg.WorkDir == "" {
		cfg.WorkDir = t.TempDir()
	}
	if cfg.KillGrace == 0 {
		cfg.KillGrace = 500 * time.Millisecond
	}
	return New(cfg)
}

func commandJob(s *gitServer, build int, command ...string) pipeline.StageJob {
	return pipeline.StageJob{
		Owner: "acme", Repo: "app", BuildNumber: build, Commit: s.head, Branch: "main",
		CloneURL: s.cloneURL, CloneUser: "x-access-token", CloneToken: s.token,
		Stage: pipeline.Stage{Name: "test", Type: "command", Index: 1, Params: map[string]any{"command": toAny(command)}},
		Env:   map[string]string{"KONTINUOUS_COMMIT": s.head, "KONTINUOUS_BUILD_ID": strconv.Itoa(build)},
	}
}

// toAny gives a command list the shape the spec decodes it into.
func toAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

func TestCommandStageWritesOutputLinesInOrder(t *testing.T) {
	s := newGitServer(t)
	x := newExecutor(t, Config{})
	log := newLineLog("")
	job := commandJob(s, 1, "sh", "-c", `for i in 1 2 3; do echo out$i; echo err$i >&2; done; printf 'no newline'`)
	if err := x.RunStage(t.Context(), job, log, nil); err != nil {
		t.Fatalf("RunStage: %v\nlog:\n%s", err, log)
	}
	want := []string{"out1", "err1", "out2", "err2", "out3", "err3", "no newline"}
	if got := log.output(); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("output %q, want %q", got, want)
	}
}

func TestCommandStageRunsAtTheBuildsCommit(t *testing.T) {
	s := newGitServer(t)
	x := newExecutor(t, Config{})
	for i, tc := range []struct {
		name, commit, want string
	}{
		{"older commit than the branch head", s.first, "v1"},
		{"branch head", s.head, "v2"},
		{"pull request head on no branch", s.pull, "from a fork"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			job := commandJob(s, 1, "cat", "hello.txt")
			job.BuildNumber = i + 1 // a build per case
			job.Commit = tc.commit
			log := newLineLog("")
			if err := x.RunStage(t.Context(), job, log, nil); err != nil {
				t.Fatalf("RunStage: %v\nlog:\n%s", err, log)
			}
			if got := log.output(); len(got) != 1 || got[0] != tc.want {
				t.Errorf("hello.txt = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestCommandStageFailsWithTheExitStatus(t *testing.T) {
	s := newGitServer(t)
	x := newExecutor(t, Config{})
	err := x.RunStage(t.Context(), commandJob(s, 1, "sh", "-c", "echo failing; exit 3"), newLineLog(""), nil)
	if err == nil || err.Error() != "command exited with status 3" {
		t.Errorf("err = %v, want command exited with status 3", err)
	}
}

func TestCommandNotFoundIsAClearError(t *testing.T) {
	s := newGitServer(t)
	x := newExecutor(t, Config{})
	err := x.RunStage(t.Context(), commandJob(s, 1, "no-such-command-kx"), newLineLog(""), nil)
	if !errors.Is(err, pipeline.ErrInvalid) || !strings.Contains(err.Error(), "no-such-command-kx: command not found") {
		t.Errorf("err = %v", err)
	}
}

// alive reports whether pid runs (a zombie does not count).
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	_, rest, _ := strings.Cut(string(stat), ") ")
	return !strings.HasPrefix(rest, "Z")
}

// gone waits until pid has died (a killed process may take a moment).
func gone(pid int) bool {
	for range 100 {
		if !alive(pid) {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

// childPid reads the pid a stage's command wrote to its TMPDIR.
func childPid(t *testing.T, x *Executor, build int) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(x.cfg.WorkDir, "acme", "app", strconv.Itoa(build), "tmp", "child.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// precloned runs a first stage of build so that later stages of it do not
// spend their time cloning.
func precloned(t *testing.T, x *Executor, s *gitServer, build int) {
	t.Helper()
	if err := x.RunStage(t.Context(), commandJob(s, build, "true"), newLineLog(""), nil); err != nil {
		t.Fatal(err)
	}
}

func TestStageTimeoutKillsTheWholeProcessGroup(t *testing.T) {
	s := newGitServer(t)
	x := newExecutor(t, Config{})
	for _, tc := range []struct {
		name   string
		script string
	}{
		{"command and its child", `sleep 30 & echo $! > "$TMPDIR/child.pid"; echo started; wait`},
		{"command ignoring SIGTERM", `trap "" TERM; sleep 30 & echo $! > "$TMPDIR/child.pid"; echo started; wait`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			build := len(tc.name)
			precloned(t, x, s, build)
			job := commandJob(s, build, "sh", "-c", tc.script)
			job.Timeout = time.Second
			start := time.Now()
			err := x.RunStage(t.Context(), job, newLineLog(""), nil)
			if err == nil || err.Error() != "stage timed out after 1s" || !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("err = %v, want stage timed out after 1s", err)
			}
			if d := time.Since(start); d > 20*time.Second {
				t.Errorf("RunStage returned after %s: it waited for sleep 30", d)
			}
			if pid := childPid(t, x, build); !gone(pid) {
				t.Errorf("child %d of the command survived the timeout", pid)
			}
		})
	}
}

func TestCanceledStageStopsAndWrapsTheContextError(t *testing.T) {
	s := newGitServer(t)
	x := newExecutor(t, Config{})
	ctx, cancel := context.WithCancel(t.Context())
	log := newLineLog("\nstarted\n")
	go func() {
		<-log.seen
		cancel()
	}()
	job := commandJob(s, 1, "sh", "-c", `sleep 30 & echo $! > "$TMPDIR/child.pid"; echo started; wait`)
	err := x.RunStage(ctx, job, log, nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if pid := childPid(t, x, 1); !gone(pid) {
		t.Errorf("child %d survived the cancellation", pid)
	}
}

func TestLeftoverBackgroundProcessesDieWithTheCommand(t *testing.T) {
	s := newGitServer(t)
	x := newExecutor(t, Config{})
	job := commandJob(s, 1, "sh", "-c", `sleep 30 > /dev/null 2>&1 & echo $! > "$TMPDIR/child.pid"; echo done`)
	if err := x.RunStage(t.Context(), job, newLineLog(""), nil); err != nil {
		t.Fatal(err)
	}
	if pid := childPid(t, x, 1); !gone(pid) {
		t.Errorf("background child %d outlived its stage", pid)
	}
}

func TestCommandSeesTheStageEnvironmentOnly(t *testing.T) {
	t.Setenv("KONTINUOUS_TEST_SERVER_CANARY", "server-secret-value")
	s := newGitServer(t)
	x := newExecutor(t, Config{})
	job := commandJob(s, 7, "env")
	job.Env["MY_VAR"] = "my value"
	job.Env["API_TOKEN"] = "a secret of the pipeline"
	log := newLineLog("")
	if err := x.RunStage(t.Context(), job, log, nil); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, l := range log.output() {
		k, v, _ := strings.Cut(l, "=")
		env[k] = v
	}
	ws := filepath.Join(x.cfg.WorkDir, "acme", "app", "7")
	for k, want := range map[string]string{
		"KONTINUOUS_COMMIT": s.head, "KONTINUOUS_BUILD_ID": "7", "MY_VAR": "my value",
		"API_TOKEN": "a secret of the pipeline", "PATH": DefaultPath,
		"HOME": filepath.Join(ws, "home"), "TMPDIR": filepath.Join(ws, "tmp"),
	} {
		if env[k] != want {
			t.Errorf("%s = %q, want %q", k, env[k], want)
		}
	}
	if _, ok := env["KONTINUOUS_TEST_SERVER_CANARY"]; ok || strings.Contains(log.String(), "server-secret-value") {
		t.Error("the server's environment reached the command")
	}
	if len(env) != 7 {
		t.Errorf("unexpected variables: %v", env)
	}
}

func TestWorkingDir(t *testing.T) {
	s := newGitServer(t)
	x := newExecutor(t, Config{})
	src := filepath.Join(x.cfg.WorkDir, "acme", "app", "1", "src")
	for _, tc := range []struct {
		dir     string
		command []string
		want    string // the output line, or the error
	}{
		{"", []string{"pwd"}, src},
		{"sub/dir", []string{"./script.sh"}, "script ran in " + filepath.Join(src, "sub", "dir")},
		{"../..", []string{"pwd"}, `working_dir must stay inside the repository, not "../.."`},
		{"sub/../../x", []string{"pwd"}, `working_dir must stay inside the repository, not "sub/../../x"`},
		{"/etc", []string{"pwd"}, `working_dir: "/etc" must be a path inside the repository`},
		{"escape", []string{"pwd"}, `working_dir: "escape" must be a path inside the repository`},
		{"missing", []string{"pwd"}, `working_dir: "missing" does not exist in the repository`},
	} {
		t.Run(tc.dir, func(t *testing.T) {
			job := commandJob(s, 1, tc.command...)
			job.Stage.Params["working_dir"] = tc.dir
			log := newLineLog("")
			err := x.RunStage(t.Context(), job, log, nil)
			if strings.Contains(tc.want, "working_dir") {
				if !errors.Is(err, pipeline.ErrInvalid) || !strings.HasSuffix(err.Error(), tc.want) {
					t.Errorf("err = %v, want %s", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatalf("RunStage: %v\n%s", err, log)
			}
			if got := log.output(); len(got) != 1 || got[0] != tc.want {
				t.Errorf("output %q, want %q", got, tc.want)
			}
		})
	}
}

func TestImageIsIgnoredAndTheLogSaysSo(t *testing.T) {
	s := newGitServer(t)
	x := newExecutor(t, Config{})
	job := commandJob(s, 1, "true")
	job.Stage.Params["image"] = "golang:1.26"
	log := newLineLog("")
	if err := x.RunStage(t.Context(), job, log, nil); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(log.String(), "[kontinuous] image golang:1.26 is ignored") {
		t.Errorf("log:\n%s", log)
	}
}

func TestCloneWithWrongTokenFailsWithoutShowingIt(t *testing.T) {
	s := newGitServer(t)
	x := newExecutor(t, Config{})
	job := commandJob(s, 1, "true")
	job.CloneToken = "ghs_wrong_token_0987654321"
	log := newLineLog("")
	err := x.RunStage(t.Context(), job, log, nil)
	if !errors.Is(err, pipeline.ErrUnauthorized) || !strings.Contains(err.Error(), "refused the pipeline owner's token") {
		t.Fatalf("err = %v", err)
	}
	for _, tok := range []string{job.CloneToken, s.token} {
		if strings.Contains(err.Error(), tok) || strings.Contains(log.String(), tok) {
			t.Errorf("a token was shown: %v\n%s", err, log)
		}
	}
	if _, err := os.Stat(filepath.Join(x.cfg.WorkDir, "acme", "app", "1", "src")); err == nil {
		t.Error("a failed clone left a checkout behind")
	}
	// The next stage of the build tries again and, with the right token, works.
	job.CloneToken = s.token
	if err := x.RunStage(t.Context(), job, newLineLog(""), nil); err != nil {
		t.Errorf("retry: %v", err)
	}
}

func TestCloneOfAMissingCommitFails(t *testing.T) {
	s := newGitServer(t)
	x := newExecutor(t, Config{})
	job := commandJob(s, 1, "true")
	job.Commit = strings.Repeat("ab", 20)
	err := x.RunStage(t.Context(), job, newLineLog(""), nil)
	if !errors.Is(err, pipeline.ErrNotFound) || !strings.Contains(err.Error(), "commit "+job.Commit+" not found") {
		t.Errorf("err = %v", err)
	}
}

func TestWorkspaceIsClonedOncePerBuildAndRemovedAtCleanup(t *testing.T) {
	s := newGitServer(t)
	x := newExecutor(t, Config{})
	// Two first stages at once: one clone, both see it.
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range errs {
		wg.Go(func() {
			errs[i] = x.RunStage(t.Context(), commandJob(s, 1, "sh", "-c", fmt.Sprintf("touch marker%d", i)), newLineLog(""), nil)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	log := newLineLog("")
	if err := x.RunStage(t.Context(), commandJob(s, 1, "ls", "marker0", "marker1"), log, nil); err != nil {
		t.Fatalf("a later stage does not see the earlier stages' files: %v\n%s", err, log)
	}
	if strings.Contains(log.String(), "cloning") {
		t.Error("a later stage cloned again")
	}
	if err := x.CleanupBuild(t.Context(), "acme", "app", 1); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(x.cfg.WorkDir, "acme", "app", "1")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("workspace still there: %v", err)
	}
}

func TestCleanupRemovesReadOnlyDirectories(t *testing.T) {
	s := newGitServer(t)
	x := newExecutor(t, Config{})
	job := commandJob(s, 1, "sh", "-c", `mkdir -p "$HOME/cache/mod" && touch "$HOME/cache/mod/f" && chmod -R a-w "$HOME/cache"`)
	if err := x.RunStage(t.Context(), job, newLineLog(""), nil); err != nil {
		t.Fatal(err)
	}
	if err := x.CleanupBuild(t.Context(), "acme", "app", 1); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(x.cfg.WorkDir, "acme", "app", "1")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("workspace still there: %v", err)
	}
}

func TestDockerStagesWithoutAnEngineSaySo(t *testing.T) {
	s := newGitServer(t)
	sock := filepath.Join(t.TempDir(), "docker.sock")
	x := newExecutor(t, Config{DockerHost: "unix://" + sock})
	for _, typ := range []string{"docker_build", "docker_publish"} {
		t.Run(typ, func(t *testing.T) {
			job := commandJob(s, 1)
			job.Stage.Type = typ
			job.Stage.Params = map[string]any{"external_image_name": "acme/app"}
			err := x.RunStage(t.Context(), job, newLineLog(""), nil)
			want := typ + " needs a Docker engine; none is reachable at unix://" + sock
			if !errors.Is(err, pipeline.ErrNotImplemented) || err.Error() != want {
				t.Errorf("err = %v, want %s", err, want)
			}
		})
	}
}

// The default Docker engine is the local socket, and a docker stage goes
// to the configured engine: checked without touching this machine's own
// socket (the stage runs against a socket path that does not exist).
func TestDefaultDockerHostIsTheLocalSocket(t *testing.T) {
	if got := newExecutor(t, Config{}).cfg.DockerHost; got != "unix:///var/run/docker.sock" {
		t.Fatalf("default DockerHost = %q, want unix:///var/run/docker.sock", got)
	}
	s := newGitServer(t)
	missing := "unix://" + filepath.Join(t.TempDir(), "no", "docker.sock")
	x := newExecutor(t, Config{DockerHost: missing})
	job := commandJob(s, 1)
	job.Stage.Type = "docker_build"
	err := x.RunStage(t.Context(), job, newLineLog(""), nil)
	if want := "docker_build needs a Docker engine; none is reachable at " + missing; err == nil || err.Error() != want {
		t.Errorf("err = %v, want %s", err, want)
	}
}

func TestDockerArgv(t *testing.T) {
	src := t.TempDir()
	for _, p := range []string{"Dockerfile", "build/Dockerfile.prod"} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(src, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(src, p), []byte("FROM scratch\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	job := pipeline.StageJob{Owner: "Acme", Repo: "App", Commit: "ABC123", Env: map[string]string{}}
	if got := internalImage(job); got != "acme/app:abc123" {
		t.Errorf("image without registry = %q", got)
	}
	job.Env["KONTINUOUS_INTERNAL_REGISTRY"] = "http://registry.local:5000/"
	image := internalImage(job)
	if image != "registry.local:5000/acme/app:abc123" {
		t.Errorf("image with registry = %q", image)
	}
	for _, tc := range []struct {
		name   string
		params spec.DockerBuildParams
		want   string
	}{
		{"defaults", spec.DockerBuildParams{}, "docker build -t " + image + " -f Dockerfile ."},
		{"path and name", spec.DockerBuildParams{DockerfilePath: "build", DockerfileName: "Dockerfile.prod"}, "docker build -t " + image + " -f build/Dockerfile.prod build"},
		{"missing dockerfile", spec.DockerBuildParams{DockerfileName: "Nope"}, `dockerfile_name: "Nope" does not exist in the repository`},
		{"path outside", spec.DockerBuildParams{DockerfilePath: "../x"}, `dockerfile_path: "../x" must be a path inside the repository`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			argv, err := dockerBuildArgv(src, tc.params, image)
			got := strings.Join(argv, " ")
			if err != nil {
				got = err.Error()
			}
			if got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
	for _, tc := range []struct {
		params spec.DockerPublishParams
		want   string
	}{
		{spec.DockerPublishParams{ExternalRegistry: "quay.io", ExternalImageName: "acaleph/kontinuous"}, "quay.io/acaleph/kontinuous:abc123"},
		{spec.DockerPublishParams{ExternalImageName: "acme/app"}, "acme/app:abc123"},
		{spec.DockerPublishParams{ExternalRegistry: "quay.io"}, "external_image_name: docker_publish needs an image name"},
	} {
		got, err := publishTarget(tc.params, "ABC123")
		if err != nil {
			got = err.Error()
		}
		if got != tc.want {
			t.Errorf("publishTarget(%v) = %q, want %q", tc.params, got, tc.want)
		}
	}
}

func TestDeployWithoutKubeconfigSaysSo(t *testing.T) {
	t.Setenv("HOME", t.TempDir()) // no ~/.kube/config
	s := newGitServer(t)
	for name, cfg := range map[string]Config{
		"default location": {},
		"configured file":  {Kubeconfig: filepath.Join(t.TempDir(), "missing")},
	} {
		t.Run(name, func(t *testing.T) {
			x := newExecutor(t, cfg)
			job := commandJob(s, 1)
			job.Stage.Type = "deploy"
			job.Stage.Params = map[string]any{"deploy_file": "deploy/app.yaml"}
			err := x.RunStage(t.Context(), job, newLineLog(""), nil)
			if want := "deploy needs a Kubernetes cluster: no kubeconfig found"; !errors.Is(err, pipeline.ErrNotImplemented) || err.Error() != want {
				t.Errorf("err = %v, want %s", err, want)
			}
		})
	}
}

func TestDeployTemplatesSeeKontinuousValuesAndVarsButNoSecrets(t *testing.T) {
	job := pipeline.StageJob{
		Env: map[string]string{
			"KONTINUOUS_COMMIT": "abc", "KONTINUOUS_BRANCH": "main",
			"NAME": "app", "API_TOKEN": "a secret value",
		},
		Stage: pipeline.Stage{Vars: map[string]string{"NAME": "app", "REPLICAS": "2"}},
	}
	values := templateValues(job)
	for text, want := range map[string]string{
		"image: x:{{.KONTINUOUS_COMMIT}}": "image: x:abc",
		"branch: {{.BRANCH}}":             "branch: main",
		"{{.NAME}} x{{.REPLICAS}}":        "app x2",
	} {
		got, err := spec.Render([]byte(text), values)
		if err != nil || string(got) != want {
			t.Errorf("Render(%q) = %q, %v; want %q", text, got, err, want)
		}
	}
	if _, ok := values["API_TOKEN"]; ok {
		t.Error("a secret is a template value")
	}
}

func TestDeployFiles(t *testing.T) {
	src := t.TempDir()
	for _, p := range []string{"k8s/b.yaml", "k8s/a.yml", "k8s/readme.md", "app.yaml"} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(src, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(src, p), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		params spec.DeployParams
		want   string
	}{
		{spec.DeployParams{DeployFile: "app.yaml"}, "app.yaml"},
		{spec.DeployParams{DeployFile: "k8s/b.yaml", DeployDir: "k8s"}, "k8s/b.yaml,k8s/a.yml"},
		{spec.DeployParams{DeployDir: "k8s"}, "k8s/a.yml,k8s/b.yaml"},
		{spec.DeployParams{DeployFile: "../../etc/passwd"}, `deploy_file: "../../etc/passwd" must be a path inside the repository`},
		{spec.DeployParams{DeployDir: "k8s/none"}, `deploy_dir: "k8s/none" does not exist in the repository`},
		{spec.DeployParams{}, "deploy_file: a deploy stage needs deploy_file or deploy_dir"},
	} {
		files, err := deployFiles(src, tc.params)
		got := strings.Join(files, ",")
		if err != nil {
			got = err.Error()
		}
		if got != tc.want {
			t.Errorf("deployFiles(%+v) = %q, want %q", tc.params, got, tc.want)
		}
	}
}

func TestStagesTheExecutorDoesNotRun(t *testing.T) {
	x := newExecutor(t, Config{})
	for typ, want := range map[string]string{
		"wait":  "wait stages are run by the engine, not by the local executor",
		"shell": `type: unknown stage type "shell"`,
	} {
		job := pipeline.StageJob{Owner: "acme", Repo: "app", BuildNumber: 1, Stage: pipeline.Stage{Type: typ}}
		if err := x.RunStage(t.Context(), job, newLineLog(""), nil); err == nil || err.Error() != want {
			t.Errorf("%s: err = %v, want %s", typ, err, want)
		}
	}
}

func TestCommandParamsAreReadThroughTheSpec(t *testing.T) {
	s := newGitServer(t)
	x := newExecutor(t, Config{})
	for _, tc := range []struct {
		name   string
		params map[string]any
		want   string // output, or the error
	}{
		{"list with args", map[string]any{"command": []any{"cat"}, "args": []any{"hello.txt"}}, "v2"},
		{"string split on white space", map[string]any{"command": "cat hello.txt"}, "v2"},
		{"shell named by the user", map[string]any{"command": []any{"sh", "-c", "cat hello.txt | tr v V"}}, "V2"},
		{"no command", map[string]any{"args": []any{"x"}}, `stage "test": params.command is required for type command`},
		{"string that needs a shell", map[string]any{"command": "cat hello.txt | tr v V"}, "params.command"},
		{"bad timeout", map[string]any{"command": "true", "timeout": "soon"}, "params.timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			job := commandJob(s, 1)
			job.Timeout = 0
			job.Stage.Params = tc.params
			log := newLineLog("")
			err := x.RunStage(t.Context(), job, log, nil)
			if strings.Contains(tc.want, "params.") {
				if !errors.Is(err, pipeline.ErrInvalid) || !errors.Is(err, spec.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("err = %v, want ErrInvalid naming %s", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatalf("RunStage: %v\n%s", err, log)
			}
			if got := log.output(); len(got) != 1 || got[0] != tc.want {
				t.Errorf("output %q, want %q", got, tc.want)
			}
		})
	}
}

func TestStageTimeoutFromTheSpecWhenTheJobHasNone(t *testing.T) {
	s := newGitServer(t)
	x := newExecutor(t, Config{DefaultTimeout: time.Hour})
	precloned(t, x, s, 1)
	job := commandJob(s, 1, "sleep", "30")
	job.Stage.Params["timeout"] = "1s"
	if err := x.RunStage(t.Context(), job, newLineLog(""), nil); err == nil || err.Error() != "stage timed out after 1s" {
		t.Errorf("err = %v, want stage timed out after 1s", err)
	}
}
