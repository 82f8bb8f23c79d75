package local

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// testSandbox returns a working sandbox, or skips (fails in CI, which
// installs bubblewrap) when this host cannot build one.
func testSandbox(t *testing.T) *Sandbox {
	t.Helper()
	sandboxOnce.Do(func() { sandboxHost, sandboxErr = NewSandbox(context.Background(), DefaultPath) })
	if sandboxErr != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI needs a working bwrap (.ci/run installs bubblewrap): %v", sandboxErr)
		}
		t.Skipf("needs bubblewrap (apt-get install bubblewrap; works as root or with user namespaces): %v", sandboxErr)
	}
	return sandboxHost
}

var (
	sandboxOnce sync.Once
	sandboxHost *Sandbox
	sandboxErr  error
)

// hostProcs returns the host pids whose command line is exactly argv.
func hostProcs(argv ...string) []int {
	want := []byte(strings.Join(argv, "\x00") + "\x00")
	var pids []int
	entries, _ := os.ReadDir("/proc") // an unreadable /proc finds nothing, and the test's first wait fails
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline"); err == nil && bytes.Equal(b, want) && alive(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// waitFor polls cond for up to a minute.
func waitFor(cond func() bool) bool {
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}

func TestSandboxedStageSeesNeitherServerEnvironmentNorDataDir(t *testing.T) {
	sb := testSandbox(t)
	t.Setenv("KONTINUOUS_TEST_SERVER_CANARY", "server-secret-value")
	data := t.TempDir()
	if err := os.WriteFile(filepath.Join(data, "auth-secret"), []byte("data-dir-secret-value\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := newGitServer(t)
	x := newExecutor(t, Config{WorkDir: filepath.Join(data, "workspaces"), Sandbox: sb})
	script := fmt.Sprintf(`tr '\0' '\n' </proc/$PPID/environ; tr '\0' '\n' </proc/1/environ; cat /proc/%d/environ; ls -a %s; cat %s/auth-secret; ls /proc; echo x > /proc/sys/kernel/domainname; echo done`,
		os.Getpid(), data, data)
	log := newLineLog("")
	if err := x.RunStage(t.Context(), commandJob(s, 1, "sh", "-c", script), log, nil); err != nil {
		t.Fatalf("RunStage: %v\nlog:\n%s", err, log)
	}
	out := log.String()
	for _, leak := range []string{"server-secret-value", "data-dir-secret-value", "auth-secret\n"} {
		if strings.Contains(out, leak) {
			t.Errorf("the stage saw %q:\n%s", leak, out)
		}
	}
	// The stage did run, with its own environment.
	if !strings.Contains(out, "KONTINUOUS_BUILD_ID=1") || !strings.Contains(out, "done") {
		t.Errorf("the stage did not run as expected:\n%s", out)
	}
	if !strings.Contains(out, "Read-only file system") {
		t.Errorf("a sysctl write was not refused:\n%s", out)
	}
}

// TestSandboxEndsEveryProcessOfTheStage: a process that leaves the
// stage's session (setsid) still ends with the stage, whether it exits,
// is canceled or times out.
func TestSandboxEndsEveryProcessOfTheStage(t *testing.T) {
	sb := testSandbox(t)
	s := newGitServer(t)
	x := newExecutor(t, Config{Sandbox: sb})
	for i, tc := range []struct{ name string }{{"exit"}, {"cancel"}, {"timeout"}} {
		t.Run(tc.name, func(t *testing.T) {
			build := 10 + i
			precloned(t, x, s, build)
			dur := fmt.Sprintf("313.%d%d", os.Getpid(), build) // unique on the host
			script := `setsid sleep ` + dur + ` </dev/null >/dev/null 2>&1 & echo started; `
			if tc.name != "exit" {
				script += "sleep 120"
			}
			job := commandJob(s, build, "sh", "-c", script)
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			if tc.name == "timeout" {
				job.Timeout = 3 * time.Second
			}
			errc := make(chan error, 1)
			log := newLineLog("\nstarted\n")
			go func() { errc <- x.RunStage(ctx, job, log, nil) }()
			if tc.name != "exit" {
				<-log.seen
				if !waitFor(func() bool { return len(hostProcs("sleep", dur)) == 1 }) {
					t.Fatalf("setsid sleep %s never showed on the host:\n%s", dur, log)
				}
			}
			if tc.name == "cancel" {
				cancel()
			}
			err := <-errc
			switch tc.name {
			case "exit":
				if err != nil {
					t.Fatalf("RunStage: %v\n%s", err, log)
				}
			case "cancel":
				if !errors.Is(err, context.Canceled) {
					t.Fatalf("err = %v, want canceled", err)
				}
			case "timeout":
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("err = %v, want timed out", err)
				}
			}
			if !waitFor(func() bool { return len(hostProcs("sleep", dur)) == 0 }) {
				t.Errorf("setsid sleep %s outlived its stage (%s): pids %v", dur, tc.name, hostProcs("sleep", dur))
			}
		})
	}
}

func TestSandboxedStageWritesItsWorkspaceAndReachesTheNetwork(t *testing.T) {
	sb := testSandbox(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "dependency-bytes") }))
	defer srv.Close()
	host, port, _ := net.SplitHostPort(strings.TrimPrefix(srv.URL, "http://"))
	s := newGitServer(t)
	x := newExecutor(t, Config{Sandbox: sb})
	script := fmt.Sprintf(`exec 3<>/dev/tcp/%s/%s; printf 'GET / HTTP/1.0\r\n\r\n' >&3; cat <&3 > fetched; echo home > "$HOME/h"; echo tmp > "$TMPDIR/t"; echo private > /tmp/p%d`, host, port, os.Getpid())
	log := newLineLog("")
	if err := x.RunStage(t.Context(), commandJob(s, 1, "bash", "-c", script), log, nil); err != nil {
		t.Fatalf("RunStage: %v\nlog:\n%s", err, log)
	}
	root := filepath.Join(x.cfg.WorkDir, "acme", "app", "1")
	b, err := os.ReadFile(filepath.Join(root, "src", "fetched"))
	if err != nil || !strings.Contains(string(b), "dependency-bytes") {
		t.Errorf("fetched = %q, %v; log:\n%s", b, err, log)
	}
	for _, f := range []string{"home/h", "tmp/t"} {
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	if _, err := os.Stat(fmt.Sprintf("/tmp/p%d", os.Getpid())); err == nil {
		t.Errorf("the stage's /tmp is the host's")
	}
}

func TestCommandStagesAreRefusedWhenIsolationIsRequiredButUnavailable(t *testing.T) {
	x := newExecutor(t, Config{SandboxUnavailable: errors.New("isolation unavailable: set --local-isolation")})
	job := commandJob(&gitServer{head: strings.Repeat("a", 40), cloneURL: "http://127.0.0.1:1/acme/app.git"}, 1, "true")
	err := x.RunStage(t.Context(), job, newLineLog(""), nil)
	if err == nil || !strings.Contains(err.Error(), "--local-isolation") {
		t.Fatalf("err = %v", err)
	}
	if _, serr := os.Stat(filepath.Join(x.cfg.WorkDir, "acme")); serr == nil {
		t.Errorf("a refused stage made a workspace")
	}
}

// TestSandboxHidesTheServersKeyFilesUnderShownDirectories: files the
// server is configured with (a TLS key, a kubeconfig) may lie in a
// directory the sandbox shows (/etc, /opt, a PATH entry): a stage sees
// them empty, and a hidden directory empty, also through a symbolic link.
func TestSandboxHidesTheServersKeyFilesUnderShownDirectories(t *testing.T) {
	sb := testSandbox(t)
	shown := shownDir(t) // shown read-only as a PATH entry, as /etc is
	key := filepath.Join(shown, "tls.key")
	if err := os.WriteFile(key, []byte("-----BEGIN PRIVATE KEY----- key-file-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	kdir := filepath.Join(shown, "kube")
	if err := os.Mkdir(kdir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(kdir, "config"), []byte("token: kubeconfig-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(shown, "visible"), []byte("still-visible\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(t.TempDir(), "key-link") // the setting names a link to the key
	if err := os.Symlink(key, link); err != nil {
		t.Fatal(err)
	}
	s := newGitServer(t)
	x := newExecutor(t, Config{WorkDir: filepath.Join(t.TempDir(), "workspaces"), Sandbox: sb,
		Path: DefaultPath + ":" + shown, Hide: []string{link, kdir}})
	script := fmt.Sprintf(`cat %s; cat %s/config; ls %s; cat %s/visible; echo done`, key, kdir, kdir, shown)
	log := newLineLog("")
	if err := x.RunStage(t.Context(), commandJob(s, 1, "sh", "-c", script), log, nil); err != nil {
		t.Fatalf("RunStage: %v\nlog:\n%s", err, log)
	}
	out := log.String()
	for _, leak := range []string{"key-file-secret", "kubeconfig-secret"} {
		if strings.Contains(out, leak) {
			t.Errorf("the stage saw %q:\n%s", leak, out)
		}
	}
	if !strings.Contains(out, "still-visible") || !strings.Contains(out, "done") {
		t.Errorf("the shown directory's other files should stay visible:\n%s", out)
	}
}

// shownDir is a new directory outside /tmp (the sandbox mounts its own
// /tmp over the host's), removed when the test ends.
func shownDir(t *testing.T) string {
	t.Helper()
	for _, parent := range []string{os.Getenv("HOME"), "/var/lib"} {
		if parent == "" || within(parent, "/tmp") || within(parent, "/var/tmp") {
			continue
		}
		if d, err := os.MkdirTemp(parent, "kontinuous-sandbox-test-"); err == nil {
			t.Cleanup(func() { _ = os.RemoveAll(d) }) // best effort
			return d
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("no writable directory outside /tmp (HOME or /var/lib) for a shown directory")
	}
	t.Skip("needs a writable directory outside /tmp (HOME or /var/lib)")
	return ""
}
