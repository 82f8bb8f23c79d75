package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/pipelinetest/fakebitbucketdc"
)

// dcWorld is a server with the stand-in GitHub and a stand-in Bitbucket
// Data Center: alice is REPO_ADMIN of PRJ/app there, the service account
// "ci" (HTTP access token) reads it.
func dcWorld(t *testing.T) (*world, *fakebitbucketdc.Server, *fakebitbucketdc.Repo) {
	t.Helper()
	dc := fakebitbucketdc.New(t)
	dc.AddOAuthApp("dc-client", "dc-secret")
	dc.AddUser("alice")
	dc.AddUser("ci")
	dc.AddHTTPToken("ci", "ci-http-token")
	repo := dc.AddRepo("PRJ", "app")
	dc.Grant("alice", "PRJ", "app", fakebitbucketdc.RepoAdmin)
	dc.Grant("ci", "PRJ", "app", fakebitbucketdc.RepoRead)
	w := newWorld(t, "--bitbucket-dc-url", dc.URL, "--bitbucket-dc-client-id", "dc-client", "--bitbucket-dc-client-secret", "dc-secret",
		"--bitbucket-dc-clone-user", "ci", "--bitbucket-dc-clone-token", "ci-http-token")
	return w, dc, repo
}

// dcLogin signs user in through the server's Bitbucket Data Center login
// (PKCE) and returns the Kontinuous JWT and user id.
func dcLogin(t *testing.T, w *world, dc *fakebitbucketdc.Server, user string) (string, string) {
	t.Helper()
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Get(w.app.URL + "/api/v1/login/bitbucket-dc/authorize")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	authURL, err := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusFound || err != nil || !strings.HasPrefix(authURL.String(), dc.URL+"/rest/oauth2/latest/authorize?") {
		t.Fatalf("authorize: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	q := authURL.Query()
	if q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "" || !strings.HasPrefix(q.Get("state"), "ks1.") ||
		q.Get("redirect_uri") != w.app.URL+"/auth/callback/bitbucket-dc" || q.Get("scope") != "REPO_ADMIN" {
		t.Fatalf("authorize URL %s", authURL)
	}
	dc.AuthorizeAs(user)
	resp, err = noFollow.Get(authURL.String())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	back, _ := url.Parse(resp.Header.Get("Location"))
	r := w.do("POST", "/api/v1/login/bitbucket-dc?code="+url.QueryEscape(back.Query().Get("code"))+"&state="+url.QueryEscape(back.Query().Get("state")), "", nil)
	expect(t, r, http.StatusOK)
	var res struct {
		JWT    string `json:"jwt"`
		UserID string `json:"user_id"`
		Name   string `json:"user_name"`
	}
	r.json(t, &res)
	if res.JWT == "" || !strings.HasPrefix(res.UserID, "bitbucket-dc|") || res.Name != user {
		t.Fatalf("login %s", r.body)
	}
	return res.JWT, res.UserID
}

func TestBitbucketDataCenterLoginPipelineWebhookBuildAndStatuses(t *testing.T) {
	w, dc, repo := dcWorld(t)

	r := w.do("GET", "/api/v1/forges", "", nil)
	expect(t, r, http.StatusOK)
	if !strings.Contains(string(r.body), `"name":"bitbucket-dc"`) || !strings.Contains(string(r.body), `/api/v1/login/bitbucket-dc/authorize`) {
		t.Fatalf("forges %s", r.body)
	}
	jwt, _ := dcLogin(t, w, dc, "alice")

	r = w.do("GET", "/api/v1/repositories", jwt, nil)
	expect(t, r, http.StatusOK)
	if !strings.Contains(string(r.body), `"full_name":"PRJ/app"`) {
		t.Fatalf("repositories %s", r.body)
	}

	r = w.do("POST", "/api/v1/pipelines", jwt, map[string]any{"owner": "PRJ", "repo": "app", "events": []string{"push", "pull_request"}, "forge": "bitbucket-dc"})
	expect(t, r, http.StatusCreated)
	var p pipeline.Pipeline
	r.json(t, &p)
	if p.Forge != "bitbucket-dc" || p.Owner != "PRJ" || p.Repo != "app" {
		t.Fatalf("pipeline %s", r.body)
	}
	hooks := dc.Hooks("PRJ", "app")
	if len(hooks) != 1 || hooks[0].URL != w.app.URL+"/api/v1/pipelines/PRJ/app/builds" || len(hooks[0].Secret) < 32 {
		t.Fatalf("hooks %+v", hooks)
	}
	// A GitHub user does not see the Data Center pipeline.
	r = w.do("GET", "/api/v1/pipelines/PRJ/app", token(t, "alice", 1001, "tok-alice"), nil)
	expect(t, r, http.StatusNotFound)

	spec := specHead + `    stages:
      - name: greet
        type: command
        params:
          command: ["sh", "-c", "echo hello from $KONTINUOUS_BRANCH; cat README.md"]
`
	before := repo.Head("main")
	sha := repo.Commit("main", map[string]string{".pipeline.yml": spec, "README.md": "dc-readme"}, "add spec")
	ctx := context.Background()

	// Unsigned and wrongly signed deliveries: 401, nothing stored.
	body := fakebitbucketdc.RefsChangedPayload(repo, "alice", "main", before, sha, "UPDATE")
	r = w.do("POST", "/api/v1/pipelines/PRJ/app/builds", "", body, "X-Event-Key", "repo:refs_changed", "X-Request-Id", "r-0")
	expect(t, r, http.StatusUnauthorized)
	r = w.do("POST", "/api/v1/pipelines/PRJ/app/builds", "", body, "X-Event-Key", "repo:refs_changed", "X-Request-Id", "r-0",
		"X-Hub-Signature", fakebitbucketdc.Sign("not-the-secret", body))
	expect(t, r, http.StatusUnauthorized)
	r = w.do("GET", "/api/v1/pipelines/PRJ/app/builds", jwt, nil)
	expect(t, r, http.StatusOK)
	if strings.TrimSpace(string(r.body)) != "[]" {
		t.Fatalf("builds after refused deliveries: %s", r.body)
	}

	ds, err := dc.Deliver(ctx, "PRJ", "app", "repo:refs_changed", body)
	if err != nil || len(ds) != 1 || ds[0].Status != http.StatusCreated {
		t.Fatalf("delivery %+v %v", ds, err)
	}
	var b pipeline.Build
	deadline := time.Now().Add(patience)
	for {
		r = w.do("GET", "/api/v1/pipelines/PRJ/app/builds/1", jwt, nil)
		if r.status == http.StatusOK {
			r.json(t, &b)
			if b.Status.Done() {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("build never ended: %s", r.body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if b.Status != pipeline.StatusSuccess || b.Commit != sha || b.Branch != "main" || b.Event != "push" {
		t.Fatalf("build %+v (%q)", b.Status, b.Message)
	}
	r = w.do("GET", "/api/v1/pipelines/PRJ/app/builds/1/stages/1/logs", jwt, nil, "Accept", "text/plain")
	expect(t, r, http.StatusOK)
	if !strings.Contains(string(r.body), "hello from main") || !strings.Contains(string(r.body), "dc-readme") {
		t.Fatalf("log %s", r.body)
	}
	for {
		var states []string
		for _, st := range dc.Builds("PRJ", "app", sha) {
			if st.Key == "greet" {
				states = append(states, st.State)
			}
		}
		got := strings.Join(states, ",")
		if got == "INPROGRESS,SUCCESSFUL" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("build statuses %q", got)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if st := dc.Builds("PRJ", "app", sha); !strings.HasSuffix(st[len(st)-1].URL, "/api/v1/pipelines/PRJ/app/builds/1") {
		t.Fatalf("status url %+v", st)
	}

	// One push of two branches makes two builds.
	shaA := repo.Commit("a", map[string]string{"a.txt": "a"}, "a")
	shaB := repo.Commit("b", map[string]string{"b.txt": "b"}, "b")
	zero := strings.Repeat("0", 40)
	two := fakebitbucketdc.RefsChangedPayloadOf(repo, "alice",
		fakebitbucketdc.RefChange{Branch: "a", FromHash: zero, ToHash: shaA, Type: "ADD"},
		fakebitbucketdc.RefChange{Branch: "b", FromHash: zero, ToHash: shaB, Type: "ADD"})
	if ds, err := dc.Deliver(ctx, "PRJ", "app", "repo:refs_changed", two); err != nil || ds[0].Status != http.StatusCreated {
		t.Fatalf("two-branch delivery %+v %v", ds, err)
	}
	for n, want := range map[int]string{2: shaA, 3: shaB} {
		r = w.do("GET", fmt.Sprintf("/api/v1/pipelines/PRJ/app/builds/%d", n), jwt, nil)
		expect(t, r, http.StatusOK)
		var nb pipeline.Build
		r.json(t, &nb)
		if nb.Commit != want {
			t.Fatalf("build %d is of %s, want %s", n, nb.Commit, want)
		}
	}

	// A branch deletion makes no build.
	del := fakebitbucketdc.RefsChangedPayload(repo, "alice", "old", sha, strings.Repeat("0", 40), "DELETE")
	if ds, err := dc.Deliver(ctx, "PRJ", "app", "repo:refs_changed", del); err != nil || ds[0].Status != http.StatusAccepted || !strings.Contains(ds[0].Body, "branch deletion") {
		t.Fatalf("deletion delivery %+v %v", ds, err)
	}

	expect(t, w.do("DELETE", "/api/v1/pipelines/PRJ/app", jwt, nil), http.StatusNoContent)
	if h, k := dc.Hooks("PRJ", "app"), dc.AccessKeys("PRJ", "app"); len(h) != 0 || len(k) != 0 {
		t.Fatalf("after delete: hooks %+v keys %+v", h, k)
	}
}
