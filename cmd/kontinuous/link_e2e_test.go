package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/pipelinetest"
	"github.com/kontinuous/kontinuous/pipeline/pipelinetest/fakebitbucket"
)

// bbOAuth runs a Bitbucket OAuth round trip against the server at base as
// the stand-in's browser user: GET /api/v1/login/bitbucket/authorize
// (with bearer when not empty), the stand-in's authorize page, and the
// POST of code and state (with finishBearer when not empty). It returns
// the POST's reply.
func bbOAuth(t *testing.T, bb *fakebitbucket.Server, base, bearer, user, finishBearer string) reply {
	t.Helper()
	state, code := bbStart(t, bb, base, bearer, user)
	return bbFinish(t, base, code, state, finishBearer)
}

const bbCallback = "http://ui.test/auth/callback/bitbucket"

// clientAddr gives each login request of these tests its own client
// address (X-Forwarded-For from a trusted proxy): the per-address login
// rate limit stays on, and these tests are not one client hammering it.
var clientAddr struct {
	sync.Mutex
	n int
}

func nextClientAddr() string {
	clientAddr.Lock()
	defer clientAddr.Unlock()
	clientAddr.n++
	return "10.9." + strconv.Itoa(clientAddr.n/250) + "." + strconv.Itoa(clientAddr.n%250+1)
}

// newLinkWorld is newBBWorld behind a trusted proxy (see clientAddr).
func newLinkWorld(t *testing.T) *bbWorld {
	t.Helper()
	bb := fakebitbucket.New(t)
	bb.AddUser("alice")
	bb.AddUser("erin")
	r := bb.AddRepo("acme", "app")
	r.Grant("alice", "admin")
	w := newWorld(t, "--bitbucket-client-id", bb.ClientID, "--bitbucket-client-secret", bb.ClientSecret,
		"--bitbucket-url", bb.URL, "--bitbucket-api-url", bb.APIURL, "--trusted-proxies", "127.0.0.1/32")
	return &bbWorld{world: w, bb: bb, repo: r}
}

// bbStart returns the state and code of an authorization started at base.
func bbStart(t *testing.T, bb *fakebitbucket.Server, base, bearer, user string) (state, code string) {
	t.Helper()
	bb.SignIn(user)
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, _ := http.NewRequest("GET", base+"/api/v1/login/bitbucket/authorize?redirect_uri="+url.QueryEscape(bbCallback), nil)
	req.Header.Set("X-Forwarded-For", nextClientAddr())
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := noFollow.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || !strings.HasPrefix(resp.Header.Get("Location"), bb.URL+"/site/oauth2/authorize?") {
		t.Fatalf("authorize: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, err = noFollow.Get(resp.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	back, _ := url.Parse(resp.Header.Get("Location"))
	return back.Query().Get("state"), back.Query().Get("code")
}

func bbFinish(t *testing.T, base, code, state, bearer string) reply {
	t.Helper()
	q := url.Values{"code": {code}, "state": {state}, "redirect_uri": {bbCallback}}
	return call(t, "POST", base+"/api/v1/login/bitbucket?"+q.Encode(), bearer, nil)
}

// call sends one request to an absolute URL.
func call(t *testing.T, method, u, bearer string, body any) reply {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, u, rd)
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("X-Forwarded-For", nextClientAddr())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return reply{status: resp.StatusCode, header: resp.Header, body: data}
}

type userView struct {
	UserID      string `json:"user_id"`
	Connections []struct {
		Forge, Login, Status string
		Linked               bool   `json:"linked"`
		ReconnectURL         string `json:"reconnect_url"`
	} `json:"connections"`
}

func TestLinkBitbucketToAGitHubSessionCreatesAndBuildsABitbucketPipeline(t *testing.T) {
	w := newLinkWorld(t)
	w.bb.SetPageLen(2) // the repository list must follow every page
	for _, n := range []string{"lib1", "lib2", "lib3"} {
		w.bb.AddRepo("acme", n).Grant("alice", "read")
	}
	alice := token(t, "alice", 1001, "tok-alice") // signed in with GitHub
	bob := token(t, "bob", 1002, "tok-bob")

	// Not linked yet: the Bitbucket pipeline cannot be asked for.
	r := w.do("POST", "/api/v1/pipelines", alice, map[string]any{"owner": "acme", "repo": "app", "forge": "bitbucket", "events": []string{"push"}})
	expect(t, r, http.StatusUnauthorized)

	// A connect state finished without a Bearer token, or with another
	// user's, links nothing.
	state, code := bbStart(t, w.bb, w.app.URL, alice, "alice")
	expect(t, bbFinish(t, w.app.URL, code, state, ""), http.StatusUnauthorized)
	state, code = bbStart(t, w.bb, w.app.URL, alice, "alice")
	r = bbFinish(t, w.app.URL, code, state, bob)
	expect(t, r, http.StatusUnauthorized)
	// A state bob minted, finished by alice (a stolen state): refused.
	state, code = bbStart(t, w.bb, w.app.URL, bob, "alice")
	expect(t, bbFinish(t, w.app.URL, code, state, alice), http.StatusUnauthorized)
	// A garbage Bearer token never falls back to a sign-in.
	expect(t, call(t, "GET", w.app.URL+"/api/v1/login/bitbucket/authorize", "not-a-token", nil), http.StatusUnauthorized)
	for _, tok := range []string{alice, bob} {
		var me userView
		r = w.do("GET", "/api/v1/user", tok, nil)
		expect(t, r, http.StatusOK)
		r.json(t, &me)
		if len(me.Connections) != 0 {
			t.Fatalf("after refused connects: %s", r.body)
		}
	}

	// alice connects her Bitbucket account from her GitHub session.
	r = bbOAuth(t, w.bb, w.app.URL, alice, "alice", alice)
	expect(t, r, http.StatusOK)
	if strings.Contains(string(r.body), `"jwt"`) || !strings.Contains(string(r.body), `"user_id":"github|1001"`) ||
		!strings.Contains(string(r.body), `"forge":"bitbucket"`) || !strings.Contains(string(r.body), `"login":"alice"`) {
		t.Fatalf("connect reply = %s", r.body)
	}
	var me userView
	r = w.do("GET", "/api/v1/user", alice, nil)
	r.json(t, &me)
	if me.UserID != "github|1001" || len(me.Connections) != 1 || me.Connections[0].Forge != "bitbucket" ||
		me.Connections[0].Status != "connected" || !me.Connections[0].Linked || me.Connections[0].ReconnectURL != "/api/v1/login/bitbucket/authorize" {
		t.Fatalf("GET /api/v1/user = %s", r.body)
	}
	// bob cannot link the Bitbucket account alice linked: 409.
	r = bbOAuth(t, w.bb, w.app.URL, bob, "alice", bob)
	expect(t, r, http.StatusConflict)
	r = w.do("GET", "/api/v1/user", bob, nil)
	if strings.Contains(string(r.body), "bitbucket") {
		t.Fatalf("bob after a refused link: %s", r.body)
	}

	// Repositories of both forges, every Bitbucket page, each with its forge.
	r = w.do("GET", "/api/v1/repositories", alice, nil)
	expect(t, r, http.StatusOK)
	var repos []struct{ Forge, FullName string }
	var raw []map[string]any
	r.json(t, &raw)
	for _, m := range raw {
		f, _ := m["forge"].(string)
		n, _ := m["full_name"].(string)
		repos = append(repos, struct{ Forge, FullName string }{f, n})
	}
	want := map[string]bool{"github acme/app": false, "bitbucket acme/app": false, "bitbucket acme/lib1": false, "bitbucket acme/lib2": false, "bitbucket acme/lib3": false}
	for _, rp := range repos {
		if _, ok := want[rp.Forge+" "+rp.FullName]; ok {
			want[rp.Forge+" "+rp.FullName] = true
		}
	}
	for k, seen := range want {
		if !seen {
			t.Fatalf("repositories lack %s: %s", k, r.body)
		}
	}

	// alice creates the Bitbucket pipeline from her GitHub session.
	r = w.do("POST", "/api/v1/pipelines", alice, map[string]any{"owner": "acme", "repo": "app", "forge": "bitbucket", "events": []string{"push"}})
	expect(t, r, http.StatusCreated)
	var p pipeline.Pipeline
	r.json(t, &p)
	if p.Forge != "bitbucket" || len(w.repo.Hooks()) != 1 || len(w.repo.DeployKeys()) != 1 {
		t.Fatalf("pipeline %+v hooks %+v", p, w.repo.Hooks())
	}
	expect(t, w.do("GET", "/api/v1/pipelines/acme/app", alice, nil), http.StatusOK)
	r = w.do("GET", "/api/v1/pipelines", alice, nil)
	if !strings.Contains(string(r.body), `"repo":"app"`) {
		t.Fatalf("list = %s", r.body)
	}
	// bob (GitHub only) does not see it; alice signed in with Bitbucket does.
	expect(t, w.do("GET", "/api/v1/pipelines/acme/app", bob, nil), http.StatusNotFound)
	bbJWT, _ := w.login("alice")
	expect(t, w.do("GET", "/api/v1/pipelines/acme/app", bbJWT, nil), http.StatusOK)

	// A push builds to SUCCESS with Bitbucket statuses, cloned and
	// reported with the linked connection's token.
	spec := specHead + `    stages:
      - name: greet
        type: command
        params:
          command: ["sh", "-c", "cat README.md"]
`
	sha := w.repo.Commit("main", map[string]string{".pipeline.yml": spec, "README.md": "linked"}, "add spec")
	r = w.deliver(fakebitbucket.Delivery{Event: "repo:push", Body: w.bb.PushPayload(w.repo, "main", sha, "alice")}, w.repo.Hooks()[0].Secret)
	expect(t, r, http.StatusCreated)
	b := w.waitBuildAs(alice, 1, done)
	if b.Status != pipeline.StatusSuccess {
		t.Fatalf("build ended %s: %s", b.Status, b.Message)
	}
	deadline := time.Now().Add(patience)
	for {
		st := w.repo.Statuses(sha)
		if len(st) >= 2 && st[0].State == "INPROGRESS" && st[len(st)-1].State == "SUCCESSFUL" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("statuses = %+v", st)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Run on a branch (push access through the linked connection).
	expect(t, w.do("POST", "/api/v1/pipelines/acme/app/builds", alice, map[string]any{"branch": "main"}, "X-Custom-Event", "dashboard"), http.StatusCreated)

	// The linked connection expires: the repositories of the other forge
	// are still listed, the header names the one to reconnect.
	w.bb.SetTokenTTL(30 * time.Second)
	r = bbOAuth(t, w.bb, w.app.URL, alice, "alice", alice) // connecting again refreshes the stored pair
	expect(t, r, http.StatusOK)
	w.bb.SetTokenTTL(2 * time.Hour)
	w.bb.RevokeRefreshTokens()
	r = w.do("GET", "/api/v1/repositories", alice, nil)
	expect(t, r, http.StatusOK)
	if r.header.Get("Kontinuous-Reconnect") != "bitbucket" || !strings.Contains(string(r.body), `"forge":"github"`) || strings.Contains(string(r.body), `"forge":"bitbucket"`) {
		t.Fatalf("with an expired link: %s %v", r.body, r.header)
	}
	r = w.do("GET", "/api/v1/user", alice, nil)
	if !strings.Contains(string(r.body), `"status":"expired"`) {
		t.Fatalf("GET /api/v1/user = %s", r.body)
	}
	expect(t, w.do("GET", "/api/v1/pipelines/acme/app", alice, nil), http.StatusUnauthorized)
	// Reconnecting through the same flow brings it back.
	expect(t, bbOAuth(t, w.bb, w.app.URL, alice, "alice", alice), http.StatusOK)
	r = w.do("GET", "/api/v1/user", alice, nil)
	if !strings.Contains(string(r.body), `"status":"connected"`) {
		t.Fatalf("after reconnect: %s", r.body)
	}
	expect(t, w.do("GET", "/api/v1/pipelines/acme/app", alice, nil), http.StatusOK)
}

// TestRefreshAcrossTwoServersMakesOneRefresh: two server processes on one
// etcd cluster both need a Bitbucket user's refresh at the same moment;
// the cluster-wide per-user lock makes exactly one refresh (the rotated
// refresh token would refuse the second, marking the connection expired)
// and every request succeeds. Real processes: an in-process mutex shared
// by two in-process servers would hide a missing cluster-wide lock.
func TestRefreshAcrossTwoServersMakesOneRefresh(t *testing.T) {
	bin := buildServer(t)
	cluster := pipelinetest.StartEtcdCluster(t)
	gh := newGitHub(t)
	bb := fakebitbucket.New(t)
	bb.AddUser("alice")
	bb.AddRepo("acme", "app").Grant("alice", "admin")
	eps := strings.Join(cluster.Endpoints(), ",")
	var urls []string
	for range 2 {
		p := startProcess(t, bin, "--listen", "127.0.0.1:0", "--data-dir", t.TempDir(), "--auth-secret", testSecret,
			"--github-api-url", gh.APIURL, "--github-url", gh.URL, "--log-level", "info",
			"--etcd-endpoints", eps, "--trusted-proxies", "127.0.0.1/32",
			"--bitbucket-client-id", bb.ClientID, "--bitbucket-client-secret", bb.ClientSecret,
			"--bitbucket-url", bb.URL, "--bitbucket-api-url", bb.APIURL)
		urls = append(urls, p.url)
	}

	// The token issued at login is within the refresh margin.
	bb.SetTokenTTL(30 * time.Second)
	r := bbOAuth(t, bb, urls[0], "", "alice", "")
	expect(t, r, http.StatusOK)
	var login struct{ JWT string }
	r.json(t, &login)
	bb.SetTokenTTL(2 * time.Hour)
	// A slow token endpoint: every request needs the refresh while it runs.
	bb.SetRefreshDelay(300 * time.Millisecond)
	before := bb.Refreshes()

	const perServer = 4
	codes := make([]int, 2*perServer)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			req, _ := http.NewRequest("GET", urls[i%2]+"/api/v1/repositories", nil)
			req.Header.Set("Authorization", "Bearer "+login.JWT)
			resp, err := http.DefaultClient.Do(req)
			if err == nil {
				codes[i] = resp.StatusCode
				resp.Body.Close()
			}
		}()
	}
	close(start)
	wg.Wait()
	for i, c := range codes {
		if c != http.StatusOK {
			t.Errorf("request %d (server %d) answered %d", i, i%2, c)
		}
	}
	if got := bb.Refreshes() - before; got != 1 {
		t.Errorf("%d refreshes for concurrent requests on two servers, want 1 (attempts %d)", got, bb.RefreshAttempts())
	}
	for _, u := range urls {
		r := call(t, "GET", u+"/api/v1/user", login.JWT, nil)
		if !strings.Contains(string(r.body), `"status":"connected"`) {
			t.Errorf("%s/api/v1/user = %s", u, r.body)
		}
	}
}
