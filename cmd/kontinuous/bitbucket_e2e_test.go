package main

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/pipelinetest/fakebitbucket"
)

// bbWorld is a running server with GitHub and a stand-in Bitbucket Cloud
// enabled: alice (Bitbucket) is admin of acme/app there.
type bbWorld struct {
	*world
	bb   *fakebitbucket.Server
	repo *fakebitbucket.Repo
}

func newBBWorld(t *testing.T) *bbWorld {
	t.Helper()
	bb := fakebitbucket.New(t)
	bb.AddUser("alice")
	bb.AddUser("erin")
	r := bb.AddRepo("acme", "app")
	r.Grant("alice", "admin")
	w := newWorld(t, "--bitbucket-client-id", bb.ClientID, "--bitbucket-client-secret", bb.ClientSecret,
		"--bitbucket-url", bb.URL, "--bitbucket-api-url", bb.APIURL)
	return &bbWorld{world: w, bb: bb, repo: r}
}

// login signs user in through /api/v1/login/bitbucket and returns the JWT.
func (w *bbWorld) login(user string) (jwt, userID string) {
	w.t.Helper()
	w.bb.SignIn(user)
	cb := "http://ui.test/auth/callback/bitbucket"
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Get(w.app.URL + "/api/v1/login/bitbucket/authorize?redirect_uri=" + url.QueryEscape(cb))
	if err != nil {
		w.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || !strings.HasPrefix(resp.Header.Get("Location"), w.bb.URL+"/site/oauth2/authorize?") {
		w.t.Fatalf("authorize: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, err = noFollow.Get(resp.Header.Get("Location"))
	if err != nil {
		w.t.Fatal(err)
	}
	resp.Body.Close()
	back, _ := url.Parse(resp.Header.Get("Location"))
	q := url.Values{"code": {back.Query().Get("code")}, "state": {back.Query().Get("state")}, "redirect_uri": {cb}}
	r := w.do("POST", "/api/v1/login/bitbucket?"+q.Encode(), "", nil)
	expect(w.t, r, http.StatusOK)
	var res struct {
		JWT      string `json:"jwt"`
		UserID   string `json:"user_id"`
		UserName string `json:"user_name"`
	}
	r.json(w.t, &res)
	if res.UserName != user {
		w.t.Fatalf("login = %+v", res)
	}
	return res.JWT, res.UserID
}

func (w *bbWorld) deliver(d fakebitbucket.Delivery, secret string) reply {
	w.t.Helper()
	resp, err := fakebitbucket.Deliver(context.Background(), w.app.URL+"/api/v1/pipelines/acme/app/builds", secret, d)
	if err != nil {
		w.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return reply{status: resp.StatusCode, header: resp.Header, body: data}
}

func TestBitbucketLoginPipelinePushBuildStatusesAndDelete(t *testing.T) {
	w := newBBWorld(t)
	// The forge is listed for sign-in buttons.
	r := w.do("GET", "/api/v1/forges", "", nil)
	expect(t, r, http.StatusOK)
	if !strings.Contains(string(r.body), `"name":"bitbucket"`) || !strings.Contains(string(r.body), "/api/v1/login/bitbucket/authorize") {
		t.Fatalf("forges = %s", r.body)
	}
	jwt, uid := w.login("alice")
	alice := w.bb.Users("alice")
	if uid != "bitbucket|"+alice.UUID {
		t.Fatalf("user_id %q, want bitbucket|%s", uid, alice.UUID)
	}

	// Repositories come from Bitbucket.
	r = w.do("GET", "/api/v1/repositories", jwt, nil)
	expect(t, r, http.StatusOK)
	if !strings.Contains(string(r.body), `"full_name":"acme/app"`) {
		t.Fatalf("repositories = %s", r.body)
	}

	// A GitHub user cannot ask for a Bitbucket pipeline.
	r = w.do("POST", "/api/v1/pipelines", token(t, "alice", 1001, "tok-alice"), map[string]any{"owner": "acme", "repo": "app", "forge": "bitbucket", "events": []string{"push"}})
	expect(t, r, http.StatusUnauthorized)
	if !strings.Contains(string(r.body), "/api/v1/login/bitbucket/authorize") {
		t.Fatalf("reply %s does not say how to connect", r.body)
	}

	r = w.do("POST", "/api/v1/pipelines", jwt, map[string]any{"owner": "acme", "repo": "app", "forge": "bitbucket", "events": []string{"push", "pull_request"}})
	expect(t, r, http.StatusCreated)
	var p pipeline.Pipeline
	r.json(t, &p)
	if p.Forge != "bitbucket" {
		t.Fatalf("pipeline forge %q", p.Forge)
	}
	hooks, keys := w.repo.Hooks(), w.repo.DeployKeys()
	if len(hooks) != 1 || len(keys) != 1 || len(hooks[0].Secret) < 32 {
		t.Fatalf("hooks %+v keys %+v", hooks, keys)
	}
	// The same name on GitHub is taken: 409.
	expect(t, w.do("POST", "/api/v1/pipelines", token(t, "alice", 1001, "tok-alice"), map[string]any{"owner": "acme", "repo": "app", "events": []string{"push"}}), http.StatusConflict)
	// A GitHub user does not see the Bitbucket pipeline.
	expect(t, w.do("GET", "/api/v1/pipelines/acme/app", token(t, "alice", 1001, "tok-alice"), nil), http.StatusNotFound)

	spec := specHead + `    stages:
      - name: greet
        type: command
        params:
          command: ["sh", "-c", "cat README.md"]
`
	sha := w.repo.Commit("main", map[string]string{".pipeline.yml": spec, "README.md": "from-bitbucket"}, "add spec")
	secret := hooks[0].Secret
	body := w.bb.PushPayload(w.repo, "main", sha, "alice")

	// Refused: unsigned, wrongly signed, another repository.
	expect(t, w.deliver(fakebitbucket.Delivery{Event: "repo:push", Signature: "-", Body: body}, secret), http.StatusUnauthorized)
	expect(t, w.deliver(fakebitbucket.Delivery{Event: "repo:push", Body: body}, "wrong-secret"), http.StatusUnauthorized)
	other := w.bb.AddRepo("acme", "other")
	r = w.deliver(fakebitbucket.Delivery{Event: "repo:push", Body: w.bb.PushPayload(other, "main", other.Head("main"), "alice")}, secret)
	expect(t, r, http.StatusBadRequest)
	expect(t, w.do("GET", "/api/v1/pipelines/acme/app/builds/1", jwt, nil), http.StatusNotFound)

	r = w.deliver(fakebitbucket.Delivery{Event: "repo:push", RequestID: "req-1", Body: body}, secret)
	expect(t, r, http.StatusCreated)
	// The same delivery again makes no second build.
	r2 := w.deliver(fakebitbucket.Delivery{Event: "repo:push", RequestID: "req-1", Body: body}, secret)
	if r2.status != http.StatusOK && r2.status != http.StatusCreated {
		t.Fatalf("redelivery: %d %s", r2.status, r2.body)
	}
	b := w.waitBuildAs(jwt, 1, done)
	if b.Status != pipeline.StatusSuccess || b.Commit != sha {
		t.Fatalf("build ended %s (%s) at %s", b.Status, b.Message, b.Commit)
	}
	expect(t, w.do("GET", "/api/v1/pipelines/acme/app/builds/2", jwt, nil), http.StatusNotFound)
	deadline := time.Now().Add(patience)
	for {
		st := w.repo.Statuses(sha)
		if len(st) >= 2 && st[0].State == "INPROGRESS" && st[len(st)-1].State == "SUCCESSFUL" && st[0].Key == "greet" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("statuses = %+v", st)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// A pull request's 12-character hash is recorded as the full SHA.
	prSHA := w.repo.Commit("feature", map[string]string{"README.md": "pr"}, "pr change")
	r = w.deliver(fakebitbucket.Delivery{Event: "pullrequest:created", Body: w.bb.PullRequestPayload(w.repo, 1, "feature", prSHA, "alice", false)}, secret)
	expect(t, r, http.StatusCreated)
	var pb pipeline.Build
	r.json(t, &pb)
	if pb.Commit != prSHA || pb.Event != "pull_request" {
		t.Fatalf("PR build %+v, want commit %s", pb, prSHA)
	}

	expect(t, w.do("DELETE", "/api/v1/pipelines/acme/app", jwt, nil), http.StatusNoContent)
	if len(w.repo.Hooks()) != 0 || len(w.repo.DeployKeys()) != 0 {
		t.Fatalf("after delete: hooks %+v keys %+v", w.repo.Hooks(), w.repo.DeployKeys())
	}
}

func (w *bbWorld) waitBuildAs(jwt string, n int, cond func(pipeline.Build) bool) pipeline.Build {
	w.t.Helper()
	deadline := time.Now().Add(patience)
	for {
		r := w.do("GET", "/api/v1/pipelines/acme/app/builds/"+strconv.Itoa(n), jwt, nil)
		var b pipeline.Build
		if r.status == http.StatusOK {
			r.json(w.t, &b)
			if cond(b) {
				return b
			}
		}
		if time.Now().After(deadline) {
			w.t.Fatalf("build %d: %d %s", n, r.status, r.body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestBitbucketRefreshRaceMakesOneRefreshAndExpiryAsksToReconnect(t *testing.T) {
	w := newBBWorld(t)
	// The token issued at login is within the server's refresh margin;
	// the refreshed one lasts two hours.
	w.bb.SetTokenTTL(30 * time.Second)
	jwt, _ := w.login("alice")
	w.bb.SetTokenTTL(2 * time.Hour)
	// A slow token endpoint: both requests need the refresh while it runs.
	w.bb.SetRefreshDelay(500 * time.Millisecond)
	before := w.bb.Refreshes()
	var wg sync.WaitGroup
	codes := make([]int, 2)
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("GET", w.app.URL+"/api/v1/repositories", nil)
			req.Header.Set("Authorization", "Bearer "+jwt)
			resp, err := http.DefaultClient.Do(req)
			if err == nil {
				codes[i] = resp.StatusCode
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
	if codes[0] != http.StatusOK || codes[1] != http.StatusOK {
		t.Fatalf("concurrent requests answered %v", codes)
	}
	if got := w.bb.Refreshes() - before; got != 1 {
		t.Fatalf("%d refreshes for two concurrent requests, want 1", got)
	}
	w.bb.SetRefreshDelay(0)

	// The consumer's access is revoked: the next refresh is invalid_grant.
	w.bb.SetTokenTTL(30 * time.Second)
	jwt, _ = w.login("alice")
	w.bb.SetTokenTTL(2 * time.Hour)
	w.bb.RevokeRefreshTokens()
	r := w.do("GET", "/api/v1/repositories", jwt, nil)
	expect(t, r, http.StatusUnauthorized)
	if !strings.Contains(string(r.body), "reconnect through /api/v1/login/bitbucket/authorize") {
		t.Fatalf("expired: %s", r.body)
	}
	// It stays expired without asking Bitbucket again.
	n := w.bb.RefreshAttempts()
	expect(t, w.do("GET", "/api/v1/repositories", jwt, nil), http.StatusUnauthorized)
	if w.bb.RefreshAttempts() != n {
		t.Fatal("an expired connection was refreshed again")
	}
	r = w.do("GET", "/api/v1/user", jwt, nil)
	expect(t, r, http.StatusOK)
	if !strings.Contains(string(r.body), `"connections":[{"forge":"bitbucket","login":"alice","status":"expired"}]`) {
		t.Fatalf("user = %s", r.body)
	}
	// Signing in again reconnects.
	jwt, _ = w.login("alice")
	expect(t, w.do("GET", "/api/v1/repositories", jwt, nil), http.StatusOK)
	r = w.do("GET", "/api/v1/user", jwt, nil)
	if !strings.Contains(string(r.body), `"status":"connected"`) {
		t.Fatalf("user after reconnecting = %s", r.body)
	}
}

// A build of a pipeline whose owner's Bitbucket connection has expired
// fails saying to reconnect (the server cannot read the spec or clone as
// the owner), and the owner's connection shows "expired".
func TestBitbucketBuildOfAnExpiredOwnerFailsSayingToReconnect(t *testing.T) {
	w := newBBWorld(t)
	// Tokens that are always within the server's refresh margin: every
	// use of the owner's connection refreshes it.
	w.bb.SetTokenTTL(30 * time.Second)
	jwt, _ := w.login("alice")
	r := w.do("POST", "/api/v1/pipelines", jwt, map[string]any{"owner": "acme", "repo": "app", "forge": "bitbucket", "events": []string{"push"}})
	expect(t, r, http.StatusCreated)
	spec := specHead + `    stages:
      - name: greet
        type: command
        params:
          command: ["true"]
`
	sha := w.repo.Commit("main", map[string]string{".pipeline.yml": spec}, "add spec")
	secret := w.repo.Hooks()[0].Secret
	// The owner's access is revoked at Bitbucket.
	w.bb.RevokeRefreshTokens()
	r = w.deliver(fakebitbucket.Delivery{Event: "repo:push", Body: w.bb.PushPayload(w.repo, "main", sha, "alice")}, secret)
	if r.status != http.StatusCreated {
		t.Fatalf("delivery: %d %s", r.status, r.body)
	}
	// Bob, who can read the repository and is connected, follows it.
	w.bb.AddUser("bob")
	w.repo.Grant("bob", "read")
	w.bb.SetTokenTTL(2 * time.Hour)
	bob, _ := w.login("bob")
	b := w.waitBuildAs(bob, 1, done)
	if b.Status != pipeline.StatusFail || !strings.Contains(b.Message, "reconnect through /api/v1/login/bitbucket/authorize") {
		t.Fatalf("build ended %s (%q), want FAIL saying to reconnect", b.Status, b.Message)
	}
	r = w.do("GET", "/api/v1/user", jwt, nil)
	if !strings.Contains(string(r.body), `"status":"expired"`) {
		t.Fatalf("user = %s", r.body)
	}
}
