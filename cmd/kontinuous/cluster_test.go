package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/kontinuous/kontinuous/auth"
	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/pipelinetest"
	"github.com/kontinuous/kontinuous/pipeline/pipelinetest/fakegithub"
	"github.com/kontinuous/kontinuous/scripts/kube-testenv/testenv"
)

func TestMain(m *testing.M) {
	flag.Parse()
	testenv.Prepare() // the kubernetes control plane's binaries, built once per machine
	if len(testIsolation()) > 0 {
		// Server binaries the tests start inherit it (no bwrap here).
		os.Setenv("KONTINUOUS_LOCAL_ISOLATION", "none")
	}
	code := m.Run()
	if !testenv.StopShared() && code == 0 {
		code = 1 // the host could not be put back after the real node (stderr says why)
	}
	closeBenchEtcd()
	removeServerBinary()
	os.Exit(code)
}

// newGitHub is the stand-in GitHub of newWorld: alice admin, carol push,
// dave read on acme/app; bob has no access.
func newGitHub(tb testing.TB) *fakegithub.Server {
	tb.Helper()
	gh := fakegithub.New(tb)
	gh.AddUser("alice", 1001, "tok-alice")
	gh.AddUser("bob", 1002, "tok-bob")
	gh.AddUser("carol", 1003, "tok-carol")
	gh.AddUser("dave", 1004, "tok-dave")
	gh.AddRepo("acme", "app")
	gh.Grant("alice", "acme", "app", "admin")
	gh.Grant("carol", "acme", "app", "push")
	gh.Grant("dave", "acme", "app", "read")
	return gh
}

// startApp starts a server in-process on a free port with data in dir,
// shut down when the test ends.
func startApp(tb testing.TB, gh *fakegithub.Server, dir string, extra ...string) *App {
	tb.Helper()
	args := append([]string{"--listen", "127.0.0.1:0", "--data-dir", dir, "--auth-secret", testSecret,
		"--github-api-url", gh.APIURL, "--github-url", gh.URL, "--log-level", "error"}, append(testIsolation(), extra...)...)
	cfg, err := LoadConfig(args, func(string) string { return "" }, io.Discard)
	if err != nil {
		tb.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(tbWriter{tb}, &slog.HandlerOptions{Level: slog.LevelError}))
	ctx, cancel := context.WithCancel(context.Background())
	app, err := Start(ctx, cfg, logger)
	if err != nil {
		cancel()
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		_ = app.Shutdown(context.Background()) // test teardown
		cancel()
	})
	return app
}

type tbWriter struct{ tb testing.TB }

func (w tbWriter) Write(p []byte) (int, error) {
	w.tb.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// tbToken mints an HS256 user token as scripts/jwt-gen does.
func tbToken(tb testing.TB, login string, id int, ghToken string) string {
	tb.Helper()
	claims := jwt.MapClaims{
		"user_id":    fmt.Sprintf("github|%d", id),
		"name":       login,
		"exp":        time.Now().Add(time.Hour).Unix(),
		"iat":        time.Now().Unix(),
		"identities": []any{map[string]any{"provider": "github", "access_token": ghToken}},
	}
	secret, err := auth.DecodeSecret(testSecret)
	if err != nil {
		tb.Fatal(err)
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(secret)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// serverBinary is the kontinuous command built once per test binary for
// the tests that run the server as a real process.
var serverBinary struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// buildServer builds this package's command into a temp dir (once).
func buildServer(t testing.TB) string {
	t.Helper()
	serverBinary.once.Do(func() {
		if serverBinary.dir, serverBinary.err = os.MkdirTemp("", "kontinuous-bin-"); serverBinary.err != nil {
			return
		}
		serverBinary.path = filepath.Join(serverBinary.dir, "kontinuous")
		out, err := exec.Command("go", "build", "-o", serverBinary.path, ".").CombinedOutput()
		if err != nil {
			serverBinary.err = fmt.Errorf("go build: %v\n%s", err, out)
			return
		}
	})
	if serverBinary.err != nil {
		t.Fatalf("build the server: %v", serverBinary.err)
	}
	return serverBinary.path
}

func removeServerBinary() {
	if serverBinary.dir != "" {
		_ = os.RemoveAll(serverBinary.dir) // best effort at exit
	}
}

// serverProcess is the server running as a child process.
type serverProcess struct {
	cmd *exec.Cmd
	url string

	mu    sync.Mutex
	warns []string // its WARN and ERROR log lines so far
}

// warned reports whether a WARN or ERROR line so far contains s.
func (p *serverProcess) warned(s string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range p.warns {
		if strings.Contains(l, s) {
			return true
		}
	}
	return false
}

// startProcess runs the built server with args and waits until it logs
// that it serves.
func startProcess(t testing.TB, bin string, args ...string) *serverProcess {
	t.Helper()
	cmd := exec.Command(bin, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &serverProcess{cmd: cmd}
	t.Cleanup(func() {
		_ = cmd.Process.Kill() // gone already after kill()
		_ = cmd.Wait()
	})
	urls := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		sent := false
		for sc.Scan() {
			line := sc.Text()
			if !sent && strings.Contains(line, "kontinuous serving") {
				for _, f := range strings.Fields(line) {
					if u, ok := strings.CutPrefix(f, "url="); ok {
						urls <- u
						sent = true
					}
				}
			}
			if strings.Contains(line, "level=ERROR") || strings.Contains(line, "level=WARN") {
				t.Log("server: " + line)
				p.mu.Lock()
				p.warns = append(p.warns, line)
				p.mu.Unlock()
			}
		}
	}()
	select {
	case p.url = <-urls:
	case <-time.After(patience):
		t.Fatalf("the server process did not start serving within %s", patience)
	}
	return p
}

// kill ends the process with SIGKILL: no shutdown code runs.
func (p *serverProcess) kill(t testing.TB) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = p.cmd.Wait() // "signal: killed" is the expected outcome
}

func TestKilledServerProcessEndsItsBuildAfterRestart(t *testing.T) {
	bin := buildServer(t)
	gh := newGitHub(t)
	dir := t.TempDir()
	args := []string{"--listen", "127.0.0.1:0", "--data-dir", dir, "--auth-secret", testSecret,
		"--github-api-url", gh.APIURL, "--github-url", gh.URL, "--log-level", "info"}
	// A runner silent for 3 s is taken over (the default 45 s would make
	// this test wait a minute).
	args = append(args, "--stale-after", "3s")
	// The stage writes its pid outside its workspace and must outlive the
	// killed server: no sandbox (its processes die with the server).
	args = append(args, "--local-isolation", "none")
	srv := startProcess(t, bin, args...)
	rc := newRetryClient()
	createAppPipeline(t, rc, srv.url)
	pidFile := filepath.Join(t.TempDir(), "stage.pid")
	spec := specHead + `    stages:
      - name: slow
        type: command
        params: {command: ["sh", "-c", "echo $$ > ` + pidFile + `; echo started; exec sleep 120"]}
`
	repo := gh.Repo("acme", "app")
	sha := repo.Commit("main", map[string]string{".pipeline.yml": spec}, "spec")
	secret := gh.Hooks("acme", "app")[0].Secret
	if status, body := deliverPush(rc, srv.url, repo, secret, "kill-1", sha); status != http.StatusCreated {
		t.Fatalf("delivery: %d %s", status, body)
	}
	alice := tbToken(t, "alice", 1001, "tok-alice")
	waitFor(t, rc, []string{srv.url}, alice, 1, patience, func(b pipeline.Build) bool {
		_, err := os.Stat(pidFile)
		return len(b.Stages) == 1 && b.Stages[0].Status == pipeline.StatusRunning && err == nil
	})
	// The stage's process outlives a SIGKILLed server (its own process
	// group); end it with the test.
	t.Cleanup(func() {
		if data, err := os.ReadFile(pidFile); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(data))); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL) // may have ended
			}
		}
	})
	srv.kill(t)

	// Same data dir: the embedded etcd recovers from its log after the
	// unclean stop, the build is still RUNNING under the dead runner,
	// and the new process takes it over once the runner's heartbeat is
	// stale, failing the interrupted stage with a message.
	srv = startProcess(t, bin, args...)
	b, status := getBuild(t, rc, srv.url, alice, 1)
	if status != http.StatusOK || b.Status != pipeline.StatusRunning {
		t.Fatalf("after restart: HTTP %d, build %s, want it stored and still RUNNING", status, b.Status)
	}
	b = waitFor(t, rc, []string{srv.url}, alice, 1, patience, func(b pipeline.Build) bool { return b.Status.Done() })
	if b.Status != pipeline.StatusFail || !strings.Contains(b.Stages[0].Message, "server stopped") {
		t.Fatalf("after restart: build %s, stage %s %q, want FAIL saying the server stopped", b.Status, b.Stages[0].Status, b.Stages[0].Message)
	}
}

// retryClient sends requests like a well-behaved client of the contract:
// a 503 (or a connection that fails) is retried after a short pause, a
// bounded number of times.
type retryClient struct {
	c        *http.Client
	attempts int
	pause    time.Duration
	retries  atomic.Int64 // retries made, for the log
}

func newRetryClient() *retryClient {
	return &retryClient{c: &http.Client{Timeout: 20 * time.Second}, attempts: 40, pause: 250 * time.Millisecond}
}

// do sends the request until it gets an answer other than 503; it
// returns the last status and body (status 0: no answer at all).
func (rc *retryClient) do(method, url, tok string, body []byte, hdr map[string]string) (int, []byte) {
	var status int
	var data []byte
	for attempt := range rc.attempts {
		if attempt > 0 {
			rc.retries.Add(1)
			time.Sleep(rc.pause)
		}
		req, err := http.NewRequest(method, url, bytes.NewReader(body))
		if err != nil {
			return 0, []byte(err.Error())
		}
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := rc.c.Do(req)
		if err != nil {
			status, data = 0, []byte(err.Error())
			continue
		}
		data, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		status = resp.StatusCode
		if err != nil {
			status, data = 0, []byte(err.Error())
			continue
		}
		if status != http.StatusServiceUnavailable {
			return status, data
		}
	}
	return status, data
}

// deliverPush sends a signed push delivery of sha on main to base.
func deliverPush(rc *retryClient, base string, repo *fakegithub.Repo, secret, delivery, sha string) (int, []byte) {
	body := distinct(fakegithub.PushPayload(repo, "main", sha, sha, "alice"), delivery)
	return rc.do(http.MethodPost, base+"/api/v1/pipelines/"+repo.Owner+"/"+repo.Name+"/builds", "", body, map[string]string{
		"X-GitHub-Event": "push", "X-GitHub-Delivery": delivery, "X-Hub-Signature-256": fakegithub.SignPayload(secret, body),
	})
}

// getBuild reads build n of acme/app from base.
func getBuild(t testing.TB, rc *retryClient, base, tok string, n int) (pipeline.Build, int) {
	t.Helper()
	status, body := rc.do(http.MethodGet, fmt.Sprintf("%s/api/v1/pipelines/acme/app/builds/%d", base, n), tok, nil, nil)
	var b pipeline.Build
	if status == http.StatusOK {
		if err := json.Unmarshal(body, &b); err != nil {
			t.Fatalf("build %d: %v: %s", n, err, body)
		}
	}
	return b, status
}

// waitFor polls build n on the given servers in turn until cond holds.
func waitFor(t testing.TB, rc *retryClient, bases []string, tok string, n int, within time.Duration, cond func(pipeline.Build) bool) pipeline.Build {
	t.Helper()
	deadline := time.Now().Add(within)
	var b pipeline.Build
	var status int
	for i := 0; time.Now().Before(deadline); i++ {
		b, status = getBuild(t, rc, bases[i%len(bases)], tok, n)
		if status == http.StatusOK && cond(b) {
			return b
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("build %d: not in the expected state within %s; last: HTTP %d, %s %q stages %+v", n, within, status, b.Status, b.Message, b.Stages)
	return b
}

// markLines counts the lines of the marks file stages append to.
func markLines(t *testing.T, path string) map[string]int {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if l != "" {
			out[l]++
		}
	}
	return out
}

// createAppPipeline makes acme/app through base as alice.
func createAppPipeline(t testing.TB, rc *retryClient, base string) {
	t.Helper()
	status, body := rc.do(http.MethodPost, base+"/api/v1/pipelines", tbToken(t, "alice", 1001, "tok-alice"),
		[]byte(`{"owner":"acme","repo":"app","events":["push"]}`), nil)
	if status != http.StatusCreated {
		t.Fatalf("create pipeline: %d %s", status, body)
	}
}

// clusterServers starts a 3-member etcd cluster and two servers on it
// (separate data dirs, same secret, same GitHub).
func clusterServers(t *testing.T) (*pipelinetest.EtcdCluster, *fakegithub.Server, []*App) {
	t.Helper()
	cluster := pipelinetest.StartEtcdCluster(t)
	gh := newGitHub(t)
	eps := strings.Join(cluster.Endpoints(), ",")
	// Their stages append to one marks file outside any workspace: no
	// sandbox (it would hide the file).
	a := startApp(t, gh, t.TempDir(), "--etcd-endpoints", eps, "--local-isolation", "none")
	b := startApp(t, gh, t.TempDir(), "--etcd-endpoints", eps, "--local-isolation", "none")
	return cluster, gh, []*App{a, b}
}

func TestTwoServersOnOneEtcdClusterAdvanceEveryBuildExactlyOnce(t *testing.T) {
	_, gh, apps := clusterServers(t)
	bases := []string{apps[0].URL, apps[1].URL}
	rc := newRetryClient()
	createAppPipeline(t, rc, bases[0])
	marks := filepath.Join(t.TempDir(), "marks")
	spec := specHead + `    stages:
      - name: one
        type: command
        params: {command: ["sh", "-c", "echo one $KONTINUOUS_BUILD_ID >> ` + marks + `"]}
      - name: approve
        type: wait
        params: {message: "go on?"}
      - name: three
        type: command
        params: {command: ["sh", "-c", "echo three $KONTINUOUS_BUILD_ID >> ` + marks + `"]}
`
	repo := gh.Repo("acme", "app")
	sha := repo.Commit("main", map[string]string{".pipeline.yml": spec}, "spec")
	secret := gh.Hooks("acme", "app")[0].Secret

	// Deliveries spread over both servers, all at once.
	const n = 12
	numbers := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			status, body := deliverPush(rc, bases[i%2], repo, secret, fmt.Sprintf("scale-%d", i), sha)
			if status != http.StatusCreated {
				t.Errorf("delivery %d: %d %s", i, status, body)
				return
			}
			var b pipeline.Build
			if err := json.Unmarshal(body, &b); err != nil {
				t.Errorf("delivery %d: %v", i, err)
			}
			numbers[i] = b.Number
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	slices.Sort(numbers)
	for i, num := range numbers {
		if num != i+1 {
			t.Fatalf("build numbers %v are not 1..%d, unique and gap-free", numbers, n)
		}
	}
	alice := tbToken(t, "alice", 1001, "tok-alice")
	for k := 1; k <= n; k++ {
		waitFor(t, rc, bases, alice, k, patience, func(b pipeline.Build) bool { return b.Status == pipeline.StatusWaiting || b.Status.Done() })
	}

	// Each build is approved (two in three) or canceled (one in three),
	// the same request sent to both servers at once: exactly one wins.
	carol := tbToken(t, "carol", 1003, "tok-carol")
	approved := func(k int) bool { return k%3 != 0 }
	for k := 1; k <= n; k++ {
		path := fmt.Sprintf("/api/v1/pipelines/acme/app/builds/%d/cancel", k)
		if approved(k) {
			path = fmt.Sprintf("/api/v1/pipelines/acme/app/builds/%d/stages/2?continue=yes", k)
		}
		statuses := make([]int, 2)
		for s := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				statuses[s], _ = rc.do(http.MethodPost, bases[s]+path, carol, nil, nil)
			}()
		}
		wg.Wait()
		slices.Sort(statuses)
		if statuses[0] != http.StatusOK || statuses[1] != http.StatusConflict {
			t.Errorf("build %d: the same %s sent to both servers answered %v, want one 200 and one 409", k, path, statuses)
		}
	}
	for k := 1; k <= n; k++ {
		b := waitFor(t, rc, bases, alice, k, patience, func(b pipeline.Build) bool { return b.Status.Done() })
		want := pipeline.StatusCanceled
		if approved(k) {
			want = pipeline.StatusSuccess
		}
		if b.Status != want {
			t.Errorf("build %d ended %s (%q), want %s", k, b.Status, b.Message, want)
		}
	}
	lines := markLines(t, marks)
	for k := 1; k <= n; k++ {
		if got := lines[fmt.Sprintf("one %d", k)]; got != 1 {
			t.Errorf("stage one of build %d ran %d times, want once", k, got)
		}
		want := 0
		if approved(k) {
			want = 1
		}
		if got := lines[fmt.Sprintf("three %d", k)]; got != want {
			t.Errorf("stage three of build %d ran %d times, want %d", k, got, want)
		}
	}
	if len(lines) != n+n*2/3 {
		t.Errorf("marks file has %d distinct lines, want %d: %v", len(lines), n+n*2/3, lines)
	}
}

func TestStoppingOneEtcdMemberMidLoadLosesNoBuild(t *testing.T) {
	cluster, gh, apps := clusterServers(t)
	bases := []string{apps[0].URL, apps[1].URL}
	rc := newRetryClient()
	createAppPipeline(t, rc, bases[0])
	marks := filepath.Join(t.TempDir(), "marks")
	spec := specHead + `    stages:
      - name: mark
        type: command
        params: {command: ["sh", "-c", "echo $KONTINUOUS_BUILD_ID >> ` + marks + `"]}
`
	repo := gh.Repo("acme", "app")
	sha := repo.Commit("main", map[string]string{".pipeline.yml": spec}, "spec")
	secret := gh.Hooks("acme", "app")[0].Secret

	const workers, each = 6, 16
	// The workers signal when a third and two thirds of the deliveries are
	// stored; the test goroutine stops and restarts the leader then.
	var sent atomic.Int64
	third, twoThirds := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	byDelivery := map[string]int{}
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range each {
				delivery := fmt.Sprintf("load-%d-%d", w, j)
				status, body := deliverPush(rc, bases[(w+j)%2], repo, secret, delivery, sha)
				// 201: stored; 200: a retry found the build an earlier,
				// unanswered attempt stored.
				if status != http.StatusCreated && status != http.StatusOK {
					t.Errorf("delivery %s lost: %d %s", delivery, status, body)
					continue
				}
				var b pipeline.Build
				if err := json.Unmarshal(body, &b); err != nil || b.Number < 1 {
					t.Errorf("delivery %s: %v %s", delivery, err, body)
					continue
				}
				mu.Lock()
				byDelivery[delivery] = b.Number
				mu.Unlock()
				switch sent.Add(1) {
				case workers * each / 3:
					close(third)
				case 2 * workers * each / 3:
					close(twoThirds)
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	for _, step := range []chan struct{}{third, twoThirds} {
		select {
		case <-step:
		case <-done:
			// A worker closes step before it ends, so it is closed now
			// unless deliveries failed.
			select {
			case <-step:
			default:
				t.Fatal("the deliveries ended before the etcd member was stopped and started again")
			}
		}
		if step == third {
			leader := cluster.Leader()
			if leader < 0 {
				leader = 0
			}
			t.Logf("stopping etcd member %d (the leader) after %d deliveries", leader, sent.Load())
			cluster.Stop(leader)
			defer cluster.Start(leader) // if the test ends early
			continue
		}
		for i := range pipelinetest.ClusterSize {
			if !cluster.Running(i) {
				t.Logf("starting etcd member %d again after %d deliveries", i, sent.Load())
				cluster.Start(i)
			}
		}
	}
	wg.Wait()
	t.Logf("%d deliveries, %d client retries", len(byDelivery), rc.retries.Load())
	if t.Failed() {
		t.FailNow()
	}
	var numbers []int
	seen := map[int]string{}
	for d, num := range byDelivery {
		if other, dup := seen[num]; dup {
			t.Errorf("deliveries %s and %s got the same build %d", d, other, num)
		}
		seen[num] = d
		numbers = append(numbers, num)
	}
	slices.Sort(numbers)
	for i, num := range numbers {
		if num != i+1 {
			t.Fatalf("build numbers are not 1..%d gap-free: %v", workers*each, numbers)
		}
	}
	alice := tbToken(t, "alice", 1001, "tok-alice")
	for k := 1; k <= workers*each; k++ {
		b := waitFor(t, rc, bases, alice, k, patience, func(b pipeline.Build) bool { return b.Status.Done() })
		if b.Status != pipeline.StatusSuccess {
			t.Errorf("build %d ended %s: %q %+v", k, b.Status, b.Message, b.Stages)
		}
	}
	lines := markLines(t, marks)
	for k := 1; k <= workers*each; k++ {
		if got := lines[strconv.Itoa(k)]; got != 1 {
			t.Errorf("build %d's stage ran %d times, want once", k, got)
		}
	}
	// No more builds than deliveries.
	status, body := rc.do(http.MethodGet, bases[0]+"/api/v1/pipelines/acme/app/builds?limit=200", alice, nil, nil)
	var list []pipeline.Build
	if status != http.StatusOK || json.Unmarshal(body, &list) != nil || len(list) != workers*each {
		t.Errorf("list: %d, %d builds, want %d", status, len(list), workers*each)
	}
}

func TestLosingEveryEtcdMemberAnswers503QuicklyAndRecovers(t *testing.T) {
	cluster := pipelinetest.StartEtcdCluster(t)
	gh := newGitHub(t)
	app := startApp(t, gh, t.TempDir(), "--etcd-endpoints", strings.Join(cluster.Endpoints(), ","))
	rc := newRetryClient()
	createAppPipeline(t, rc, app.URL)
	alice := tbToken(t, "alice", 1001, "tok-alice")
	list := app.URL + "/api/v1/pipelines/acme/app/builds"
	if status, body := rc.do(http.MethodGet, list, alice, nil, nil); status != http.StatusOK {
		t.Fatalf("list: %d %s", status, body)
	}
	repo := gh.Repo("acme", "app")
	sha := repo.Commit("main", map[string]string{".pipeline.yml": specHead + "    stages:\n      - name: quick\n        type: command\n        params: {command: [\"true\"]}\n"}, "spec")
	secret := gh.Hooks("acme", "app")[0].Secret

	cluster.StopAll()
	once := &retryClient{c: &http.Client{Timeout: 30 * time.Second}, attempts: 1}
	cases := []struct {
		name string
		send func() (int, []byte)
	}{
		{"list builds", func() (int, []byte) { return once.do(http.MethodGet, list, alice, nil, nil) }},
		{"push delivery", func() (int, []byte) { return deliverPush(once, app.URL, repo, secret, "during-outage", sha) }},
		{"readiness", func() (int, []byte) { return once.do(http.MethodGet, app.URL+"/readyz", "", nil, nil) }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			start := time.Now()
			status, body := c.send()
			// Bounded by the store's op timeout (5 s), not by the
			// client's 30 s; generous for a loaded machine.
			if d := time.Since(start); d > 25*time.Second {
				t.Errorf("answered after %s, want within 25s", d)
			}
			var e struct {
				Code    int
				Message string
			}
			if status != http.StatusServiceUnavailable || json.Unmarshal(body, &e) != nil || e.Code != status || e.Message == "" {
				t.Errorf("got %d %s, want 503 in the {Code, Message} shape", status, body)
			}
		})
	}

	cluster.StartAll()
	// The client that retries 503s gets through once etcd is back; the
	// delivery that failed is stored when GitHub redelivers it.
	if status, body := rc.do(http.MethodGet, list, alice, nil, nil); status != http.StatusOK {
		t.Fatalf("after recovery, list: %d %s", status, body)
	}
	status, body := deliverPush(rc, app.URL, repo, secret, "during-outage", sha)
	if status != http.StatusCreated {
		t.Fatalf("redelivery after recovery: %d %s", status, body)
	}
	b := waitFor(t, rc, []string{app.URL}, alice, 1, patience, func(b pipeline.Build) bool { return b.Status.Done() })
	if b.Status != pipeline.StatusSuccess {
		t.Fatalf("build after recovery ended %s %q", b.Status, b.Message)
	}
}

// slowProxy stands in front of the stand-in GitHub, delays every request
// by the current delay and records when each was answered and how.
type slowProxy struct {
	delay atomic.Int64 // nanoseconds
	srv   *httptest.Server

	mu   sync.Mutex
	seen []proxied
}

type proxied struct {
	method, path string
	status       int
	at           time.Time
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (p *slowProxy) requests() []proxied {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]proxied(nil), p.seen...)
}

func newSlowProxy(t *testing.T, target string) *slowProxy {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	p := &slowProxy{}
	rp := httputil.NewSingleHostReverseProxy(u)
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(time.Duration(p.delay.Load())):
		case <-r.Context().Done():
			return
		}
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		rp.ServeHTTP(sw, r)
		p.mu.Lock()
		p.seen = append(p.seen, proxied{method: r.Method, path: r.URL.Path, status: sw.status, at: time.Now()})
		p.mu.Unlock()
	}))
	t.Cleanup(p.srv.Close)
	return p
}

func TestSlowOrFailingGitHubStillRecordsBuildsAndRetriesStatuses(t *testing.T) {
	gh := newGitHub(t)
	proxy := newSlowProxy(t, gh.URL)
	api, err := url.Parse(gh.APIURL)
	if err != nil {
		t.Fatal(err)
	}
	// The permission cache outlives the whole test however slow the machine
	// is: reads while GitHub is down answer from it.
	app := startApp(t, gh, t.TempDir(), "--github-api-url", proxy.srv.URL+api.Path, "--github-url", proxy.srv.URL, "--permission-ttl", "24h")
	rc := newRetryClient()
	createAppPipeline(t, rc, app.URL)
	alice := tbToken(t, "alice", 1001, "tok-alice")
	list := app.URL + "/api/v1/pipelines/acme/app/builds"
	if status, body := rc.do(http.MethodGet, list, alice, nil, nil); status != http.StatusOK { // warms the permission cache
		t.Fatalf("list: %d %s", status, body)
	}
	repo := gh.Repo("acme", "app")
	secret := gh.Hooks("acme", "app")[0].Secret
	sha := repo.Commit("main", map[string]string{".pipeline.yml": specHead + "    stages:\n      - name: quick\n        type: command\n        params: {command: [\"true\"]}\n"}, "spec")
	once := &retryClient{c: &http.Client{Timeout: 30 * time.Second}, attempts: 1}

	// A slow GitHub (every call 4 s): deliveries and reads do not wait for
	// it, and the build still runs to its end.
	proxy.delay.Store(int64(4 * time.Second))
	start := time.Now()
	if status, body := deliverPush(once, app.URL, repo, secret, "slow-1", sha); status != http.StatusCreated {
		t.Fatalf("delivery while GitHub is slow: %d %s", status, body)
	}
	if status, body := once.do(http.MethodGet, list, alice, nil, nil); status != http.StatusOK {
		t.Fatalf("list while GitHub is slow: %d %s", status, body)
	}
	// Waiting for GitHub would take at least its 4 s; a busy machine may be
	// slow, but not that slow for two loopback requests.
	if d := time.Since(start); d >= 4*time.Second {
		t.Errorf("a delivery and a read took %s while GitHub answers in 4s: they waited for it", d)
	}
	b := waitFor(t, rc, []string{app.URL}, alice, 1, patience, func(b pipeline.Build) bool { return b.Status.Done() })
	if b.Status != pipeline.StatusSuccess {
		t.Fatalf("build with a slow GitHub ended %s %q", b.Status, b.Message)
	}
	proxy.delay.Store(0)
	// Build 1's status posts (queued behind the slow GitHub) must all be
	// out before failures are injected for build 2, or one of them could
	// take an injected failure.
	for deadline := time.Now().Add(patience); ; time.Sleep(50 * time.Millisecond) {
		final := map[string]string{}
		for _, s := range gh.Statuses("acme", "app", sha) {
			final[s.Context] = s.State
		}
		if final["quick"] == "success" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("build 1's statuses never arrived: %v", final)
		}
	}

	// Failing status posts are retried with backoff until one succeeds.
	for range 2 {
		gh.FailNext("POST", "/statuses/", http.StatusBadGateway, `{"message":"try later"}`)
	}
	sha2 := repo.Commit("main", map[string]string{"README.md": "2"}, "two")
	if status, body := deliverPush(once, app.URL, repo, secret, "flaky-1", sha2); status != http.StatusCreated {
		t.Fatalf("delivery: %d %s", status, body)
	}
	waitFor(t, rc, []string{app.URL}, alice, 2, patience, func(b pipeline.Build) bool { return b.Status.Done() })
	deadline := time.Now().Add(30 * time.Second)
	for {
		var failed, ok []time.Time
		for _, r := range proxy.requests() {
			if r.method == http.MethodPost && strings.Contains(r.path, "/statuses/"+sha2) {
				if r.status >= 500 {
					failed = append(failed, r.at)
				} else if r.status < 300 {
					ok = append(ok, r.at)
				}
			}
		}
		final := map[string]string{}
		for _, s := range gh.Statuses("acme", "app", sha2) {
			final[s.Context] = s.State
		}
		if len(failed) == 2 && final["quick"] == "success" {
			if len(ok) == 0 || ok[0].Sub(failed[1]) < 400*time.Millisecond || failed[1].Sub(failed[0]) < 400*time.Millisecond {
				t.Errorf("status posts at %v (failed) then %v: want pauses between retries", failed, ok)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("statuses not retried to success: %d failed posts, final %v", len(failed), final)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// GitHub down: deliveries are still stored, reads still answer (from
	// the permission cache), and the build ends saying why.
	gh.SetDown(true)
	sha3 := repo.Commit("main", map[string]string{"README.md": "3"}, "three")
	start = time.Now()
	if status, body := deliverPush(once, app.URL, repo, secret, "down-1", sha3); status != http.StatusCreated {
		t.Fatalf("delivery while GitHub is down: %d %s", status, body)
	}
	if status, body := once.do(http.MethodGet, list, alice, nil, nil); status != http.StatusOK {
		t.Fatalf("list while GitHub is down: %d %s", status, body)
	}
	if d := time.Since(start); d >= 4*time.Second {
		t.Errorf("a delivery and a read took %s while GitHub is down", d)
	}
	b = waitFor(t, rc, []string{app.URL}, alice, 3, patience, func(b pipeline.Build) bool { return b.Status.Done() })
	if b.Status != pipeline.StatusFail || !strings.Contains(b.Message, ".pipeline.yml") {
		t.Fatalf("build while GitHub is down ended %s %q, want FAIL naming .pipeline.yml", b.Status, b.Message)
	}
	gh.SetDown(false)
}
