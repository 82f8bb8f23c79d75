package fakegithub_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	"github.com/google/go-github/v60/github"
	"golang.org/x/oauth2"

	"github.com/kontinuous/kontinuous/pipeline/pipelinetest/fakegithub"
)

func client(t *testing.T, s *fakegithub.Server, token string) *github.Client {
	t.Helper()
	c := github.NewClient(nil)
	if token != "" {
		c = c.WithAuthToken(token)
	}
	c, err := c.WithEnterpriseURLs(s.APIURL, s.APIURL)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func statusOf(err error) int {
	var er *github.ErrorResponse
	if errors.As(err, &er) && er.Response != nil {
		return er.Response.StatusCode
	}
	return 0
}

// setup makes alice (owner, admin) of alice/app, bob (reader), carol
// (push) and dave (no access).
func setup(t *testing.T) (*fakegithub.Server, *fakegithub.Repo) {
	t.Helper()
	s := fakegithub.New(t)
	s.AddUser("alice", 1001, "tok-alice")
	s.AddUser("bob", 1002, "tok-bob")
	s.AddUser("carol", 1003, "tok-carol")
	s.AddUser("dave", 1004, "tok-dave")
	r := s.AddRepo("alice", "app")
	s.Grant("bob", "alice", "app", "read")
	s.Grant("carol", "alice", "app", "push")
	return s, r
}

func cloneGoGit(t *testing.T, url, user, pass string) (*git.Repository, error) {
	t.Helper()
	return git.PlainCloneContext(t.Context(), filepath.Join(t.TempDir(), "clone"), false, &git.CloneOptions{
		URL:  url,
		Auth: &githttp.BasicAuth{Username: user, Password: pass},
	})
}

func TestCloneOverHTTPWithAccessTokenSeesCommits(t *testing.T) {
	_, r := setup(t)
	sha := r.Commit("main", map[string]string{".pipeline.yml": "kind: Pipeline\n", "dir/a.txt": "a"}, "add spec")
	repo, err := cloneGoGit(t, r.CloneURL, "x-access-token", "tok-bob")
	if err != nil {
		t.Fatalf("clone as reader: %v", err)
	}
	head, err := repo.Head()
	if err != nil {
		t.Fatal(err)
	}
	if head.Hash().String() != sha || head.Name() != plumbing.NewBranchReferenceName("main") {
		t.Fatalf("head = %s %s, want main %s", head.Name(), head.Hash(), sha)
	}
	wt, err := repo.Worktree()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(wt.Filesystem.Root(), ".pipeline.yml"))
	if err != nil || string(b) != "kind: Pipeline\n" {
		t.Fatalf("cloned .pipeline.yml = %q, %v", b, err)
	}
}

func TestCloneOverHTTPRefusesBadCredentials(t *testing.T) {
	s, r := setup(t)
	tests := []struct {
		name, user, pass string
		wantStatus       int
	}{
		{"unknown token", "x-access-token", "nope", http.StatusUnauthorized},
		{"wrong username", "alice", "tok-alice", http.StatusUnauthorized},
		{"no access", "x-access-token", "tok-dave", http.StatusNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s.ResetRequests()
			if _, err := cloneGoGit(t, r.CloneURL, tc.user, tc.pass); err == nil {
				t.Fatal("clone succeeded")
			}
			reqs := s.Requests()
			if len(reqs) == 0 || reqs[0].Status != tc.wantStatus {
				t.Fatalf("requests = %+v, want first answered %d", reqs, tc.wantStatus)
			}
		})
	}
	t.Run("revoked token", func(t *testing.T) {
		s.RevokeToken("tok-bob")
		if _, err := cloneGoGit(t, r.CloneURL, "x-access-token", "tok-bob"); err == nil {
			t.Fatal("clone with a revoked token succeeded")
		}
	})
}

func TestGitCLICloneAndPushFollowPermissions(t *testing.T) {
	_, r := setup(t)
	authURL := func(tok string) string {
		u, _ := url.Parse(r.CloneURL)
		u.User = url.UserPassword("x-access-token", tok)
		return u.String()
	}
	run := func(dir string, args ...string) error {
		cmd := exec.Command("git", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_TERMINAL_PROMPT=0", "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null",
			"GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com")
		out, err := cmd.CombinedOutput()
		if err != nil {
			return errors.New(string(out))
		}
		return nil
	}
	dir := t.TempDir()
	if err := run(dir, "clone", "-q", authURL("tok-carol"), "w"); err != nil {
		t.Fatalf("git clone: %v", err)
	}
	w := filepath.Join(dir, "w")
	if err := os.WriteFile(filepath.Join(w, "new.txt"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := run(w, "add", "."); err != nil {
		t.Fatal(err)
	}
	if err := run(w, "commit", "-q", "-m", "push me"); err != nil {
		t.Fatal(err)
	}
	if err := run(w, "push", "-q", authURL("tok-bob"), "HEAD:main"); err == nil {
		t.Fatal("reader could push")
	}
	if err := run(w, "push", "-q", authURL("tok-carol"), "HEAD:main"); err != nil {
		t.Fatalf("push with push permission: %v", err)
	}
	if got, ok := r.File("main", "new.txt"); !ok || got != "x" {
		t.Fatalf("pushed file = %q, %v", got, ok)
	}
	// As on GitHub, a commit that is no branch tip can be fetched by SHA.
	old := r.Head("main")
	r.Commit("main", map[string]string{"later.txt": "y"}, "later")
	f := filepath.Join(dir, "f")
	if err := run(dir, "init", "-q", f); err != nil {
		t.Fatal(err)
	}
	if err := run(f, "fetch", "-q", "--depth=1", authURL("tok-bob"), old); err != nil {
		t.Fatalf("fetch by SHA: %v", err)
	}
	if err := run(f, "cat-file", "-e", old+"^{commit}"); err != nil {
		t.Fatalf("fetched commit missing: %v", err)
	}
}

func TestCommitCreatesBranchesAndDeletesFiles(t *testing.T) {
	_, r := setup(t)
	base := r.Head("main")
	sha := r.Commit("feature/x", map[string]string{"a.txt": "A", "README.md": ""}, "on a branch")
	if sha == base || r.Head("feature/x") != sha || r.Head("main") != base {
		t.Fatalf("heads: main %s feature %s commit %s", r.Head("main"), r.Head("feature/x"), sha)
	}
	if _, ok := r.File("feature/x", "README.md"); ok {
		t.Fatal("README.md not deleted on feature/x")
	}
	if got, _ := r.File("main", "README.md"); got != "# app\n" {
		t.Fatalf("main README.md = %q", got)
	}
	if got, _ := r.File(sha, "a.txt"); got != "A" {
		t.Fatalf("a.txt at %s = %q", sha, got)
	}
}

func exchange(t *testing.T, s *fakegithub.Server, secret, code string, style oauth2.AuthStyle) (*oauth2.Token, error) {
	t.Helper()
	cfg := oauth2.Config{ClientID: "cid", ClientSecret: secret, Endpoint: oauth2.Endpoint{
		AuthURL: s.URL + "/login/oauth/authorize", TokenURL: s.URL + "/login/oauth/access_token", AuthStyle: style}}
	return cfg.Exchange(t.Context(), code)
}

func TestOAuthCodeIsSingleUse(t *testing.T) {
	for _, style := range []oauth2.AuthStyle{oauth2.AuthStyleInParams, oauth2.AuthStyleInHeader} {
		s, _ := setup(t)
		s.AddOAuthApp("cid", "csecret")
		code := s.IssueCode("alice", "cid")
		tok, err := exchange(t, s, "csecret", code, style)
		if err != nil {
			t.Fatalf("style %d: exchange: %v", style, err)
		}
		if tok.AccessToken != "tok-alice" {
			t.Fatalf("access token = %q, want alice's", tok.AccessToken)
		}
		_, err = exchange(t, s, "csecret", code, style)
		var re *oauth2.RetrieveError
		if !errors.As(err, &re) || re.ErrorCode != "bad_verification_code" {
			t.Fatalf("second exchange: %v, want bad_verification_code", err)
		}
		for _, r := range s.Requests() {
			if strings.Contains(r.Query, "csecret") {
				t.Fatalf("client secret in URL: %+v", r)
			}
		}
	}
}

func postToken(t *testing.T, s *fakegithub.Server, form url.Values) map[string]string {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, s.URL+"/login/oauth/access_token", strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want GitHub's 200", resp.StatusCode)
	}
	var m map[string]string
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestOAuthErrorsAnswerHTTP200LikeGitHub(t *testing.T) {
	s, _ := setup(t)
	s.AddOAuthApp("cid", "csecret")
	now := time.Now()
	s.SetClock(func() time.Time { return now })
	code := s.IssueCode("alice", "cid")
	expired := s.IssueCode("alice", "cid")
	tests := []struct {
		name      string
		form      url.Values
		wantError string
	}{
		{"wrong secret", url.Values{"client_id": {"cid"}, "client_secret": {"bad"}, "code": {code}}, "incorrect_client_credentials"},
		{"unknown client", url.Values{"client_id": {"x"}, "client_secret": {"csecret"}, "code": {code}}, "incorrect_client_credentials"},
		{"unknown code", url.Values{"client_id": {"cid"}, "client_secret": {"csecret"}, "code": {"nope"}}, "bad_verification_code"},
		{"good", url.Values{"client_id": {"cid"}, "client_secret": {"csecret"}, "code": {code}, "state": {"s"}}, ""},
		{"spent", url.Values{"client_id": {"cid"}, "client_secret": {"csecret"}, "code": {code}}, "bad_verification_code"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := postToken(t, s, tc.form)
			if m["error"] != tc.wantError {
				t.Fatalf("reply %v, want error %q", m, tc.wantError)
			}
			if tc.wantError == "" && (m["access_token"] != "tok-alice" || m["token_type"] != "bearer" || m["scope"] == "") {
				t.Fatalf("reply %v", m)
			}
		})
	}
	t.Run("expired", func(t *testing.T) {
		s.SetClock(func() time.Time { return now.Add(11 * time.Minute) })
		m := postToken(t, s, url.Values{"client_id": {"cid"}, "client_secret": {"csecret"}, "code": {expired}})
		if m["error"] != "bad_verification_code" {
			t.Fatalf("reply %v", m)
		}
	})
}

func TestAuthorizeAsRedirectsWithCodeAndState(t *testing.T) {
	s, _ := setup(t)
	s.AddOAuthApp("cid", "csecret")
	var got url.Values
	cb := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got = r.URL.Query() }))
	t.Cleanup(cb.Close)
	s.AuthorizeAs("bob")
	u := s.URL + "/login/oauth/authorize?" + url.Values{"client_id": {"cid"}, "redirect_uri": {cb.URL + "/cb"},
		"scope": {"user,repo"}, "state": {"st8"}}.Encode()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got.Get("state") != "st8" || got.Get("code") == "" {
		t.Fatalf("callback query = %v", got)
	}
	m := postToken(t, s, url.Values{"client_id": {"cid"}, "client_secret": {"csecret"}, "code": {got.Get("code")},
		"redirect_uri": {"http://elsewhere/cb"}})
	if m["error"] != "redirect_uri_mismatch" {
		t.Fatalf("mismatched redirect_uri: %v", m)
	}
	m = postToken(t, s, url.Values{"client_id": {"cid"}, "client_secret": {"csecret"}, "code": {got.Get("code")}})
	if m["access_token"] != "tok-bob" || m["scope"] != "user,repo" {
		t.Fatalf("exchange: %v", m)
	}
}

func TestRESTIdentityAndRepositoryPermissions(t *testing.T) {
	s, _ := setup(t)
	ctx := t.Context()
	u, _, err := client(t, s, "tok-alice").Users.Get(ctx, "")
	if err != nil || u.GetLogin() != "alice" || u.GetID() != 1001 {
		t.Fatalf("GET /user = %v, %v", u, err)
	}
	if _, _, err := client(t, s, "bad").Users.Get(ctx, ""); statusOf(err) != http.StatusUnauthorized {
		t.Fatalf("bad token: %v", err)
	}
	if _, _, err := client(t, s, "").Users.Get(ctx, ""); statusOf(err) != http.StatusUnauthorized {
		t.Fatalf("anonymous: %v", err)
	}
	tests := []struct {
		token             string
		wantStatus        int
		admin, push, pull bool
	}{
		{"tok-alice", 200, true, true, true},
		{"tok-carol", 200, false, true, true},
		{"tok-bob", 200, false, false, true},
		{"tok-dave", 404, false, false, false},
		{"", 404, false, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.token, func(t *testing.T) {
			repo, _, err := client(t, s, tc.token).Repositories.Get(ctx, "Alice", "APP")
			if tc.wantStatus != 200 {
				if statusOf(err) != tc.wantStatus {
					t.Fatalf("err = %v, want %d", err, tc.wantStatus)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			p := repo.GetPermissions()
			if p["admin"] != tc.admin || p["push"] != tc.push || p["pull"] != tc.pull {
				t.Fatalf("permissions = %v", p)
			}
			if repo.GetFullName() != "alice/app" || repo.GetDefaultBranch() != "main" || repo.GetOwner().GetLogin() != "alice" ||
				repo.GetOwner().GetAvatarURL() == "" || repo.GetID() == 0 || !strings.HasSuffix(repo.GetCloneURL(), "/git/alice/app.git") {
				t.Fatalf("repo = %v", repo)
			}
		})
	}
	lvl, _, err := client(t, s, "tok-bob").Repositories.GetPermissionLevel(ctx, "alice", "app", "carol")
	if err != nil || lvl.GetPermission() != "write" {
		t.Fatalf("carol's level = %v, %v", lvl, err)
	}
}

func TestUserReposArePaginatedWithLinkHeaders(t *testing.T) {
	s, _ := setup(t)
	for _, n := range []string{"b1", "b2", "b3", "b4"} {
		s.AddRepo("org", n)
		s.Grant("bob", "org", n, "read")
	}
	s.AddRepo("org", "hidden")
	c := client(t, s, "tok-bob")
	var names []string
	opts := &github.RepositoryListByAuthenticatedUserOptions{ListOptions: github.ListOptions{PerPage: 2}}
	pages := 0
	for {
		repos, resp, err := c.Repositories.ListByAuthenticatedUser(t.Context(), opts)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, r := range repos {
			names = append(names, r.GetFullName())
		}
		if resp.NextPage == 0 {
			break
		}
		opts.Page = resp.NextPage
	}
	want := "alice/app,org/b1,org/b2,org/b3,org/b4"
	if strings.Join(names, ",") != want || pages != 3 {
		t.Fatalf("got %v in %d pages, want %s in 3", names, pages, want)
	}
}

func TestContentsPutCreatesARealCommit(t *testing.T) {
	s, r := setup(t)
	ctx := t.Context()
	c := client(t, s, "tok-carol")
	before := r.Head("main")
	res, _, err := c.Repositories.CreateFile(ctx, "alice", "app", ".pipeline.yml", &github.RepositoryContentFileOptions{
		Message: github.String("add spec"), Content: []byte("v1"), Branch: github.String("main")})
	if err != nil {
		t.Fatal(err)
	}
	sha := res.GetSHA()
	if sha == before || r.Head("main") != sha || res.Commit.Parents[0].GetSHA() != before {
		t.Fatalf("commit %s, head %s, before %s", sha, r.Head("main"), before)
	}
	if got, _ := r.File(sha, ".pipeline.yml"); got != "v1" {
		t.Fatalf("file at new commit = %q", got)
	}
	fc, _, _, err := c.Repositories.GetContents(ctx, "alice", "app", ".pipeline.yml", &github.RepositoryContentGetOptions{Ref: "main"})
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := fc.GetContent(); got != "v1" || fc.GetSHA() != res.Content.GetSHA() {
		t.Fatalf("GET contents = %q sha %s, want v1 sha %s", got, fc.GetSHA(), res.Content.GetSHA())
	}

	update := func(sha *string) error {
		_, _, err := c.Repositories.UpdateFile(ctx, "alice", "app", ".pipeline.yml", &github.RepositoryContentFileOptions{
			Message: github.String("edit"), Content: []byte("v2"), SHA: sha})
		return err
	}
	if err := update(github.String(strings.Repeat("a", 40))); statusOf(err) != http.StatusConflict {
		t.Fatalf("stale sha: %v, want 409", err)
	}
	if err := update(nil); statusOf(err) != http.StatusUnprocessableEntity {
		t.Fatalf("missing sha: %v, want 422", err)
	}
	if err := update(fc.SHA); err != nil {
		t.Fatal(err)
	}
	if got, _ := r.File("main", ".pipeline.yml"); got != "v2" {
		t.Fatalf("after update = %q", got)
	}
	if _, _, err := client(t, s, "tok-bob").Repositories.CreateFile(ctx, "alice", "app", "x", &github.RepositoryContentFileOptions{
		Message: github.String("m"), Content: []byte("x")}); statusOf(err) != http.StatusForbidden {
		t.Fatalf("reader write: %v, want 403", err)
	}
	_, dir, _, err := c.Repositories.GetContents(ctx, "alice", "app", "", nil)
	if err != nil || len(dir) != 2 {
		t.Fatalf("root listing = %v, %v", dir, err)
	}
}

func TestRefsBranchesAndPullRequests(t *testing.T) {
	s, r := setup(t)
	ctx := t.Context()
	c := client(t, s, "tok-carol")
	head := r.Head("main")
	b, _, err := c.Repositories.GetBranch(ctx, "alice", "app", "main", 1)
	if err != nil || b.GetCommit().GetSHA() != head {
		t.Fatalf("branch = %v, %v", b, err)
	}
	ref, _, err := c.Git.CreateRef(ctx, "alice", "app", &github.Reference{Ref: github.String("refs/heads/kontinuous/edit"),
		Object: &github.GitObject{SHA: github.String(head)}})
	if err != nil || ref.GetObject().GetSHA() != head {
		t.Fatalf("create ref = %v, %v", ref, err)
	}
	if _, _, err := c.Git.CreateRef(ctx, "alice", "app", &github.Reference{Ref: github.String("refs/heads/kontinuous/edit"),
		Object: &github.GitObject{SHA: github.String(head)}}); statusOf(err) != http.StatusUnprocessableEntity {
		t.Fatalf("duplicate ref: %v", err)
	}
	got, _, err := c.Git.GetRef(ctx, "alice", "app", "heads/kontinuous/edit")
	if err != nil || got.GetObject().GetSHA() != head {
		t.Fatalf("get ref = %v, %v", got, err)
	}
	if _, _, err := c.Git.GetRef(ctx, "alice", "app", "heads/nope"); statusOf(err) != http.StatusNotFound {
		t.Fatalf("missing ref: %v", err)
	}
	if _, _, err := c.PullRequests.Create(ctx, "alice", "app", &github.NewPullRequest{Title: github.String("t"),
		Head: github.String("kontinuous/edit"), Base: github.String("main")}); statusOf(err) != http.StatusUnprocessableEntity {
		t.Fatalf("PR without commits: %v", err)
	}
	sha := r.Commit("kontinuous/edit", map[string]string{"f": "1"}, "change")
	pr, _, err := c.PullRequests.Create(ctx, "alice", "app", &github.NewPullRequest{Title: github.String("Update"),
		Head: github.String("kontinuous/edit"), Base: github.String("main")})
	if err != nil {
		t.Fatal(err)
	}
	prs := s.PullRequests("alice", "app")
	if len(prs) != 1 || prs[0].HTMLURL != pr.GetHTMLURL() || prs[0].HeadSHA != sha || pr.GetNumber() != 1 || pr.GetHead().GetSHA() != sha {
		t.Fatalf("pull requests = %+v, answer %v", prs, pr)
	}
}

func TestHooksKeysAndStatusesAreRecorded(t *testing.T) {
	s, r := setup(t)
	ctx := t.Context()
	admin := client(t, s, "tok-alice")
	hook, _, err := admin.Repositories.CreateHook(ctx, "alice", "app", &github.Hook{
		Config: &github.HookConfig{URL: github.String("http://ci.example/hook"), ContentType: github.String("json"),
			Secret: github.String("s3cret"), InsecureSSL: github.String("0")},
		Events: []string{"push", "pull_request"}, Active: github.Bool(true)})
	if err != nil {
		t.Fatal(err)
	}
	hooks := s.Hooks("alice", "app")
	if len(hooks) != 1 || hooks[0].ID != hook.GetID() || hooks[0].Secret != "s3cret" || hooks[0].ContentType != "json" ||
		strings.Join(hooks[0].Events, ",") != "push,pull_request" || !hooks[0].Active {
		t.Fatalf("hooks = %+v", hooks)
	}
	if hook.GetConfig().GetSecret() == "s3cret" {
		t.Fatal("hook secret echoed in the API answer")
	}
	if _, _, err := client(t, s, "tok-carol").Repositories.CreateHook(ctx, "alice", "app", &github.Hook{
		Config: &github.HookConfig{URL: github.String("http://x/")}}); statusOf(err) != http.StatusForbidden {
		t.Fatalf("hook by pusher: %v, want 403", err)
	}
	if _, err := admin.Repositories.DeleteHook(ctx, "alice", "app", hook.GetID()); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Repositories.DeleteHook(ctx, "alice", "app", hook.GetID()); statusOf(err) != http.StatusNotFound {
		t.Fatalf("second delete: %v", err)
	}

	pub := "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBHs2Wq6nOFl1kbOr0f9hmxGZ2CLmU3ayTP0rpHR5TmZ kontinuous"
	key, _, err := admin.Repositories.CreateKey(ctx, "alice", "app", &github.Key{Title: github.String("kontinuous"),
		Key: github.String(pub), ReadOnly: github.Bool(true)})
	if err != nil {
		t.Fatal(err)
	}
	if keys := s.DeployKeys("alice", "app"); len(keys) != 1 || keys[0].ID != key.GetID() || !keys[0].ReadOnly || keys[0].Key != pub {
		t.Fatalf("keys = %+v", keys)
	}
	if _, _, err := admin.Repositories.CreateKey(ctx, "alice", "app", &github.Key{Key: github.String("not a key")}); statusOf(err) != http.StatusUnprocessableEntity {
		t.Fatalf("bad key: %v", err)
	}
	if _, err := admin.Repositories.DeleteKey(ctx, "alice", "app", key.GetID()); err != nil || len(s.DeployKeys("alice", "app")) != 0 {
		t.Fatalf("delete key: %v", err)
	}

	head := r.Head("main")
	if _, _, err := client(t, s, "tok-carol").Repositories.CreateStatus(ctx, "alice", "app", head, &github.RepoStatus{
		State: github.String("pending"), Context: github.String("build"), Description: github.String("running"),
		TargetURL: github.String("http://ci.example/b/1")}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := client(t, s, "tok-bob").Repositories.CreateStatus(ctx, "alice", "app", head, &github.RepoStatus{
		State: github.String("success")}); statusOf(err) != http.StatusForbidden {
		t.Fatalf("status by reader: %v", err)
	}
	if _, _, err := client(t, s, "tok-carol").Repositories.CreateStatus(ctx, "alice", "app", head, &github.RepoStatus{
		State: github.String("weird")}); statusOf(err) != http.StatusUnprocessableEntity {
		t.Fatalf("bad state: %v", err)
	}
	want := fakegithub.Status{State: "pending", Context: "build", Description: "running", TargetURL: "http://ci.example/b/1"}
	if st := s.Statuses("alice", "app", head); len(st) != 1 || st[0] != want {
		t.Fatalf("statuses = %+v", st)
	}
	listed, _, err := client(t, s, "tok-bob").Repositories.ListStatuses(ctx, "alice", "app", head, nil)
	if err != nil || len(listed) != 1 || listed[0].GetCreator().GetLogin() != "carol" || listed[0].GetState() != "pending" {
		t.Fatalf("listed statuses = %v, %v", listed, err)
	}
}

func TestFaultInjection(t *testing.T) {
	s, _ := setup(t)
	ctx := t.Context()
	c := client(t, s, "tok-alice")

	s.FailNext("GET", "/repos/alice/app", http.StatusInternalServerError, "")
	if _, _, err := c.Repositories.Get(ctx, "alice", "app"); statusOf(err) != http.StatusInternalServerError {
		t.Fatalf("injected 500: %v", err)
	}
	if _, _, err := c.Repositories.Get(ctx, "alice", "app"); err != nil {
		t.Fatalf("FailNext applied twice: %v", err)
	}

	s.FailNext("GET", "/user", http.StatusForbidden, `{"message":"API rate limit exceeded for user ID 1001."}`)
	var rl *github.RateLimitError
	if _, _, err := c.Users.Get(ctx, ""); !errors.As(err, &rl) || rl.Rate.Reset.IsZero() {
		t.Fatalf("rate limit: %v", err)
	}
	s.SecondaryRateLimitNext("", "/user")
	var arl *github.AbuseRateLimitError
	if _, _, err := client(t, s, "tok-alice").Users.Get(ctx, ""); !errors.As(err, &arl) || arl.RetryAfter == nil {
		t.Fatalf("secondary rate limit: %v", err)
	}
	s.FailNext("", "/user", http.StatusTooManyRequests, "")
	if _, _, err := client(t, s, "tok-alice").Users.Get(ctx, ""); statusOf(err) != http.StatusTooManyRequests {
		t.Fatalf("429: %v", err)
	}

	s.SetDown(true)
	if _, _, err := client(t, s, "tok-alice").Users.Get(ctx, ""); statusOf(err) != http.StatusServiceUnavailable {
		t.Fatalf("down: %v", err)
	}
	s.SetDown(false)
	s.SetDropConnections(true)
	if _, _, err := client(t, s, "tok-alice").Users.Get(ctx, ""); err == nil || statusOf(err) != 0 {
		t.Fatalf("dropped connection: %v", err)
	}
	s.SetDropConnections(false)
	if _, _, err := client(t, s, "tok-alice").Users.Get(ctx, ""); err != nil {
		t.Fatalf("after recovery: %v", err)
	}
	reqs := s.Requests()
	if reqs[0].Method != "GET" || reqs[0].Path != "/api/v3/repos/alice/app" || reqs[0].User != "alice" || reqs[0].Status != 500 {
		t.Fatalf("first request = %+v", reqs[0])
	}
}

func TestPayloadsParseWithGoGitHub(t *testing.T) {
	s, r := setup(t)
	sha := r.Commit("main", map[string]string{"a": "1"}, "the message")
	before := r.Head("main")

	ev, err := github.ParseWebHook("push", fakegithub.PushPayload(r, "main", before, sha, "alice"))
	if err != nil {
		t.Fatal(err)
	}
	push := ev.(*github.PushEvent)
	if push.GetRef() != "refs/heads/main" || push.GetAfter() != sha || push.GetRepo().GetID() != r.ID ||
		push.GetRepo().GetOwner().GetLogin() != "alice" || push.GetPusher().GetName() != "alice" ||
		push.GetHeadCommit().GetMessage() != "the message" || push.GetSender().GetID() != 1001 ||
		push.GetRepo().GetCloneURL() != r.CloneURL || push.GetDeleted() {
		t.Fatalf("push = %v", push)
	}
	ev, err = github.ParseWebHook("push", fakegithub.PushPayload(r, "gone", sha, fakegithub.ZeroSHA, "alice"))
	if err != nil || !ev.(*github.PushEvent).GetDeleted() || ev.(*github.PushEvent).HeadCommit != nil {
		t.Fatalf("deletion = %v, %v", ev, err)
	}
	ev, err = github.ParseWebHook("pull_request", fakegithub.PullRequestPayload(r, "opened", 7, "feat", sha, true))
	if err != nil {
		t.Fatal(err)
	}
	pr := ev.(*github.PullRequestEvent)
	if pr.GetAction() != "opened" || pr.GetNumber() != 7 || pr.GetPullRequest().GetHead().GetRef() != "feat" ||
		pr.GetPullRequest().GetHead().GetSHA() != sha || pr.GetPullRequest().GetHead().GetRepo().GetID() == r.ID ||
		pr.GetPullRequest().GetBase().GetRepo().GetID() != r.ID || pr.GetSender().GetLogin() != fakegithub.ForkOwner {
		t.Fatalf("pull_request = %v", pr)
	}
	ev, err = github.ParseWebHook("ping", fakegithub.PingPayload(r))
	if err != nil || ev.(*github.PingEvent).GetZen() == "" || ev.(*github.PingEvent).GetRepo().GetID() != r.ID {
		t.Fatalf("ping = %v, %v", ev, err)
	}
	ev, err = github.ParseWebHook("deployment", fakegithub.DeploymentPayload(r, sha, "main", "production"))
	if err != nil || ev.(*github.DeploymentEvent).GetDeployment().GetSHA() != sha {
		t.Fatalf("deployment = %v, %v", ev, err)
	}
	_ = s
}

func TestDeliverSignsPayloadsForSubscribedHooks(t *testing.T) {
	s, r := setup(t)
	var mu sync.Mutex
	var got []*http.Request
	var bodies [][]byte
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		mu.Lock()
		got, bodies = append(got, req), append(bodies, b)
		mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(recv.Close)
	admin := client(t, s, "tok-alice")
	for _, h := range []struct {
		url    string
		events []string
	}{{recv.URL + "/push", []string{"push"}}, {recv.URL + "/pr", []string{"pull_request"}}} {
		if _, _, err := admin.Repositories.CreateHook(t.Context(), "alice", "app", &github.Hook{
			Config: &github.HookConfig{URL: github.String(h.url), ContentType: github.String("json"), Secret: github.String("k")},
			Events: h.events}); err != nil {
			t.Fatal(err)
		}
	}
	payload := fakegithub.PushPayload(r, "main", "", r.Head("main"), "alice")
	ds, err := s.Deliver(context.Background(), "alice", "app", "push", payload)
	if err != nil || len(ds) != 1 || ds[0].StatusCode != http.StatusAccepted {
		t.Fatalf("deliveries = %+v, %v", ds, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 || got[0].URL.Path != "/push" || got[0].Header.Get("X-GitHub-Event") != "push" ||
		got[0].Header.Get("X-GitHub-Delivery") != ds[0].GUID ||
		got[0].Header.Get("X-Hub-Signature-256") != fakegithub.SignPayload("k", bodies[0]) || string(bodies[0]) != string(payload) {
		t.Fatalf("received %d requests: %v", len(got), got)
	}
}
