package bitbucketdc_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/forge/bitbucketdc"
	"github.com/kontinuous/kontinuous/pipeline/pipelinetest/fakebitbucketdc"
)

const redirect = "http://kontinuous.example/auth/callback/bitbucket-dc"

func setup(t *testing.T) (*fakebitbucketdc.Server, *bitbucketdc.Forge, *fakebitbucketdc.Repo) {
	t.Helper()
	s := fakebitbucketdc.New(t)
	s.AddOAuthApp("cid", "csecret")
	s.AddUser("alice")
	s.AddUser("ci")
	s.AddHTTPToken("ci", "ci-http-token")
	r := s.AddRepo("PRJ", "app")
	s.Grant("alice", "PRJ", "app", fakebitbucketdc.RepoAdmin)
	s.Grant("ci", "PRJ", "app", fakebitbucketdc.RepoRead)
	f, err := bitbucketdc.New(bitbucketdc.Config{URL: s.URL, ClientID: "cid", ClientSecret: "csecret", RedirectURL: redirect,
		CloneUser: "ci", CloneToken: "ci-http-token", PermissionTTL: time.Nanosecond})
	if err != nil {
		t.Fatal(err)
	}
	return s, f, r
}

// login runs the OAuth dance through the stand-in's authorize page.
func login(t *testing.T, s *fakebitbucketdc.Server, f *bitbucketdc.Forge, state string) (pipeline.ForgeToken, error) {
	t.Helper()
	s.AuthorizeAs("alice")
	u, err := f.AuthorizeURL(state, "")
	if err != nil {
		t.Fatal(err)
	}
	q, _ := url.Parse(u)
	if q.Query().Get("code_challenge_method") != "S256" || q.Query().Get("code_challenge") == "" || q.Query().Get("redirect_uri") != redirect {
		t.Fatalf("authorize URL lacks PKCE or redirect: %s", u)
	}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, _ := url.Parse(resp.Header.Get("Location"))
	if loc.Query().Get("state") != state {
		t.Fatalf("state not echoed: %s", loc)
	}
	return f.Exchange(context.Background(), loc.Query().Get("code"), state, "")
}

func TestLoginWithPKCEThenUserAndRefresh(t *testing.T) {
	s, f, _ := setup(t)
	ctx := context.Background()
	tok, err := login(t, s, f, "ks1.state-one")
	if err != nil {
		t.Fatal(err)
	}
	if tok.RefreshToken == "" || tok.Expiry.IsZero() || time.Until(tok.Expiry) > time.Hour+time.Minute {
		t.Fatalf("token %+v", tok.Expiry)
	}
	u, err := f.User(ctx, tok)
	if err != nil || u.Login != "alice" || u.ID == 0 {
		t.Fatalf("user %+v %v", u, err)
	}
	nt, err := f.Refresh(ctx, tok)
	if err != nil || nt.AccessToken == tok.AccessToken || nt.RefreshToken == tok.RefreshToken {
		t.Fatalf("refresh: %v", err)
	}
	// The spent refresh token is refused: the user must log in again.
	if _, err := f.Refresh(ctx, tok); !errors.Is(err, pipeline.ErrUnauthorized) {
		t.Fatalf("spent refresh token: %v", err)
	}
	if _, err := f.User(ctx, pipeline.ForgeToken{AccessToken: "bogus"}); !errors.Is(err, pipeline.ErrUnauthorized) {
		t.Fatalf("bogus token: %v", err)
	}
}

func TestExchangeWithAnotherStatesVerifierIsRefused(t *testing.T) {
	s, f, _ := setup(t)
	s.AuthorizeAs("alice")
	u, _ := f.AuthorizeURL("ks1.state-a", "")
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, _ := url.Parse(resp.Header.Get("Location"))
	// An intercepted code used with another state has the wrong verifier.
	_, err = f.Exchange(context.Background(), loc.Query().Get("code"), "ks1.state-b", "")
	if !errors.Is(err, pipeline.ErrUnauthorized) || strings.Contains(err.Error(), loc.Query().Get("code")) {
		t.Fatalf("wrong verifier: %v", err)
	}
}

func TestRepositoriesPermissionsFilesAndBranches(t *testing.T) {
	s, f, r := setup(t)
	ctx := context.Background()
	s.AddRepo("PRJ", "other")
	s.Grant("alice", "PRJ", "other", fakebitbucketdc.RepoWrite)
	s.AddRepo("SEC", "hidden")
	tok := pipeline.ForgeToken{AccessToken: s.IssueToken("alice", "cid")}

	rs, err := f.Repositories(ctx, tok)
	if err != nil || len(rs) != 2 {
		t.Fatalf("repositories %+v %v", rs, err)
	}
	if rs[0].Owner != "PRJ" || rs[0].Name != "app" || !rs[0].Permissions.Admin || rs[1].Permissions.Admin || !rs[1].Permissions.Push {
		t.Fatalf("repositories %+v %+v", rs[0], rs[1])
	}
	for repo, want := range map[string]pipeline.Permission{"app": pipeline.PermAdmin, "other": pipeline.PermPush} {
		if p, err := f.Permission(ctx, tok, "PRJ", repo); err != nil || p != want {
			t.Fatalf("%s: %v %v", repo, p, err)
		}
	}
	s.Grant("alice", "PRJ", "other", fakebitbucketdc.RepoRead)
	if p, _ := f.Permission(ctx, tok, "PRJ", "other"); p != pipeline.PermRead {
		t.Fatalf("read: %v", p)
	}
	if p, _ := f.Permission(ctx, tok, "SEC", "hidden"); p != pipeline.PermNone {
		t.Fatalf("hidden: %v", p)
	}
	if _, err := f.Repository(ctx, tok, "SEC", "hidden"); !errors.Is(err, pipeline.ErrNotFound) {
		t.Fatalf("hidden repository: %v", err)
	}
	repo, err := f.Repository(ctx, tok, "PRJ", "app")
	if err != nil || repo.ID != r.ID || repo.DefaultBranch != "main" || repo.CloneURL != r.CloneURL {
		t.Fatalf("repository %+v %v", repo, err)
	}

	sha := r.Commit("main", map[string]string{".pipeline.yml": "stages: []\n"}, "spec")
	if h, err := f.BranchHead(ctx, tok, "PRJ", "app", "main"); err != nil || h != sha {
		t.Fatalf("head %q %v", h, err)
	}
	file, err := f.FileAt(ctx, tok, "PRJ", "app", ".pipeline.yml", "")
	if err != nil || string(file.Content) != "stages: []\n" || file.SHA != sha {
		t.Fatalf("file %+v %v", file, err)
	}
	if _, err := f.FileAt(ctx, tok, "PRJ", "app", "missing.yml", sha); !errors.Is(err, pipeline.ErrNotFound) {
		t.Fatalf("missing file: %v", err)
	}
	if err := f.CreateBranch(ctx, tok, "PRJ", "app", "kontinuous/spec", sha); err != nil {
		t.Fatal(err)
	}
	nsha, err := f.PutFile(ctx, tok, "PRJ", "app", ".pipeline.yml", "kontinuous/spec", "update spec", []byte("stages: [x]\n"), sha)
	if err != nil || r.Head("kontinuous/spec") != nsha {
		t.Fatalf("put file %q %v", nsha, err)
	}
	if u, err := f.CreatePullRequest(ctx, tok, "PRJ", "app", "update spec", "kontinuous/spec", "main"); err != nil || u == "" {
		t.Fatalf("pull request %q %v", u, err)
	}
	if prs := s.PullRequests("PRJ", "app"); len(prs) != 1 || prs[0].FromRef != "refs/heads/kontinuous/spec" {
		t.Fatalf("pull requests %+v", prs)
	}
}

func TestWebhookKeyAndStatusLifecycle(t *testing.T) {
	s, f, r := setup(t)
	ctx := context.Background()
	tok := pipeline.ForgeToken{AccessToken: s.IssueToken("alice", "cid")}
	id, err := f.CreateWebhook(ctx, tok, "PRJ", "app", pipeline.Hook{URL: "http://k.example/hook", Secret: "whsec", Events: []string{"push", "pull_request"}})
	if err != nil {
		t.Fatal(err)
	}
	hooks := s.Hooks("PRJ", "app")
	if len(hooks) != 1 || hooks[0].ID != id || hooks[0].Secret != "whsec" || strings.Join(hooks[0].Events, ",") != "repo:refs_changed,pr:opened,pr:from_ref_updated" {
		t.Fatalf("hooks %+v", hooks)
	}
	kid, err := f.CreateDeployKey(ctx, tok, "PRJ", "app", "kontinuous", "ssh-ed25519 AAAA k")
	if err != nil || len(s.AccessKeys("PRJ", "app")) != 1 || s.AccessKeys("PRJ", "app")[0].Permission != "REPO_READ" {
		t.Fatalf("key %v %+v", err, s.AccessKeys("PRJ", "app"))
	}
	sha := r.Head("main")
	for _, st := range []string{"pending", "success"} {
		if err := f.SetCommitStatus(ctx, tok, "PRJ", "app", sha, pipeline.CommitStatus{State: st, Context: "kontinuous/build", TargetURL: "http://k.example/b/1", Description: st}); err != nil {
			t.Fatal(err)
		}
	}
	if b := s.Builds("PRJ", "app", sha); len(b) != 2 || b[0].State != "INPROGRESS" || b[1].State != "SUCCESSFUL" || b[1].Key != "kontinuous/build" || b[1].URL != "http://k.example/b/1" {
		t.Fatalf("builds %+v", b)
	}
	if err := f.DeleteWebhook(ctx, tok, "PRJ", "app", id); err != nil || len(s.Hooks("PRJ", "app")) != 0 {
		t.Fatalf("delete hook %v", err)
	}
	if err := f.DeleteWebhook(ctx, tok, "PRJ", "app", id); err != nil {
		t.Fatalf("deleting a missing hook: %v", err)
	}
	if err := f.DeleteDeployKey(ctx, tok, "PRJ", "app", kid); err != nil || len(s.AccessKeys("PRJ", "app")) != 0 {
		t.Fatalf("delete key %v", err)
	}
	// A writer may not install webhooks.
	s.Grant("alice", "PRJ", "app", fakebitbucketdc.RepoWrite)
	if _, err := f.CreateWebhook(ctx, tok, "PRJ", "app", pipeline.Hook{URL: "http://k.example/hook", Secret: "x", Events: []string{"push"}}); !errors.Is(err, pipeline.ErrForbidden) {
		t.Fatalf("writer's webhook: %v", err)
	}
}

func TestCloneCredentialsAreTheServiceAccounts(t *testing.T) {
	s, f, r := setup(t)
	user, pass := f.CloneCredentials(pipeline.ForgeToken{AccessToken: s.IssueToken("alice", "cid")})
	u, _ := url.Parse(r.CloneURL)
	u.User = url.UserPassword(user, pass)
	cmd := exec.Command("git", "clone", "--quiet", u.String(), filepath.Join(t.TempDir(), "w"))
	cmd.Env = append(cmd.Environ(), "GIT_TERMINAL_PROMPT=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("clone: %v %s", err, out)
	}
}

// delivery builds the request a webhook delivery is.
func delivery(t *testing.T, s *fakebitbucketdc.Server, event, secret string, body []byte) *http.Request {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, "/api/v1/pipelines/PRJ/app/builds", strings.NewReader(string(body)))
	req.Header.Set("X-Event-Key", event)
	req.Header.Set("X-Request-Id", "d-1")
	if secret != "" {
		req.Header.Set("X-Hub-Signature", fakebitbucketdc.Sign(secret, body))
	}
	return req
}

func parse(t *testing.T, f *bitbucketdc.Forge, req *http.Request, body []byte, secret string) (pipeline.WebhookEvent, error) {
	t.Helper()
	evs, err := parseAll(t, f, req, body, secret)
	if err != nil {
		return pipeline.WebhookEvent{}, err
	}
	// ParseWebhook answers the first of ParseWebhookEvents' events.
	wr, _, _ := f.Delivery(req)
	wr.Body = body
	ev, err := f.ParseWebhook(wr, secret)
	if err != nil || ev != evs[0] {
		t.Fatalf("ParseWebhook %+v %v, ParseWebhookEvents' first %+v", ev, err, evs[0])
	}
	return ev, nil
}

func parseAll(t *testing.T, f *bitbucketdc.Forge, req *http.Request, body []byte, secret string) ([]pipeline.WebhookEvent, error) {
	t.Helper()
	wr, ok, err := f.Delivery(req)
	if !ok {
		t.Fatal("delivery not claimed")
	}
	if err != nil {
		return nil, err
	}
	wr.Body = body
	evs, err := f.ParseWebhookEvents(wr, secret)
	if err == nil && len(evs) == 0 {
		t.Fatal("no events and no error")
	}
	return evs, err
}

func TestWebhooksParse(t *testing.T) {
	s, f, r := setup(t)
	sha := r.Head("main")
	zero := strings.Repeat("0", 40)

	body := fakebitbucketdc.RefsChangedPayload(r, "alice", "main", zero, sha, "UPDATE")
	ev, err := parse(t, f, delivery(t, s, "repo:refs_changed", "sec", body), body, "sec")
	if err != nil || ev.Kind != "push" || ev.Branch != "main" || ev.Commit != sha || ev.RepoID != r.ID || ev.RepoOwner != "PRJ" || ev.RepoName != "app" || ev.Author != "alice" || ev.Deleted || ev.Delivery != "d-1" {
		t.Fatalf("refs_changed %+v %v", ev, err)
	}
	body = fakebitbucketdc.RefsChangedPayload(r, "alice", "gone", sha, zero, "DELETE")
	if ev, err = parse(t, f, delivery(t, s, "repo:refs_changed", "sec", body), body, "sec"); err != nil || !ev.Deleted {
		t.Fatalf("deletion %+v %v", ev, err)
	}
	// One push of several branches: a push per branch change, deletions
	// left out.
	body = fakebitbucketdc.RefsChangedPayloadOf(r, "alice",
		fakebitbucketdc.RefChange{Branch: "gone", FromHash: sha, ToHash: zero, Type: "DELETE"},
		fakebitbucketdc.RefChange{Branch: "a", FromHash: zero, ToHash: sha, Type: "ADD"},
		fakebitbucketdc.RefChange{Branch: "b", FromHash: zero, ToHash: sha, Type: "UPDATE"})
	evs, err := parseAll(t, f, delivery(t, s, "repo:refs_changed", "sec", body), body, "sec")
	if err != nil || len(evs) != 2 || evs[0].Branch != "a" || evs[1].Branch != "b" || evs[1].Commit != sha || evs[1].Delivery != "d-1" || evs[1].Kind != "push" {
		t.Fatalf("several changes %+v %v", evs, err)
	}
	// Wrong secret, unsigned.
	if _, err := parse(t, f, delivery(t, s, "repo:refs_changed", "other", body), body, "sec"); !errors.Is(err, pipeline.ErrUnauthorized) {
		t.Fatalf("wrong signature: %v", err)
	}
	if _, err := parse(t, f, delivery(t, s, "repo:refs_changed", "", body), body, "sec"); !errors.Is(err, pipeline.ErrUnauthorized) {
		t.Fatalf("unsigned: %v", err)
	}

	fork := s.AddRepo("ALICE", "app-fork")
	fsha := fork.Commit("feature", map[string]string{"x": "y"}, "x")
	body = fakebitbucketdc.PullRequestPayload("pr:opened", fork, "feature", fsha, r, "main", "alice")
	if ev, err = parse(t, f, delivery(t, s, "pr:opened", "sec", body), body, "sec"); err != nil || ev.Kind != "pull_request" || ev.Action != "opened" || !ev.Fork || ev.Commit != fsha || ev.RepoID != r.ID {
		t.Fatalf("fork pr %+v %v", ev, err)
	}
	lsha := r.Commit("topic", map[string]string{"x": "y"}, "x")
	body = fakebitbucketdc.PullRequestPayload("pr:from_ref_updated", r, "topic", lsha, r, "main", "alice")
	if ev, err = parse(t, f, delivery(t, s, "pr:from_ref_updated", "sec", body), body, "sec"); err != nil || ev.Action != "synchronize" || ev.Fork || ev.Branch != "topic" || ev.Commit != lsha {
		t.Fatalf("pr update %+v %v", ev, err)
	}

	// Cloud's and GitHub's deliveries are not claimed.
	req := httptest.NewRequest(http.MethodPost, "/", nil)
	req.Header.Set("X-Event-Key", "repo:push")
	req.Header.Set("X-Request-UUID", "u")
	req.Header.Set("X-Hook-UUID", "h")
	if _, ok, _ := f.Delivery(req); ok {
		t.Fatal("claims a Bitbucket Cloud delivery")
	}
	req = httptest.NewRequest(http.MethodPost, "/", nil)
	req.Header.Set("X-GitHub-Event", "push")
	if _, ok, _ := f.Delivery(req); ok {
		t.Fatal("claims a GitHub delivery")
	}
}

func TestNameRulesAndUnconfiguredLogin(t *testing.T) {
	_, f, _ := setup(t)
	if err := f.ValidateRepoName("PRJ", "app.git-x_1"); err != nil {
		t.Fatal(err)
	}
	for _, c := range [][2]string{{"1PRJ", "app"}, {"PR-J", "app"}, {"PRJ", ".."}, {"PRJ", "a/b"}} {
		if err := f.ValidateRepoName(c[0], c[1]); !errors.Is(err, pipeline.ErrInvalid) {
			t.Fatalf("%v: %v", c, err)
		}
	}
	g, _ := bitbucketdc.New(bitbucketdc.Config{URL: "https://bitbucket.example"})
	if _, err := g.AuthorizeURL("s", ""); !errors.Is(err, pipeline.ErrNotImplemented) {
		t.Fatalf("unconfigured: %v", err)
	}
	if _, err := bitbucketdc.New(bitbucketdc.Config{URL: "ftp://x"}); !errors.Is(err, pipeline.ErrInvalid) {
		t.Fatalf("bad url: %v", err)
	}
}
