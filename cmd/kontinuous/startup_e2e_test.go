package main

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// runBinary runs the built server with args and a clean environment and
// returns its exit code, stdout and stderr.
func runBinary(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(buildServer(t), args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatal(err)
		}
	case <-time.After(90 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("kontinuous %s did not exit within 90s; stderr:\n%s", strings.Join(args, " "), errb.String())
	}
	return cmd.ProcessState.ExitCode(), out.String(), errb.String()
}

// oneLine fails unless stderr is exactly one line starting "kontinuous: "
// that contains each of want.
func oneLine(t *testing.T, stderr string, want ...string) {
	t.Helper()
	s := strings.TrimSuffix(stderr, "\n")
	if strings.Contains(s, "\n") || !strings.HasPrefix(s, "kontinuous: ") || strings.Contains(s, "panic") || strings.Contains(s, "level=") {
		t.Fatalf("want one line \"kontinuous: ...\", got:\n%s", stderr)
	}
	for _, w := range want {
		if !strings.Contains(s, w) {
			t.Fatalf("%q does not contain %q", s, w)
		}
	}
}

func TestStartUpFailuresAreOneLineNamingTheSettingThroughTheBinary(t *testing.T) {
	base := []string{"--listen", "127.0.0.1:0", "--log-level", "error"}

	t.Run("data dir is a file", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "a-file")
		if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		code, _, stderr := runBinary(t, "", append(base, "--data-dir", filepath.Join(file, "data"))...)
		if code != 1 {
			t.Fatalf("exit %d, want 1; stderr:\n%s", code, stderr)
		}
		oneLine(t, stderr, "--data-dir", "KONTINUOUS_DATA_DIR")
	})

	t.Run("occupied port, checked before the data dir is made", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		dir := filepath.Join(t.TempDir(), "never-made")
		code, _, stderr := runBinary(t, "", "--listen", ln.Addr().String(), "--data-dir", dir)
		if code != 1 {
			t.Fatalf("exit %d, want 1; stderr:\n%s", code, stderr)
		}
		oneLine(t, stderr, "--listen", "address already in use")
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("the data dir was created although the port is taken: %v", err)
		}
	})

	t.Run("unreadable kept secret", func(t *testing.T) {
		dir := t.TempDir()
		// A directory where the secret file should be cannot be read, even by root.
		if err := os.Mkdir(filepath.Join(dir, secretFile), 0o700); err != nil {
			t.Fatal(err)
		}
		code, _, stderr := runBinary(t, "", append(base, "--data-dir", dir)...)
		if code != 1 {
			t.Fatalf("exit %d, want 1; stderr:\n%s", code, stderr)
		}
		oneLine(t, stderr, "--auth-secret", "AUTH_SECRET", "cannot be read")
	})

	t.Run("unusable kept secret", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, secretFile), []byte("c2hvcnQ\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		code, _, stderr := runBinary(t, "", append(base, "--data-dir", dir)...)
		if code != 1 {
			t.Fatalf("exit %d, want 1; stderr:\n%s", code, stderr)
		}
		oneLine(t, stderr, "--auth-secret", "unusable")
		if strings.Contains(stderr, "c2hvcnQ") {
			t.Fatal("the error shows the secret")
		}
	})
}

func TestVersionFlagAndCommandPrintTheBuildVersion(t *testing.T) {
	var first string
	for _, arg := range []string{"--version", "version", "-version"} {
		code, stdout, stderr := runBinary(t, "", arg)
		if code != 0 || !strings.HasPrefix(stdout, "kontinuous ") || strings.Count(stdout, "\n") != 1 || stderr != "" {
			t.Fatalf("kontinuous %s: exit %d stdout %q stderr %q", arg, code, stdout, stderr)
		}
		if first == "" {
			first = stdout
		} else if stdout != first {
			t.Fatalf("%q and %q differ", first, stdout)
		}
	}
	// A build with -ldflags prints that version.
	bin := filepath.Join(t.TempDir(), "kontinuous")
	if out, err := exec.Command("go", "build", "-ldflags", "-X main.version=v9.8.7", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil || string(out) != "kontinuous v9.8.7\n" {
		t.Fatalf("--version of an -ldflags build: %q %v", out, err)
	}
}

func TestLintCommandPrintsEveryProblemAndExitsOneThroughTheBinary(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yml")
	if err := os.WriteFile(good, []byte(specHead+`    stages:
      - name: Test
        type: command
        params: {command: [go, test, ./...]}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runBinary(t, "", "lint", good)
	if code != 0 || stdout != good+": valid (1 stages)\n" {
		t.Fatalf("valid file: exit %d stdout %q stderr %q", code, stdout, stderr)
	}
	bad := specHead + `    stages:
      - name: Test
        type: command
      - name: Ship
        type: docker_publsh
`
	code, stdout, _ = runBinary(t, bad, "lint", "-")
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if code != 1 || len(lines) != 3 || lines[2] != "<stdin>: 2 problems" ||
		!strings.Contains(lines[0], "stages[0] (Test): params.command") || !strings.Contains(lines[1], "stages[1] (Ship): type") {
		t.Fatalf("invalid spec: exit %d stdout:\n%s", code, stdout)
	}
	code, _, stderr = runBinary(t, "", "lint", filepath.Join(dir, "missing.yml"))
	if code != 2 || !strings.Contains(stderr, "missing.yml") {
		t.Fatalf("missing file: exit %d stderr %q", code, stderr)
	}
}

// TestStoppingGoRunStopsTheServer runs the server as `go run .` and sends
// SIGTERM to the go command only, as a process manager or `kill` would:
// go run does not pass it on, so the server must notice its parent is gone.
func TestStoppingGoRunStopsTheServer(t *testing.T) {
	cmd := exec.Command("go", "run", ".", "--listen", "127.0.0.1:0", "--data-dir", t.TempDir(), "--auth-secret", testSecret)
	cmd.Env = append(os.Environ(), "GOFLAGS=")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	serving := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		once := false
		for sc.Scan() {
			if !once && strings.Contains(sc.Text(), "kontinuous serving") {
				close(serving)
				once = true
			}
		}
	}()
	select {
	case <-serving:
	case <-time.After(5 * time.Minute):
		t.Fatal("go run did not start the server within 5 minutes")
	}
	// Each thread lists the children it forked: read every thread's list.
	tasks, err := filepath.Glob("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/task/*/children")
	if err != nil || len(tasks) == 0 {
		t.Skipf("cannot list the go command's children on this system: %v", err)
	}
	var children []byte
	for _, task := range tasks {
		c, err := os.ReadFile(task)
		if err != nil {
			continue // the thread ended meanwhile
		}
		children = append(children, c...)
		children = append(children, ' ')
	}
	f := strings.Fields(string(children))
	if len(f) != 1 {
		t.Fatalf("go run has children %q, want one", children)
	}
	child, _ := strconv.Atoi(f[0])
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	deadline := time.Now().Add(60 * time.Second)
	for processRuns(child) {
		if time.Now().After(deadline) {
			_ = syscall.Kill(child, syscall.SIGKILL)
			t.Fatalf("server pid %d still runs 60s after its go run was stopped", child)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// processRuns reports whether pid is a live process: a zombie (exited,
// waiting for whoever inherited it to reap it) has stopped running.
func processRuns(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// The state follows the command name in parentheses: "pid (comm) S ...".
	if i := strings.LastIndexByte(string(stat), ')'); i >= 0 && i+2 < len(stat) {
		return stat[i+2] != 'Z' && stat[i+2] != 'X'
	}
	return true
}
