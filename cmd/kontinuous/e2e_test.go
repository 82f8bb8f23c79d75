package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/kontinuous/kontinuous/auth"
	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/pipelinetest/fakegithub"
)

// testSecret is the shared secret of test servers (base64url of 32 bytes).
var testSecret = base64.RawURLEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))

// world is a running server with a stand-in GitHub.
type world struct {
	t     *testing.T
	gh    *fakegithub.Server
	app   *App
	dir   string
	extra []string
}

// users of the stand-in GitHub: alice is admin of acme/app, bob has no
// access, carol can push, dave can read.
func newWorld(t *testing.T, extra ...string) *world {
	t.Helper()
	gh := fakegithub.New(t)
	gh.AddUser("alice", 1001, "tok-alice")
	gh.AddUser("bob", 1002, "tok-bob")
	gh.AddUser("carol", 1003, "tok-carol")
	gh.AddUser("dave", 1004, "tok-dave")
	gh.AddRepo("acme", "app")
	gh.Grant("alice", "acme", "app", "admin")
	gh.Grant("carol", "acme", "app", "push")
	gh.Grant("dave", "acme", "app", "read")
	w := &world{t: t, gh: gh, dir: t.TempDir(), extra: extra}
	w.start()
	return w
}

func (w *world) start() {
	w.t.Helper()
	args := append([]string{"--listen", "127.0.0.1:0", "--data-dir", w.dir, "--auth-secret", testSecret,
		"--github-api-url", w.gh.APIURL, "--github-url", w.gh.URL, "--log-level", "warn"}, append(testIsolation(), w.extra...)...)
	cfg, err := LoadConfig(args, func(string) string { return "" }, io.Discard)
	if err != nil {
		w.t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(testWriter{w.t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	app, err := Start(w.t.Context(), cfg, logger)
	if err != nil {
		w.t.Fatal(err)
	}
	w.app = app
	w.t.Cleanup(func() {
		if w.app != nil {
			_ = w.app.Shutdown(context.Background()) // test teardown
		}
	})
}

func (w *world) stop() {
	w.t.Helper()
	if err := w.app.Shutdown(context.Background()); err != nil {
		w.t.Fatal(err)
	}
	w.app = nil
}

type testWriter struct{ t *testing.T }

func (tw testWriter) Write(p []byte) (int, error) {
	tw.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// token mints an HS256 token as scripts/jwt-gen does.
func token(t *testing.T, login string, id int, ghToken string) string {
	t.Helper()
	claims := jwt.MapClaims{
		"user_id":    fmt.Sprintf("github|%d", id),
		"name":       login,
		"exp":        time.Now().Add(time.Hour).Unix(),
		"iat":        time.Now().Unix(),
		"identities": []any{map[string]any{"provider": "github", "access_token": ghToken}},
	}
	secret, _ := auth.DecodeSecret(testSecret)
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(secret)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

type reply struct {
	status int
	header http.Header
	body   []byte
}

func (r reply) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

func (w *world) do(method, path, tok string, body any, hdr ...string) reply {
	w.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	case string:
		rd = strings.NewReader(b)
	default:
		data, _ := json.Marshal(b)
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, w.app.URL+path, rd)
	if err != nil {
		w.t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		w.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return reply{status: resp.StatusCode, header: resp.Header, body: data}
}

func expect(t *testing.T, r reply, status int) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d: %s", r.status, status, r.body)
	}
	if status >= 400 {
		var e struct {
			Code    int
			Message string
		}
		if err := json.Unmarshal(r.body, &e); err != nil || e.Code != status || e.Message == "" {
			t.Fatalf("error body %q is not {Code, Message} with Code %d", r.body, status)
		}
	}
}

// createPipeline makes acme/app as alice.
func (w *world) createPipeline(events ...string) pipeline.Pipeline {
	w.t.Helper()
	if len(events) == 0 {
		events = []string{"push", "pull_request"}
	}
	r := w.do("POST", "/api/v1/pipelines", token(w.t, "alice", 1001, "tok-alice"), map[string]any{"owner": "acme", "repo": "app", "events": events})
	expect(w.t, r, http.StatusCreated)
	var p pipeline.Pipeline
	r.json(w.t, &p)
	return p
}

// distinct makes a payload unique to tag (an extra top-level field), as
// GitHub's payloads of distinct deliveries are: the server remembers
// deliveries by a hash of their signed body.
func distinct(body []byte, tag string) []byte {
	return append([]byte(fmt.Sprintf(`{"kontinuous_test_delivery":%q,`, tag)), body[1:]...)
}

// push commits files on main and delivers a signed push webhook.
func (w *world) push(files map[string]string, delivery string) (string, reply) {
	w.t.Helper()
	repo := w.gh.Repo("acme", "app")
	before := repo.Head("main")
	sha := repo.Commit("main", files, "change")
	body := fakegithub.PushPayload(repo, "main", before, sha, "alice")
	return sha, w.deliver("push", delivery, body, w.hookSecret())
}

func (w *world) hookSecret() string {
	w.t.Helper()
	hooks := w.gh.Hooks("acme", "app")
	if len(hooks) != 1 {
		w.t.Fatalf("%d webhooks installed, want 1", len(hooks))
	}
	return hooks[0].Secret
}

func (w *world) deliver(event, delivery string, body []byte, secret string) reply {
	w.t.Helper()
	hdr := []string{"X-GitHub-Event", event, "X-GitHub-Delivery", delivery}
	if secret != "" {
		hdr = append(hdr, "X-Hub-Signature-256", fakegithub.SignPayload(secret, body))
	}
	return w.do("POST", "/api/v1/pipelines/acme/app/builds", "", body, hdr...)
}

// waitBuild polls a build until cond holds.
func (w *world) waitBuild(n int, cond func(pipeline.Build) bool) pipeline.Build {
	w.t.Helper()
	return w.waitBuildWithin(patience, n, cond)
}

// patience bounds every wait for a condition that must come true:
// generous, since CI runs with -race on a busy 2-core machine. A passing
// test never waits that long; only a broken one does.
const patience = 3 * time.Minute

// waitBuildWithin polls build n until cond holds, for at most within.
func (w *world) waitBuildWithin(within time.Duration, n int, cond func(pipeline.Build) bool) pipeline.Build {
	w.t.Helper()
	tok := token(w.t, "alice", 1001, "tok-alice")
	deadline := time.Now().Add(within)
	var b pipeline.Build
	for time.Now().Before(deadline) {
		r := w.do("GET", fmt.Sprintf("/api/v1/pipelines/acme/app/builds/%d", n), tok, nil)
		if r.status == http.StatusOK {
			r.json(w.t, &b)
			if cond(b) {
				return b
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	w.t.Fatalf("build %d never reached the expected state; last: status %s stages %+v message %q", n, b.Status, b.Stages, b.Message)
	return b
}

func done(b pipeline.Build) bool { return b.Status.Done() }

func (w *world) stageLog(n, stage int) string {
	w.t.Helper()
	r := w.do("GET", fmt.Sprintf("/api/v1/pipelines/acme/app/builds/%d/stages/%d/logs", n, stage), token(w.t, "alice", 1001, "tok-alice"), nil, "Accept", "text/plain")
	expect(w.t, r, http.StatusOK)
	return string(r.body)
}

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

func TestPushWebhookRunsBuildToSuccess(t *testing.T) {
	w := newWorld(t)
	w.createPipeline()
	spec := specHead + `    secrets: [creds]
    vars:
      GREETING: hello
    stages:
      - name: greet
        type: command
        params:
          command: ["sh", "-c", "echo $GREETING from $KONTINUOUS_BRANCH; cat README.md; echo token=$API_TOKEN"]
      - name: second
        type: command
        params:
          command: ["echo", "stage two"]
`
	alice := token(t, "alice", 1001, "tok-alice")
	expect(t, w.do("PUT", "/api/v1/pipelines/acme/app/secrets/creds", alice, map[string]any{"data": map[string]string{"API_TOKEN": "sup3r-s3cret-value"}}), http.StatusOK)
	sha, r := w.push(map[string]string{".pipeline.yml": spec, "README.md": "readme-content"}, "d-1")
	expect(t, r, http.StatusCreated)
	var b pipeline.Build
	r.json(t, &b)
	if b.Number != 1 || b.Commit != sha || b.Branch != "main" || b.Event != "push" {
		t.Fatalf("build = %+v", b)
	}
	b = w.waitBuild(1, done)
	if b.Status != pipeline.StatusSuccess || len(b.Stages) != 2 {
		t.Fatalf("build ended %s (%q) with %d stages", b.Status, b.Message, len(b.Stages))
	}
	for _, st := range b.Stages {
		if st.Status != pipeline.StatusSuccess || st.Started == 0 || st.Finished == 0 {
			t.Errorf("stage %+v", st)
		}
	}
	log := w.stageLog(1, 1)
	for _, want := range []string{"hello from main", "readme-content", "token=********"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	if strings.Contains(log, "sup3r-s3cret-value") {
		t.Errorf("secret value in log:\n%s", log)
	}
	if !strings.Contains(w.stageLog(1, 2), "stage two") {
		t.Error("second stage log lacks its output")
	}
	// JSON shape of the original UI.
	r = w.do("GET", "/api/v1/pipelines/acme/app/builds/1/stages/1/logs", alice, nil)
	expect(t, r, http.StatusOK)
	var files []struct{ Filename, Content string }
	r.json(t, &files)
	if len(files) != 1 || files[0].Filename == "" {
		t.Fatalf("logs = %s", r.body)
	}
	// Commit statuses, one context per stage, ending in success.
	deadline := time.Now().Add(patience)
	for {
		st := w.gh.Statuses("acme", "app", sha)
		final := map[string]string{}
		for _, s := range st {
			final[s.Context] = s.State
		}
		if final["greet"] == "success" && final["second"] == "success" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("statuses = %+v", st)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestFailingStageStopsBuild(t *testing.T) {
	w := newWorld(t)
	w.createPipeline()
	spec := specHead + `    stages:
      - name: bad
        type: command
        params: {command: ["sh", "-c", "echo about to fail; exit 3"]}
      - name: never
        type: command
        params: {command: ["echo", "should not run"]}
`
	_, r := w.push(map[string]string{".pipeline.yml": spec}, "d-1")
	expect(t, r, http.StatusCreated)
	b := w.waitBuild(1, done)
	if b.Status != pipeline.StatusFail || b.Stages[0].Status != pipeline.StatusFail || b.Stages[1].Status != pipeline.StatusSkipped {
		t.Fatalf("build %s, stages %s/%s", b.Status, b.Stages[0].Status, b.Stages[1].Status)
	}
	if !strings.Contains(b.Stages[0].Message, "3") {
		t.Errorf("stage message %q does not give the exit status", b.Stages[0].Message)
	}
}

func TestInvalidSpecFailsBuildNamingTheField(t *testing.T) {
	w := newWorld(t)
	w.createPipeline()
	spec := specHead + `    stages:
      - name: broken
        type: command
        params: {}
`
	_, r := w.push(map[string]string{".pipeline.yml": spec}, "d-1")
	expect(t, r, http.StatusCreated)
	b := w.waitBuild(1, done)
	if b.Status != pipeline.StatusFail || !strings.Contains(b.Message, "command") || !strings.Contains(b.Message, "broken") {
		t.Fatalf("build %s message %q", b.Status, b.Message)
	}
}

func TestWaitStageNeedsApprovalThenContinues(t *testing.T) {
	w := newWorld(t)
	w.createPipeline()
	spec := specHead + `    stages:
      - name: one
        type: command
        params: {command: ["echo", "one"]}
      - name: approve
        type: wait
        params: {message: "ship it?"}
      - name: three
        type: command
        params: {command: ["echo", "three"]}
`
	_, r := w.push(map[string]string{".pipeline.yml": spec}, "d-1")
	expect(t, r, http.StatusCreated)
	b := w.waitBuild(1, func(b pipeline.Build) bool { return b.Status == pipeline.StatusWaiting || b.Status.Done() })
	if b.Status != pipeline.StatusWaiting || b.Stages[1].Status != pipeline.StatusWaiting || b.Stages[1].Message != "ship it?" {
		t.Fatalf("build %s stages %+v", b.Status, b.Stages)
	}
	// Read access cannot approve; bob (no access) gets 404.
	expect(t, w.do("POST", "/api/v1/pipelines/acme/app/builds/1/stages/2?continue=yes", token(t, "dave", 1004, "tok-dave"), nil), http.StatusForbidden)
	expect(t, w.do("POST", "/api/v1/pipelines/acme/app/builds/1/stages/2?continue=yes", token(t, "bob", 1002, "tok-bob"), nil), http.StatusNotFound)
	expect(t, w.do("POST", "/api/v1/pipelines/acme/app/builds/1/stages/2?continue=yes", "", nil), http.StatusUnauthorized)
	// Approving a stage that is not waiting is a conflict.
	expect(t, w.do("POST", "/api/v1/pipelines/acme/app/builds/1/stages/1?continue=yes", token(t, "carol", 1003, "tok-carol"), nil), http.StatusConflict)
	expect(t, w.do("POST", "/api/v1/pipelines/acme/app/builds/1/stages/2?continue=yes", token(t, "carol", 1003, "tok-carol"), nil), http.StatusOK)
	b = w.waitBuild(1, done)
	if b.Status != pipeline.StatusSuccess || b.Stages[2].Status != pipeline.StatusSuccess {
		t.Fatalf("after approval: build %s stages %+v", b.Status, b.Stages)
	}
}

func TestCancelKillsRunningProcess(t *testing.T) {
	w := newWorld(t)
	w.createPipeline()
	marker := w.dir + "/cancel-marker"
	spec := specHead + `    stages:
      - name: slow
        type: command
        params: {command: ["sh", "-c", "echo started; sleep 30; touch ` + marker + `"]}
`
	_, r := w.push(map[string]string{".pipeline.yml": spec}, "d-1")
	expect(t, r, http.StatusCreated)
	w.waitBuild(1, func(b pipeline.Build) bool {
		return len(b.Stages) == 1 && b.Stages[0].Status == pipeline.StatusRunning && strings.Contains(w.stageLog(1, 1), "started")
	})
	start := time.Now()
	expect(t, w.do("POST", "/api/v1/pipelines/acme/app/builds/1/cancel", token(t, "carol", 1003, "tok-carol"), nil), http.StatusOK)
	b := w.waitBuild(1, func(b pipeline.Build) bool { return b.Stages[0].Status.Done() })
	if b.Status != pipeline.StatusCanceled || b.Stages[0].Status != pipeline.StatusCanceled {
		t.Fatalf("build %s stage %s", b.Status, b.Stages[0].Status)
	}
	// The stage sleeps 30 s: a cancel that waited for it took longer.
	if time.Since(start) > 25*time.Second {
		t.Fatalf("cancel took %s", time.Since(start))
	}
	expect(t, w.do("POST", "/api/v1/pipelines/acme/app/builds/1/cancel", token(t, "carol", 1003, "tok-carol"), nil), http.StatusConflict)
}

func TestConcurrentPushesGetGapFreeNumbers(t *testing.T) {
	w := newWorld(t)
	w.createPipeline()
	spec := specHead + `    stages:
      - name: quick
        type: command
        params: {command: ["true"]}
`
	repo := w.gh.Repo("acme", "app")
	sha := repo.Commit("main", map[string]string{".pipeline.yml": spec}, "spec")
	secret := w.hookSecret()
	const n = 32
	var wg sync.WaitGroup
	nums := make(chan int, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := distinct(fakegithub.PushPayload(repo, "main", sha, sha, "alice"), fmt.Sprintf("delivery-%d", i))
			r := w.deliver("push", fmt.Sprintf("delivery-%d", i), body, secret)
			if r.status != http.StatusCreated {
				t.Errorf("push %d: %d %s", i, r.status, r.body)
				return
			}
			var b pipeline.Build
			r.json(t, &b)
			nums <- b.Number
		}()
	}
	wg.Wait()
	close(nums)
	seen := map[int]bool{}
	for num := range nums {
		if seen[num] {
			t.Errorf("number %d given twice", num)
		}
		seen[num] = true
	}
	for i := 1; i <= n; i++ {
		if !seen[i] {
			t.Errorf("number %d missing", i)
		}
	}
	for i := 1; i <= n; i++ {
		w.waitBuild(i, done)
	}
}

func TestWebhookRejectsBadDeliveriesAndStoresNothing(t *testing.T) {
	w := newWorld(t)
	w.createPipeline()
	repo := w.gh.Repo("acme", "app")
	sha := repo.Commit("main", map[string]string{"x": "y"}, "c")
	body := fakegithub.PushPayload(repo, "main", sha, sha, "alice")
	secret := w.hookSecret()
	other := w.gh.AddRepo("acme", "other")
	otherSHA := other.Commit("main", map[string]string{"x": "y"}, "c")
	cases := []struct {
		name   string
		body   []byte
		secret string
		event  string
		want   int
	}{
		{"forged signature", body, "not-the-secret", "push", http.StatusUnauthorized},
		{"missing signature", body, "", "push", http.StatusUnauthorized},
		{"malformed body", []byte(`{"ref": 12`), secret, "push", http.StatusBadRequest},
		{"oversize body", bytes.Repeat([]byte("a"), 26<<20), secret, "push", http.StatusRequestEntityTooLarge},
		{"other repository", fakegithub.PushPayload(other, "main", otherSHA, otherSHA, "alice"), secret, "push", http.StatusBadRequest},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			expect(t, w.deliver(c.event, fmt.Sprintf("bad-%d", i), c.body, c.secret), c.want)
		})
	}
	r := w.do("GET", "/api/v1/pipelines/acme/app/builds", token(t, "alice", 1001, "tok-alice"), nil)
	expect(t, r, http.StatusOK)
	if strings.TrimSpace(string(r.body)) != "[]" {
		t.Fatalf("builds stored after bad deliveries: %s", r.body)
	}
	// ping → 200 and no build; unsubscribed event → 202.
	expect(t, w.deliver("ping", "p-1", fakegithub.PingPayload(repo), secret), http.StatusOK)
	expect(t, w.deliver("deployment", "dep-1", fakegithub.DeploymentPayload(repo, sha, "main", "production"), secret), http.StatusAccepted)
}

func TestRedeliveryReturnsOriginalBuild(t *testing.T) {
	w := newWorld(t)
	w.createPipeline()
	spec := specHead + `    stages:
      - name: quick
        type: command
        params: {command: ["true"]}
`
	repo := w.gh.Repo("acme", "app")
	before := repo.Head("main")
	sha := repo.Commit("main", map[string]string{".pipeline.yml": spec}, "change")
	body := fakegithub.PushPayload(repo, "main", before, sha, "alice")
	expect(t, w.deliver("push", "same-delivery", body, w.hookSecret()), http.StatusCreated)
	// A redelivery (same id, same signed body), and a replay of the signed
	// body under a new delivery id: both answer the original build.
	for _, id := range []string{"same-delivery", "replayed-under-a-new-id"} {
		again := w.deliver("push", id, body, w.hookSecret())
		expect(t, again, http.StatusOK)
		var b pipeline.Build
		again.json(t, &b)
		if b.Number != 1 {
			t.Fatalf("delivery %s gave build %d", id, b.Number)
		}
	}
	// A delivery without an id is refused.
	r := w.do("POST", "/api/v1/pipelines/acme/app/builds", "", body,
		"X-GitHub-Event", "push", "X-Hub-Signature-256", fakegithub.SignPayload(w.hookSecret(), body))
	expect(t, r, http.StatusBadRequest)
	r = w.do("GET", "/api/v1/pipelines/acme/app/builds", token(t, "alice", 1001, "tok-alice"), nil)
	var list []pipeline.Build
	r.json(t, &list)
	if len(list) != 1 {
		t.Fatalf("%d builds after a redelivery and a replay", len(list))
	}
}

func TestServerRestartMidBuildEndsTheBuild(t *testing.T) {
	// The stopping server releases the build (a best-effort write); when
	// a loaded machine misses that, the restarted server takes the build
	// over once its runner is stale: keep that short for the test.
	w := newWorld(t, "--stale-after", "3s")
	w.createPipeline()
	spec := specHead + `    stages:
      - name: slow
        type: command
        params: {command: ["sh", "-c", "echo started; sleep 60"]}
`
	_, r := w.push(map[string]string{".pipeline.yml": spec}, "d-1")
	expect(t, r, http.StatusCreated)
	w.waitBuild(1, func(b pipeline.Build) bool { return len(b.Stages) == 1 && b.Stages[0].Status == pipeline.StatusRunning })
	w.stop()
	w.start()
	b := w.waitBuild(1, done)
	if b.Status != pipeline.StatusFail || !strings.Contains(b.Stages[0].Message, "server stopped") {
		t.Fatalf("after restart: build %s stage %s %q", b.Status, b.Stages[0].Status, b.Stages[0].Message)
	}
}

func TestManualTriggerPinsBranchHead(t *testing.T) {
	w := newWorld(t)
	w.createPipeline()
	spec := specHead + `    stages:
      - name: quick
        type: command
        params: {command: ["true"]}
`
	sha := w.gh.Repo("acme", "app").Commit("main", map[string]string{".pipeline.yml": spec}, "spec")
	r := w.do("POST", "/api/v1/pipelines/acme/app/builds", token(t, "carol", 1003, "tok-carol"), map[string]string{"author": "carol"}, "X-Custom-Event", "cli")
	expect(t, r, http.StatusCreated)
	var b pipeline.Build
	r.json(t, &b)
	if b.Commit != sha || b.Branch != "main" || b.Event != "cli" {
		t.Fatalf("build = %+v", b)
	}
	// Read access cannot trigger; no token is 401.
	expect(t, w.do("POST", "/api/v1/pipelines/acme/app/builds", token(t, "dave", 1004, "tok-dave"), map[string]string{}, "X-Custom-Event", "dashboard"), http.StatusForbidden)
	expect(t, w.do("POST", "/api/v1/pipelines/acme/app/builds", "", map[string]string{}, "X-Custom-Event", "dashboard"), http.StatusUnauthorized)
	w.waitBuild(1, done)
	// Restart makes build 2 of the same commit.
	r = w.do("POST", "/api/v1/pipelines/acme/app/builds/1/restart", token(t, "carol", 1003, "tok-carol"), nil)
	expect(t, r, http.StatusCreated)
	r.json(t, &b)
	if b.Number != 2 || b.Commit != sha {
		t.Fatalf("restart = %+v", b)
	}
}

func TestFollowStreamsLogLinesLiveUntilStageEnds(t *testing.T) {
	w := newWorld(t)
	w.createPipeline()
	spec := specHead + `    stages:
      - name: ticker
        type: command
        params: {command: ["sh", "-c", "for i in 1 2 3; do echo tick $i; sleep 0.3; done"]}
`
	_, r := w.push(map[string]string{".pipeline.yml": spec}, "d-1")
	expect(t, r, http.StatusCreated)
	resp := w.follow(token(t, "dave", 1004, "tok-dave"), 1, 1)
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("follow: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	body, err := io.ReadAll(resp.Body) // ends when the stage ends
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"data: tick 1", "data: tick 3", "event: end"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("stream lacks %q:\n%s", want, body)
		}
	}
	// Strangers cannot follow.
	resp2 := w.follow(token(t, "bob", 1002, "tok-bob"), 1, 1)
	resp2.Body.Close()
	if resp2.StatusCode != http.StatusNotFound {
		t.Fatalf("bob follows: %d", resp2.StatusCode)
	}
}

// follow opens stage's log of build n as an event stream.
func (w *world) follow(tok string, n, stage int) *http.Response {
	w.t.Helper()
	req, _ := http.NewRequest("GET", fmt.Sprintf("%s/api/v1/pipelines/acme/app/builds/%d/stages/%d/logs?follow=true", w.app.URL, n, stage), nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		w.t.Fatal(err)
	}
	return resp
}

func TestPullRequestFromForkBuildsHeadWithoutSecrets(t *testing.T) {
	w := newWorld(t, "--allow-fork-builds")
	w.createPipeline()
	alice := token(t, "alice", 1001, "tok-alice")
	expect(t, w.do("PUT", "/api/v1/pipelines/acme/app/secrets/creds", alice, map[string]any{"data": map[string]string{"API_TOKEN": "fork-must-not-see"}}), http.StatusOK)
	spec := specHead + `    secrets: [creds]
    stages:
      - name: show
        type: command
        params: {command: ["sh", "-c", "echo token=[$API_TOKEN]"]}
`
	repo := w.gh.Repo("acme", "app")
	sha := repo.Commit("feature", map[string]string{".pipeline.yml": spec}, "pr")
	r := w.deliver("pull_request", "pr-1", fakegithub.PullRequestPayload(repo, "opened", 7, "feature", sha, true), w.hookSecret())
	expect(t, r, http.StatusCreated)
	var b pipeline.Build
	r.json(t, &b)
	if b.Commit != sha || b.Branch != "feature" || b.Event != "pull_request" {
		t.Fatalf("build = %+v", b)
	}
	b = w.waitBuild(b.Number, done)
	if b.Status != pipeline.StatusSuccess {
		t.Fatalf("build %s %q", b.Status, b.Message)
	}
	if log := w.stageLog(b.Number, 1); !strings.Contains(log, "token=[]") {
		t.Fatalf("fork build saw secrets:\n%s", log)
	}
	// closed pull requests make no build.
	expect(t, w.deliver("pull_request", "pr-2", fakegithub.PullRequestPayload(repo, "closed", 7, "feature", sha, true), w.hookSecret()), http.StatusAccepted)
}

func TestGracefulShutdownStopsServing(t *testing.T) {
	w := newWorld(t)
	url := w.app.URL
	w.stop()
	if _, err := http.Get(url + "/healthz"); err == nil {
		t.Fatal("still serving after shutdown")
	}
	// The data dir is reusable at once: embedded etcd stopped cleanly.
	w.start()
	expect(t, w.do("GET", "/readyz", "", nil), http.StatusOK)
}

func TestSlackNotifiedAtBuildEndWhenSpecAsks(t *testing.T) {
	got := make(chan map[string]any, 1)
	slack := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m map[string]any
		_ = json.NewDecoder(r.Body).Decode(&m) // a bad body fails the assertions below
		got <- m
	}))
	defer slack.Close()
	// The stand-in Slack is plain HTTP on loopback: allowed only with
	// --notify-allow-private (notify_test.go shows the default refusing it).
	w := newWorld(t, "--notify-allow-private")
	w.createPipeline()
	alice := token(t, "alice", 1001, "tok-alice")
	expect(t, w.do("PUT", "/api/v1/pipelines/acme/app/secrets/slack", alice, map[string]any{"data": map[string]string{
		"slackurl": slack.URL + "/hook", "slackchannel": "#ci", "slackuser": "kontinuous"}}), http.StatusOK)
	spec := specHead + `    notif:
      - type: slack
        secrets: [slack]
    stages:
      - name: quick
        type: command
        params: {command: ["true"]}
`
	_, r := w.push(map[string]string{".pipeline.yml": spec}, "d-1")
	expect(t, r, http.StatusCreated)
	w.waitBuild(1, done)
	select {
	case m := <-got:
		if m["channel"] != "#ci" || m["username"] != "kontinuous" || !strings.Contains(fmt.Sprint(m["text"]), "SUCCESS") {
			t.Fatalf("slack message = %v", m)
		}
	case <-time.After(patience):
		t.Fatal("no slack notification")
	}
}

func TestFlakyGitHubStillRecordsAndRunsTheBuild(t *testing.T) {
	w := newWorld(t)
	w.createPipeline()
	spec := specHead + `    stages:
      - name: quick
        type: command
        params: {command: ["echo", "ran"]}
`
	// The first read of .pipeline.yml fails with a 502 from GitHub.
	w.gh.FailNext("GET", "/contents/", http.StatusBadGateway, `{"message":"server error"}`)
	_, r := w.push(map[string]string{".pipeline.yml": spec}, "d-1")
	expect(t, r, http.StatusCreated)
	b := w.waitBuild(1, done)
	if b.Status != pipeline.StatusSuccess {
		t.Fatalf("build %s %q", b.Status, b.Message)
	}
}
