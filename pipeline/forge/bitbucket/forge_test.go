package bitbucket_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/forge/bitbucket"
	"github.com/kontinuous/kontinuous/pipeline/pipelinetest/fakebitbucket"
)

func setup(t *testing.T) (*fakebitbucket.Server, *bitbucket.Forge) {
	t.Helper()
	s := fakebitbucket.New(t)
	f, err := bitbucket.New(bitbucket.Config{ClientID: s.ClientID, ClientSecret: s.ClientSecret, WebURL: s.URL, APIURL: s.APIURL})
	if err != nil {
		t.Fatal(err)
	}
	return s, f
}

func token(s *fakebitbucket.Server, user string) pipeline.ForgeToken {
	at, rt, exp := s.IssueToken(user)
	return pipeline.ForgeToken{AccessToken: at, RefreshToken: rt, Expiry: exp}
}

func TestLoginExchangeUserAndRefreshRotation(t *testing.T) {
	s, f := setup(t)
	alice := s.AddUser("alice")
	s.SignIn("alice")
	au, err := f.AuthorizeURL("ks1.state", "http://kontinuous.test/auth/callback/bitbucket")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(au, s.URL+"/site/oauth2/authorize?") || !strings.Contains(au, "response_type=code") || !strings.Contains(au, "state=ks1.state") {
		t.Fatalf("authorize URL %s", au)
	}
	// Follow the authorize redirect to read the code as the callback would.
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(au)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, _ := url.Parse(resp.Header.Get("Location"))
	if loc.Query().Get("state") != "ks1.state" {
		t.Fatalf("state not echoed: %s", loc)
	}
	ctx := context.Background()
	tok, err := f.Exchange(ctx, loc.Query().Get("code"), "ks1.state", "http://kontinuous.test/auth/callback/bitbucket")
	if err != nil {
		t.Fatal(err)
	}
	if tok.RefreshToken == "" || time.Until(tok.Expiry) < time.Hour {
		t.Fatalf("token %+v: want a refresh token and a 2 h expiry", tok.Expiry)
	}
	fu, err := f.User(ctx, tok)
	if err != nil || fu.UID != alice.UUID || fu.Login != "alice" || !strings.HasPrefix(fu.UID, "{") {
		t.Fatalf("user %+v %v, want uid %s", fu, err, alice.UUID)
	}
	if _, err := f.Exchange(ctx, "spent", "", ""); !errors.Is(err, pipeline.ErrUnauthorized) {
		t.Fatalf("bad code: %v, want ErrUnauthorized", err)
	}

	nt, err := f.Refresh(ctx, tok)
	if err != nil || nt.RefreshToken == tok.RefreshToken || nt.AccessToken == tok.AccessToken {
		t.Fatalf("refresh: %v (rotated: %v)", err, nt.RefreshToken != tok.RefreshToken)
	}
	_, err = f.Refresh(ctx, tok) // the old refresh token is spent
	if !errors.Is(err, pipeline.ErrUnauthorized) || !strings.Contains(err.Error(), "invalid_grant") || !strings.Contains(err.Error(), bitbucket.ReconnectPath) {
		t.Fatalf("reused refresh token: %v", err)
	}
	if strings.Contains(err.Error(), tok.RefreshToken) {
		t.Fatal("error leaks the refresh token")
	}
	if s.Refreshes() != 1 {
		t.Fatalf("refreshes = %d", s.Refreshes())
	}
	bad, _ := bitbucket.New(bitbucket.Config{ClientID: s.ClientID, ClientSecret: "wrong", WebURL: s.URL, APIURL: s.APIURL})
	if _, err := bad.Refresh(ctx, nt); !errors.Is(err, pipeline.ErrUpstream) || strings.Contains(err.Error(), "wrong") {
		t.Fatalf("wrong consumer secret: %v", err)
	}
	if err := (&bitbucket.Forge{}).OAuthConfigured(); err == nil {
		t.Fatal("an unconfigured forge claims OAuth")
	}
}

func TestRepositoriesFollowNextAndPermissions(t *testing.T) {
	s, f := setup(t)
	s.AddUser("alice")
	s.SetPageLen(2)
	for _, n := range []string{"a1", "a2", "a3", "a4", "a5"} {
		s.AddRepo("acme", n).Grant("alice", "read")
	}
	s.AddRepo("other", "w").Grant("alice", "write")
	s.AddRepo("other", "adm").Grant("alice", "admin")
	s.AddRepo("other", "hidden")
	tok := token(s, "alice")
	ctx := context.Background()
	rs, err := f.Repositories(ctx, tok)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 7 {
		t.Fatalf("%d repositories, want 7 (all pages, hidden excluded): %+v", len(rs), rs)
	}
	for _, r := range rs {
		if r.DefaultBranch != "main" || strings.Contains(r.CloneURL, "@") || r.ID == 0 {
			t.Fatalf("repository %+v: want main, a clone URL without user, an id", r)
		}
	}
	for repo, want := range map[string]pipeline.Permission{"acme/a3": pipeline.PermRead, "other/w": pipeline.PermPush, "other/adm": pipeline.PermAdmin, "other/hidden": pipeline.PermNone} {
		ws, slug, _ := strings.Cut(repo, "/")
		got, err := f.Permission(ctx, tok, ws, slug)
		if err != nil || got != want {
			t.Errorf("%s: %v %v, want %v", repo, got, err, want)
		}
	}
	if _, err := f.Repository(ctx, tok, "other", "hidden"); !errors.Is(err, pipeline.ErrNotFound) {
		t.Fatalf("hidden repository: %v", err)
	}
	s.ExpireAccessTokens()
	if _, err := f.Repositories(ctx, tok); !errors.Is(err, pipeline.ErrUnauthorized) || strings.Contains(err.Error(), tok.AccessToken) {
		t.Fatalf("expired token: %v", err)
	}
}

func TestHookKeyStatusAndFiles(t *testing.T) {
	s, f := setup(t)
	s.AddUser("alice")
	r := s.AddRepo("acme", "app")
	r.Grant("alice", "admin")
	tok := token(s, "alice")
	ctx := context.Background()
	secret := strings.Repeat("s", 40)
	hid, err := f.CreateWebhook(ctx, tok, "acme", "app", pipeline.Hook{URL: "http://k.test/api/v1/pipelines/acme/app/builds", Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	hs := r.Hooks()
	if len(hs) != 1 || hs[0].Secret != secret || !hs[0].Active || strings.Join(hs[0].Events, ",") != "repo:push,pullrequest:created,pullrequest:updated" || bitbucket.ID64(hs[0].UUID) != hid {
		t.Fatalf("hooks %+v", hs)
	}
	if _, err := f.CreateWebhook(ctx, tok, "acme", "app", pipeline.Hook{URL: "http://x", Secret: "weak"}); !errors.Is(err, pipeline.ErrInvalid) {
		t.Fatalf("weak secret: %v", err)
	}
	kid, err := f.CreateDeployKey(ctx, tok, "acme", "app", "kontinuous (read-only)", "ssh-ed25519 AAAAC3Nza kontinuous")
	if err != nil || len(r.DeployKeys()) != 1 {
		t.Fatalf("deploy key: %v %+v", err, r.DeployKeys())
	}
	if err := f.DeleteWebhook(ctx, tok, "acme", "app", hid); err != nil || len(r.Hooks()) != 0 {
		t.Fatalf("delete hook: %v %+v", err, r.Hooks())
	}
	if err := f.DeleteWebhook(ctx, tok, "acme", "app", hid); err != nil {
		t.Fatalf("delete a missing hook: %v", err)
	}
	if err := f.DeleteDeployKey(ctx, tok, "acme", "app", kid); err != nil || len(r.DeployKeys()) != 0 {
		t.Fatalf("delete key: %v", err)
	}
	if err := f.DeleteDeployKey(ctx, tok, "acme", "app", kid); err != nil {
		t.Fatalf("delete a missing key: %v", err)
	}

	sha := r.Head("main")
	long := strings.Repeat("a very long stage name ", 3)
	for _, st := range []pipeline.CommitStatus{{State: "pending", Context: "build"}, {State: "success", Context: "build"}, {State: "failure", Context: long}, {State: "error", Context: "deploy"}} {
		st.TargetURL = "http://k.test/b/1"
		if err := f.SetCommitStatus(ctx, tok, "acme", "app", sha, st); err != nil {
			t.Fatal(err)
		}
	}
	got := r.Statuses(sha)
	if len(got) != 4 || got[0].State != "INPROGRESS" || got[1].State != "SUCCESSFUL" || got[2].State != "FAILED" || got[3].State != "STOPPED" {
		t.Fatalf("statuses %+v", got)
	}
	if got[2].Key != bitbucket.StatusKey(long) || len(got[2].Key) != 40 || got[2].Name != long || bitbucket.StatusKey(long) == bitbucket.StatusKey(long+"x") {
		t.Fatalf("long key %q", got[2].Key)
	}

	// Definition read and write.
	c1 := r.Commit("main", map[string]string{".pipeline.yml": "stages: []\n"}, "add spec")
	fl, err := f.FileAt(ctx, tok, "acme", "app", ".pipeline.yml", "")
	if err != nil || string(fl.Content) != "stages: []\n" {
		t.Fatalf("FileAt main: %q %v", fl.Content, err)
	}
	if fl2, err := f.FileAt(ctx, tok, "acme", "app", ".pipeline.yml", c1); err != nil || fl2.SHA != fl.SHA {
		t.Fatalf("FileAt sha: %v", err)
	}
	if _, err := f.FileAt(ctx, tok, "acme", "app", "missing.yml", "main"); !errors.Is(err, pipeline.ErrNotFound) {
		t.Fatalf("missing file: %v", err)
	}
	c2, err := f.PutFile(ctx, tok, "acme", "app", ".pipeline.yml", "main", "edit spec", []byte("stages: [x]\n"), fl.SHA)
	if err != nil || c2 != r.Head("main") {
		t.Fatalf("PutFile: %s %v (head %s)", c2, err, r.Head("main"))
	}
	if _, err := f.PutFile(ctx, tok, "acme", "app", ".pipeline.yml", "main", "stale", []byte("x"), fl.SHA); !errors.Is(err, pipeline.ErrConflict) {
		t.Fatalf("stale PutFile: %v", err)
	}
	if err := f.CreateBranch(ctx, tok, "acme", "app", "kontinuous/edit", c2); err != nil || r.Head("kontinuous/edit") != c2 {
		t.Fatalf("CreateBranch: %v", err)
	}
	if u, err := f.CreatePullRequest(ctx, tok, "acme", "app", "edit", "kontinuous/edit", "main"); err != nil || u == "" || len(r.PullRequests()) != 1 {
		t.Fatalf("CreatePullRequest: %s %v", u, err)
	}
	if full, err := f.ExpandCommit(ctx, tok, "acme", "app", c2[:12]); err != nil || full != c2 {
		t.Fatalf("ExpandCommit: %s %v", full, err)
	}
}

func TestCloneCredentialsDeliveryAndNames(t *testing.T) {
	_, f := setup(t)
	if u, p := f.CloneCredentials(pipeline.ForgeToken{AccessToken: "at"}); u != "x-token-auth" || p != "at" {
		t.Fatal(u, p)
	}
	r := httptest.NewRequest(http.MethodPost, "/", nil)
	if _, ok, _ := f.Delivery(r); ok {
		t.Fatal("a request without X-Event-Key claimed")
	}
	r.Header.Set("X-Event-Key", "repo:push")
	if _, ok, err := f.Delivery(r); !ok || !errors.Is(err, pipeline.ErrUnauthorized) {
		t.Fatalf("unsigned: %v %v", ok, err)
	}
	r.Header.Set("X-Hub-Signature", fakebitbucket.Sign("s", []byte("x")))
	if _, _, err := f.Delivery(r); !errors.Is(err, pipeline.ErrInvalid) {
		t.Fatalf("no request uuid: %v", err)
	}
	r.Header.Set("X-Request-UUID", "d1")
	if req, _, err := f.Delivery(r); err != nil || req.Delivery != "d1" || req.Event != "repo:push" {
		t.Fatalf("%+v %v", req, err)
	}
	// Bitbucket Data Center's deliveries (X-Event-Key with X-Request-Id,
	// no X-Request-UUID or X-Hook-UUID) are left to that forge.
	for _, event := range []string{"repo:refs_changed", "pr:opened", "diagnostics:ping", "repo:push"} {
		dc := httptest.NewRequest(http.MethodPost, "/", nil)
		dc.Header.Set("X-Event-Key", event)
		dc.Header.Set("X-Request-Id", "dc-1")
		dc.Header.Set("X-Hub-Signature", fakebitbucket.Sign("s", []byte("x")))
		if _, ok, _ := f.Delivery(dc); ok {
			t.Fatalf("claims Data Center's %s", event)
		}
	}
	// A Cloud delivery with X-Hook-UUID but no X-Request-UUID is still
	// Cloud's (and refused for the missing delivery id).
	r.Header.Del("X-Request-UUID")
	r.Header.Set("X-Hook-UUID", "h1")
	r.Header.Set("X-Request-Id", "x")
	if _, ok, err := f.Delivery(r); !ok || !errors.Is(err, pipeline.ErrInvalid) {
		t.Fatalf("cloud without request uuid: %v %v", ok, err)
	}
	for _, ok := range [][2]string{{"acme", "app"}, {"my_team", "a.b-c"}} {
		if err := f.ValidateRepoName(ok[0], ok[1]); err != nil {
			t.Error(err)
		}
	}
	for _, bad := range [][2]string{{"a/b", "x"}, {"acme", ".."}, {"acme", "a b"}, {"", "x"}} {
		if err := f.ValidateRepoName(bad[0], bad[1]); !errors.Is(err, pipeline.ErrInvalid) {
			t.Errorf("%q accepted", bad)
		}
	}
}
