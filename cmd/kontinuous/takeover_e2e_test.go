package main

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/etcdstore"
)

// parentPID is the parent process id of pid, from /proc/<pid>/stat.
func parentPID(pid int) (int, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// "pid (comm) state ppid …": comm may hold spaces, so cut after the
	// last ')'.
	s := string(data)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 2 {
		return 0, fmt.Errorf("/proc/%d/stat: %q", pid, s)
	}
	return strconv.Atoi(fields[1])
}

// TestKilledServerProcessBuildIsTakenOverByTheOtherServer: issue 14's
// SIGKILL variant with two server processes on one external etcd. The
// server running a build is killed with SIGKILL mid-stage; the other one,
// without any restart, takes the build over once the dead runner's
// heartbeat is stale and ends it (any server answers for any
// build): the interrupted stage FAILs saying the server stopped, the rest
// is not run, and the stage's log written by the dead server is still
// served by the survivor.
func TestKilledServerProcessBuildIsTakenOverByTheOtherServer(t *testing.T) {
	bin := buildServer(t)
	e, err := etcdstore.StartEmbedded(t.Context(), etcdstore.EmbeddedConfig{Dir: t.TempDir(), UnsafeNoFsync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	gh := newGitHub(t)
	args := func() []string {
		return []string{"--listen", "127.0.0.1:0", "--data-dir", t.TempDir(), "--auth-secret", testSecret,
			"--github-api-url", gh.APIURL, "--github-url", gh.URL, "--log-level", "info",
			"--etcd-endpoints", strings.Join(e.Endpoints(), ","),
			// A runner silent for 3 s is taken over (not the default 45 s).
			"--stale-after", "3s",
			// The stage writes its pid outside its workspace and outlives
			// the killed server: no sandbox.
			"--local-isolation", "none"}
	}
	srvs := []*serverProcess{startProcess(t, bin, args()...), startProcess(t, bin, args()...)}
	bases := []string{srvs[0].url, srvs[1].url}
	rc := newRetryClient()
	createAppPipeline(t, rc, bases[0])
	pidFile := filepath.Join(t.TempDir(), "stage.pid")
	marks := filepath.Join(t.TempDir(), "marks")
	spec := specHead + `    stages:
      - name: slow
        type: command
        params: {command: ["sh", "-c", "echo $$ > ` + pidFile + `; echo started; exec sleep 120"]}
      - name: after
        type: command
        params: {command: ["sh", "-c", "echo after >> ` + marks + `"]}
`
	repo := gh.Repo("acme", "app")
	sha := repo.Commit("main", map[string]string{".pipeline.yml": spec}, "spec")
	secret := gh.Hooks("acme", "app")[0].Secret
	if status, body := deliverPush(rc, bases[1], repo, secret, "takeover-1", sha); status != http.StatusCreated {
		t.Fatalf("delivery: %d %s", status, body)
	}
	alice := tbToken(t, "alice", 1001, "tok-alice")
	var stagePID int
	waitFor(t, rc, bases, alice, 1, patience, func(b pipeline.Build) bool {
		data, err := os.ReadFile(pidFile)
		if err != nil || len(b.Stages) != 2 || b.Stages[0].Status != pipeline.StatusRunning {
			return false
		}
		stagePID, err = strconv.Atoi(strings.TrimSpace(string(data)))
		return err == nil
	})
	// The stage's process outlives a SIGKILLed server (its own process
	// group); end it with the test.
	t.Cleanup(func() { _ = syscall.Kill(stagePID, syscall.SIGKILL) }) // may have ended
	// Whichever server claimed the build is its stage's parent.
	ppid, err := parentPID(stagePID)
	if err != nil {
		t.Fatal(err)
	}
	runner := -1
	for i, s := range srvs {
		if s.cmd.Process.Pid == ppid {
			runner = i
		}
	}
	if runner < 0 {
		t.Fatalf("the stage's parent %d is neither server (%d, %d)", ppid, srvs[0].cmd.Process.Pid, srvs[1].cmd.Process.Pid)
	}
	survivor := bases[1-runner]
	logURL := survivor + "/api/v1/pipelines/acme/app/builds/1/stages/1/logs"
	text := map[string]string{"Accept": "text/plain"}
	// The stage's first line reaches the other server (through the log
	// store) before the kill: the log is flushed at least every 250 ms.
	deadline := time.Now().Add(patience)
	for {
		status, body := rc.do(http.MethodGet, logURL, alice, nil, text)
		if status == http.StatusOK && strings.Contains(string(body), "started") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the running stage's log on the other server: %d %q", status, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	srvs[runner].kill(t)

	b := waitFor(t, rc, []string{survivor}, alice, 1, patience, func(b pipeline.Build) bool { return b.Status.Done() })
	if b.Status != pipeline.StatusFail || b.Stages[0].Status != pipeline.StatusFail || !strings.Contains(b.Stages[0].Message, "server stopped") {
		t.Fatalf("after the kill: build %s, stage %s %q, want FAIL saying the server stopped", b.Status, b.Stages[0].Status, b.Stages[0].Message)
	}
	if b.Stages[1].Status == pipeline.StatusSuccess || b.Stages[1].Status == pipeline.StatusRunning {
		t.Fatalf("the stage after the interrupted one ran: %s", b.Stages[1].Status)
	}
	if got := markLines(t, marks); len(got) != 0 {
		t.Fatalf("the stage after the interrupted one left marks: %v", got)
	}
	// The killed server's log of the interrupted stage is served by the
	// survivor.
	status, body := rc.do(http.MethodGet, logURL, alice, nil, text)
	if status != http.StatusOK || !strings.Contains(string(body), "started") {
		t.Fatalf("log of the interrupted stage from the survivor: %d %q", status, body)
	}
}
