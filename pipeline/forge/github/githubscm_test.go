package github_test

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-github/v60/github"

	"github.com/kontinuous/kontinuous/pipeline"
	githubscm "github.com/kontinuous/kontinuous/pipeline/forge/github"
	"github.com/kontinuous/kontinuous/pipeline/pipelinetest/fakegithub"
)

var (
	alice = pipeline.ForgeToken{AccessToken: "tok-alice-0123456789"}
	bob   = pipeline.ForgeToken{AccessToken: "tok-bob-0123456789"}
	carol = pipeline.ForgeToken{AccessToken: "tok-carol-0123456789"}
	dave  = pipeline.ForgeToken{AccessToken: "tok-dave-0123456789"}
)

// world is a fake GitHub where alice owns alice/app, bob reads it, carol
// pushes to it and dave has no access.
func world(t *testing.T) (*fakegithub.Server, *fakegithub.Repo) {
	t.Helper()
	s := fakegithub.New(t)
	s.AddUser("alice", 1001, alice.AccessToken)
	s.AddUser("bob", 1002, bob.AccessToken)
	s.AddUser("carol", 1003, carol.AccessToken)
	s.AddUser("dave", 1004, dave.AccessToken)
	r := s.AddRepo("alice", "app")
	s.Grant("bob", "alice", "app", "read")
	s.Grant("carol", "alice", "app", "push")
	return s, r
}

func newSCM(t *testing.T, s *fakegithub.Server, mod ...func(*githubscm.Config)) *githubscm.SCM {
	t.Helper()
	cfg := githubscm.Config{APIURL: s.APIURL}
	for _, m := range mod {
		m(&cfg)
	}
	scm, err := githubscm.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return scm
}

// count returns how many recorded requests had method and path.
func count(s *fakegithub.Server, method, path string) int {
	n := 0
	for _, r := range s.Requests() {
		if r.Method == method && r.Path == path {
			n++
		}
	}
	return n
}

func TestNewRejectsBadAPIURL(t *testing.T) {
	for _, u := range []string{"ftp://x/", "not a url", "/relative/", "https://user:pw@host/api/v3/"} {
		if _, err := githubscm.New(githubscm.Config{APIURL: u}); !errors.Is(err, pipeline.ErrInvalid) {
			t.Errorf("New(%q) = %v, want ErrInvalid", u, err)
		}
	}
	scm, err := githubscm.New(githubscm.Config{})
	if err != nil || scm.Name() != "github" {
		t.Fatalf("default New = %v, %v", scm, err)
	}
}

func TestUserReturnsTheTokensOwner(t *testing.T) {
	s, _ := world(t)
	scm := newSCM(t, s)
	u, err := scm.User(t.Context(), bob)
	if err != nil || u != (pipeline.ForgeUser{ID: 1002, Login: "bob"}) {
		t.Fatalf("User = %+v, %v", u, err)
	}
	if _, err := scm.User(t.Context(), pipeline.ForgeToken{AccessToken: "wrong-token"}); !errors.Is(err, pipeline.ErrUnauthorized) {
		t.Fatalf("bad token: %v", err)
	}
	if _, err := scm.User(t.Context(), pipeline.ForgeToken{}); !errors.Is(err, pipeline.ErrUnauthorized) {
		t.Fatalf("empty token: %v", err)
	}
}

func TestRepositoriesReadsEveryPage(t *testing.T) {
	s, _ := world(t)
	for i := range 4 {
		s.AddRepo("org", fmt.Sprintf("r%d", i))
		s.Grant("bob", "org", fmt.Sprintf("r%d", i), "read")
	}
	s.AddRepo("org", "secret")
	scm := newSCM(t, s, func(c *githubscm.Config) { c.PageSize = 2 })
	repos, err := scm.Repositories(t.Context(), bob)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range repos {
		names = append(names, r.FullName)
	}
	if got, want := strings.Join(names, ","), "alice/app,org/r0,org/r1,org/r2,org/r3"; got != want {
		t.Fatalf("repositories = %s, want %s", got, want)
	}
	if n := count(s, "GET", "/api/v3/user/repos"); n != 3 {
		t.Fatalf("%d page requests, want 3", n)
	}
	app := repos[0]
	r := s.Repo("alice", "app")
	if app.ID != r.ID || app.Owner != "alice" || app.Name != "app" || app.DefaultBranch != "main" ||
		app.CloneURL != r.CloneURL || app.AvatarURL == "" || !app.Private {
		t.Fatalf("alice/app = %+v", app)
	}
	// Each listed repository carries the caller's access (a UI offers
	// "New pipeline" only where it is admin).
	if a := repos[1].Permissions; a == nil || !a.Read || a.Push || a.Admin {
		t.Fatalf("org/r0 permissions = %+v, want read only", a)
	}
	// The listing primed the permission cache.
	if p, err := scm.Permission(t.Context(), bob, "org", "r1"); err != nil || p != pipeline.PermRead {
		t.Fatalf("permission = %v, %v", p, err)
	}
	if n := count(s, "GET", "/api/v3/repos/org/r1"); n != 0 {
		t.Fatalf("permission after listing made %d requests", n)
	}
}

func TestRepositoryMapsFieldsAndHidesInaccessibleOnes(t *testing.T) {
	s, r := world(t)
	scm := newSCM(t, s)
	got, err := scm.Repository(t.Context(), bob, "Alice", "App")
	if err != nil {
		t.Fatal(err)
	}
	want := pipeline.Repository{ID: r.ID, Owner: "alice", Name: "app", FullName: "alice/app", DefaultBranch: "main",
		CloneURL: r.CloneURL, Private: true, AvatarURL: got.AvatarURL}
	if got != want || !strings.HasPrefix(got.AvatarURL, "http") {
		t.Fatalf("Repository = %+v, want %+v", got, want)
	}
	if _, err := scm.Repository(t.Context(), dave, "alice", "app"); !errors.Is(err, pipeline.ErrNotFound) {
		t.Fatalf("no access: %v", err)
	}
	if _, err := scm.Repository(t.Context(), bob, "alice", "../x"); !errors.Is(err, pipeline.ErrInvalid) {
		t.Fatalf("bad name: %v", err)
	}
}

func TestPermissionFollowsGitHubPermissions(t *testing.T) {
	s, _ := world(t)
	scm := newSCM(t, s)
	tests := []struct {
		name string
		tok  pipeline.ForgeToken
		want pipeline.Permission
	}{
		{"owner is admin", alice, pipeline.PermAdmin},
		{"pusher", carol, pipeline.PermPush},
		{"reader", bob, pipeline.PermRead},
		{"no access is none without error", dave, pipeline.PermNone},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := scm.Permission(t.Context(), tc.tok, "alice", "app")
			if err != nil || p != tc.want {
				t.Fatalf("Permission = %v, %v; want %v", p, err, tc.want)
			}
		})
	}
	if _, err := scm.Permission(t.Context(), pipeline.ForgeToken{AccessToken: "revoked"}, "alice", "app"); !errors.Is(err, pipeline.ErrUnauthorized) {
		t.Fatalf("bad token: %v", err)
	}
}

func TestPermissionIsCachedPerTokenAndRepository(t *testing.T) {
	s, _ := world(t)
	s.AddRepo("alice", "other")
	now := time.Unix(1_700_000_000, 0)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	scm := newSCM(t, s, func(c *githubscm.Config) { c.PermissionTTL = 30 * time.Second; c.Now = clock })
	ctx := t.Context()
	perm := func(tok pipeline.ForgeToken, owner, name string) pipeline.Permission {
		t.Helper()
		p, err := scm.Permission(ctx, tok, owner, name)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	const path = "/api/v3/repos/alice/app"
	if perm(bob, "alice", "app") != pipeline.PermRead || perm(bob, "ALICE", "App") != pipeline.PermRead {
		t.Fatal("bob should read alice/app")
	}
	if n := count(s, "GET", path); n != 1 {
		t.Fatalf("second look-up made a request: %d requests", n)
	}
	// Another token is another identity; another repository another entry.
	if perm(carol, "alice", "app") != pipeline.PermPush || count(s, "GET", path) != 2 {
		t.Fatalf("carol's look-up was not made: %d requests", count(s, "GET", path))
	}
	if perm(bob, "alice", "other") != pipeline.PermNone || count(s, "GET", "/api/v3/repos/alice/other") != 1 {
		t.Fatal("other repository not looked up")
	}
	// A change on GitHub is seen once the TTL has passed, not before.
	s.Grant("bob", "alice", "app", "admin")
	mu.Lock()
	now = now.Add(29 * time.Second)
	mu.Unlock()
	if perm(bob, "alice", "app") != pipeline.PermRead {
		t.Fatal("cache entry expired early")
	}
	mu.Lock()
	now = now.Add(2 * time.Second)
	mu.Unlock()
	if perm(bob, "alice", "app") != pipeline.PermAdmin || count(s, "GET", path) != 3 {
		t.Fatalf("expired entry served: %d requests", count(s, "GET", path))
	}
	// "No access" is cached too.
	perm(dave, "alice", "app")
	perm(dave, "alice", "app")
	if count(s, "GET", path) != 4 {
		t.Fatalf("PermNone not cached: %d requests", count(s, "GET", path))
	}
}

func TestPermissionCacheIsBounded(t *testing.T) {
	s, _ := world(t)
	s.AddRepo("alice", "two")
	scm := newSCM(t, s, func(c *githubscm.Config) { c.PermissionCacheSize = 1 })
	for _, name := range []string{"app", "two", "app"} {
		if _, err := scm.Permission(t.Context(), alice, "alice", name); err != nil {
			t.Fatal(err)
		}
	}
	if n := count(s, "GET", "/api/v3/repos/alice/app"); n != 2 {
		t.Fatalf("alice/app looked up %d times, want 2 (evicted by alice/two)", n)
	}
}

func TestPermissionErrorsAreNotCached(t *testing.T) {
	s, _ := world(t)
	scm := newSCM(t, s)
	s.FailNext("GET", "/repos/alice/app", http.StatusBadGateway, "")
	if _, err := scm.Permission(t.Context(), bob, "alice", "app"); !errors.Is(err, pipeline.ErrUpstream) {
		t.Fatalf("502: %v", err)
	}
	if p, err := scm.Permission(t.Context(), bob, "alice", "app"); err != nil || p != pipeline.PermRead {
		t.Fatalf("after failure: %v, %v", p, err)
	}
}

func TestErrorsMapToPipelineSentinels(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(s *fakegithub.Server)
		tok     pipeline.ForgeToken
		want    error
		message string
	}{
		{"404", func(s *fakegithub.Server) {}, dave, pipeline.ErrNotFound, ""},
		{"401 bad token", func(s *fakegithub.Server) {}, pipeline.ForgeToken{AccessToken: "gho_forgedtoken"}, pipeline.ErrUnauthorized, "Bad credentials"},
		{"403", func(s *fakegithub.Server) {
			s.FailNext("GET", "/repos/alice/app", http.StatusForbidden, `{"message":"Resource not accessible by integration"}`)
		}, bob, pipeline.ErrForbidden, "Resource not accessible"},
		{"403 primary rate limit", func(s *fakegithub.Server) { s.RateLimitNext("GET", "/repos/alice/app") }, bob, pipeline.ErrRateLimited, "resets at"},
		{"403 rate limit via FailNext", func(s *fakegithub.Server) {
			s.FailNext("GET", "/repos/alice/app", http.StatusForbidden, `{"message":"API rate limit exceeded"}`)
		}, bob, pipeline.ErrRateLimited, "resets at"},
		{"403 secondary rate limit", func(s *fakegithub.Server) { s.SecondaryRateLimitNext("GET", "/repos/alice/app") }, bob, pipeline.ErrRateLimited, "retry after 1m0s"},
		{"429", func(s *fakegithub.Server) { s.FailNext("GET", "/repos/alice/app", http.StatusTooManyRequests, "") }, bob, pipeline.ErrRateLimited, "retry after 1m0s"},
		{"500", func(s *fakegithub.Server) { s.FailNext("GET", "/repos/alice/app", http.StatusInternalServerError, "") }, bob, pipeline.ErrUpstream, "500"},
		{"down", func(s *fakegithub.Server) { s.SetDown(true) }, bob, pipeline.ErrUpstream, "503"},
		{"connection dropped", func(s *fakegithub.Server) { s.SetDropConnections(true) }, bob, pipeline.ErrUpstream, "cannot reach GitHub"},
		{"server gone", func(s *fakegithub.Server) { s.Close() }, bob, pipeline.ErrUpstream, "cannot reach GitHub"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := world(t)
			scm := newSCM(t, s)
			tc.setup(s)
			_, err := scm.Repository(t.Context(), tc.tok, "alice", "app")
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.message) {
				t.Fatalf("err = %q, want it to mention %q", err, tc.message)
			}
			// What the API caller reads says it too.
			if msg := pipeline.PublicMessage(err); !strings.Contains(msg, tc.message) {
				t.Fatalf("public message = %q, want it to mention %q", msg, tc.message)
			}
			if strings.Contains(err.Error(), tc.tok.AccessToken) {
				t.Fatalf("token in error: %q", err)
			}
		})
	}
}

func TestRateLimitDoesNotStickAcrossCalls(t *testing.T) {
	s, _ := world(t)
	scm := newSCM(t, s)
	s.RateLimitNext("GET", "/user")
	if _, err := scm.User(t.Context(), bob); !errors.Is(err, pipeline.ErrRateLimited) {
		t.Fatalf("first: %v", err)
	}
	// Another token (another user's quota) goes through.
	if _, err := scm.User(t.Context(), carol); err != nil {
		t.Fatalf("other token after rate limit: %v", err)
	}
}

func TestBranchHeadAndFileAt(t *testing.T) {
	s, r := world(t)
	scm := newSCM(t, s)
	ctx := t.Context()
	old := r.Commit("main", map[string]string{".pipeline.yml": "v1", "dir/x": "x"}, "v1")
	head := r.Commit("main", map[string]string{".pipeline.yml": "v2"}, "v2")
	feature := r.Commit("feature/a", map[string]string{".pipeline.yml": "feature"}, "f")

	if sha, err := scm.BranchHead(ctx, bob, "alice", "app", "main"); err != nil || sha != head {
		t.Fatalf("BranchHead(main) = %s, %v; want %s", sha, err, head)
	}
	if sha, err := scm.BranchHead(ctx, bob, "alice", "app", "feature/a"); err != nil || sha != feature {
		t.Fatalf("BranchHead(feature/a) = %s, %v", sha, err)
	}
	if _, err := scm.BranchHead(ctx, bob, "alice", "app", "nope"); !errors.Is(err, pipeline.ErrNotFound) {
		t.Fatalf("missing branch: %v", err)
	}
	if _, err := scm.BranchHead(ctx, bob, "alice", "app", "bad..name"); !errors.Is(err, pipeline.ErrInvalid) {
		t.Fatalf("bad branch: %v", err)
	}

	tests := []struct {
		ref, want string
	}{{"", "v2"}, {"main", "v2"}, {old, "v1"}, {"feature/a", "feature"}}
	for _, tc := range tests {
		f, err := scm.FileAt(ctx, bob, "alice", "app", ".pipeline.yml", tc.ref)
		if err != nil || string(f.Content) != tc.want || len(f.SHA) != 40 {
			t.Fatalf("FileAt(%q) = %q %s, %v; want %q", tc.ref, f.Content, f.SHA, err, tc.want)
		}
	}
	if _, err := scm.FileAt(ctx, bob, "alice", "app", "missing.yml", ""); !errors.Is(err, pipeline.ErrNotFound) {
		t.Fatalf("missing file: %v", err)
	}
	if _, err := scm.FileAt(ctx, bob, "alice", "app", "dir", ""); !errors.Is(err, pipeline.ErrInvalid) {
		t.Fatalf("directory: %v", err)
	}
	if _, err := scm.FileAt(ctx, bob, "alice", "app", "../etc/passwd", ""); !errors.Is(err, pipeline.ErrInvalid) {
		t.Fatalf("dot-dot path: %v", err)
	}
	if _, err := scm.FileAt(ctx, dave, "alice", "app", ".pipeline.yml", ""); !errors.Is(err, pipeline.ErrNotFound) {
		t.Fatalf("no access: %v", err)
	}
}

func TestPutFileCreatesAndUpdatesWithRealCommits(t *testing.T) {
	s, r := world(t)
	scm := newSCM(t, s)
	ctx := t.Context()
	before := r.Head("main")
	c1, err := scm.PutFile(ctx, carol, "alice", "app", "ci/my spec.yml", "", "add spec", []byte("one"), "")
	if err != nil {
		t.Fatal(err)
	}
	if c1 == before || r.Head("main") != c1 {
		t.Fatalf("commit %s, head %s", c1, r.Head("main"))
	}
	if got, _ := r.File(c1, "ci/my spec.yml"); got != "one" {
		t.Fatalf("file at %s = %q", c1, got)
	}
	if _, err := scm.PutFile(ctx, carol, "alice", "app", "ci/my spec.yml", "", "again", []byte("x"), ""); !errors.Is(err, pipeline.ErrConflict) {
		t.Fatalf("create over existing file: %v, want ErrConflict", err)
	}
	f, err := scm.FileAt(ctx, carol, "alice", "app", "ci/my spec.yml", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := scm.PutFile(ctx, carol, "alice", "app", "ci/my spec.yml", "", "stale", []byte("x"), strings.Repeat("b", 40)); !errors.Is(err, pipeline.ErrConflict) {
		t.Fatalf("stale sha: %v, want ErrConflict", err)
	}
	r.Commit("edit", nil, "branch off")
	c2, err := scm.PutFile(ctx, carol, "alice", "app", "ci/my spec.yml", "edit", "update", []byte("two"), f.SHA)
	if err != nil {
		t.Fatal(err)
	}
	if r.Head("edit") != c2 || r.Head("main") != c1 {
		t.Fatalf("update landed on the wrong branch: edit %s main %s commit %s", r.Head("edit"), r.Head("main"), c2)
	}
	if got, _ := r.File("edit", "ci/my spec.yml"); got != "two" {
		t.Fatalf("updated file = %q", got)
	}
	if _, err := scm.PutFile(ctx, bob, "alice", "app", "x.yml", "", "m", []byte("x"), ""); !errors.Is(err, pipeline.ErrForbidden) {
		t.Fatalf("reader writes: %v, want ErrForbidden", err)
	}
}

func TestCreateBranchAndPullRequest(t *testing.T) {
	s, r := world(t)
	scm := newSCM(t, s)
	ctx := t.Context()
	head := r.Head("main")
	if err := scm.CreateBranch(ctx, carol, "alice", "app", "kontinuous/update", head); err != nil {
		t.Fatal(err)
	}
	if r.Head("kontinuous/update") != head {
		t.Fatalf("branch at %s, want %s", r.Head("kontinuous/update"), head)
	}
	if err := scm.CreateBranch(ctx, carol, "alice", "app", "kontinuous/update", head); !errors.Is(err, pipeline.ErrConflict) {
		t.Fatalf("existing branch: %v, want ErrConflict", err)
	}
	f, err := scm.FileAt(ctx, carol, "alice", "app", "README.md", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := scm.PutFile(ctx, carol, "alice", "app", "README.md", "kontinuous/update", "edit", []byte("new"), f.SHA); err != nil {
		t.Fatal(err)
	}
	u, err := scm.CreatePullRequest(ctx, carol, "alice", "app", "Update pipeline", "kontinuous/update", "main")
	if err != nil {
		t.Fatal(err)
	}
	prs := s.PullRequests("alice", "app")
	if len(prs) != 1 || prs[0].HTMLURL != u || prs[0].Head != "kontinuous/update" || prs[0].Base != "main" || prs[0].Title != "Update pipeline" {
		t.Fatalf("pull requests = %+v, url %s", prs, u)
	}
	if _, err := scm.CreatePullRequest(ctx, carol, "alice", "app", "Again", "kontinuous/update", "main"); !errors.Is(err, pipeline.ErrConflict) {
		t.Fatalf("duplicate PR: %v, want ErrConflict", err)
	}
}

func TestWebhookAndDeployKeyLifecycle(t *testing.T) {
	s, _ := world(t)
	scm := newSCM(t, s)
	ctx := t.Context()
	hook := pipeline.Hook{URL: "https://ci.example/api/v1/pipelines/alice/app/builds", Secret: "whsec-123", Events: []string{"push", "pull_request"}}
	id, err := scm.CreateWebhook(ctx, alice, "alice", "app", hook)
	if err != nil {
		t.Fatal(err)
	}
	hooks := s.Hooks("alice", "app")
	want := fakegithub.Hook{ID: id, URL: hook.URL, ContentType: "json", Secret: "whsec-123", Events: hook.Events, Active: true}
	if len(hooks) != 1 || fmt.Sprint(hooks[0]) != fmt.Sprint(want) {
		t.Fatalf("hooks = %+v, want %+v", hooks, want)
	}
	// TLS verification stays on: GitHub reports insecure_ssl "0".
	gh, err := github.NewClient(nil).WithAuthToken(alice.AccessToken).WithEnterpriseURLs(s.APIURL, s.APIURL)
	if err != nil {
		t.Fatal(err)
	}
	got, _, err := gh.Repositories.GetHook(ctx, "alice", "app", id)
	if err != nil || got.GetConfig().GetInsecureSSL() != "0" {
		t.Fatalf("hook config = %v, %v", got.GetConfig(), err)
	}
	if _, err := scm.CreateWebhook(ctx, carol, "alice", "app", pipeline.Hook{URL: "https://x.example/", Secret: "s"}); !errors.Is(err, pipeline.ErrForbidden) {
		t.Fatalf("non-admin: %v, want ErrForbidden", err)
	}
	if _, err := scm.CreateWebhook(ctx, alice, "alice", "app", pipeline.Hook{URL: "https://x.example/"}); !errors.Is(err, pipeline.ErrInvalid) {
		t.Fatalf("no secret: %v, want ErrInvalid", err)
	}
	for range 2 {
		if err := scm.DeleteWebhook(ctx, alice, "alice", "app", id); err != nil {
			t.Fatalf("delete webhook: %v", err)
		}
	}
	if len(s.Hooks("alice", "app")) != 0 {
		t.Fatal("webhook not deleted")
	}

	pub := "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBHs2Wq6nOFl1kbOr0f9hmxGZ2CLmU3ayTP0rpHR5TmZ kontinuous"
	kid, err := scm.CreateDeployKey(ctx, alice, "alice", "app", "kontinuous", pub+"\n")
	if err != nil {
		t.Fatal(err)
	}
	keys := s.DeployKeys("alice", "app")
	if len(keys) != 1 || keys[0] != (fakegithub.DeployKey{ID: kid, Title: "kontinuous", Key: pub, ReadOnly: true}) {
		t.Fatalf("keys = %+v", keys)
	}
	if _, err := scm.CreateDeployKey(ctx, alice, "alice", "app", "again", pub); !errors.Is(err, pipeline.ErrConflict) {
		t.Fatalf("duplicate key: %v, want ErrConflict", err)
	}
	for range 2 {
		if err := scm.DeleteDeployKey(ctx, alice, "alice", "app", kid); err != nil {
			t.Fatalf("delete key: %v", err)
		}
	}
	if len(s.DeployKeys("alice", "app")) != 0 {
		t.Fatal("deploy key not deleted")
	}
	s.FailNext("DELETE", "/keys/", http.StatusInternalServerError, "")
	if err := scm.DeleteDeployKey(ctx, alice, "alice", "app", kid); !errors.Is(err, pipeline.ErrUpstream) {
		t.Fatalf("delete during outage: %v, want ErrUpstream", err)
	}
}

func TestSetCommitStatus(t *testing.T) {
	s, r := world(t)
	scm := newSCM(t, s)
	ctx := t.Context()
	sha := r.Head("main")
	long := strings.Repeat("é", 200)
	if err := scm.SetCommitStatus(ctx, carol, "alice", "app", sha, pipeline.CommitStatus{State: "pending", Context: "kontinuous/build",
		Description: "Build #1 running", TargetURL: "https://ci.example/b/1"}); err != nil {
		t.Fatal(err)
	}
	if err := scm.SetCommitStatus(ctx, carol, "alice", "app", sha, pipeline.CommitStatus{State: "failure", Context: "kontinuous/test", Description: long}); err != nil {
		t.Fatal(err)
	}
	st := s.Statuses("alice", "app", sha)
	if len(st) != 2 || st[0] != (fakegithub.Status{State: "pending", Context: "kontinuous/build", Description: "Build #1 running",
		TargetURL: "https://ci.example/b/1"}) {
		t.Fatalf("statuses = %+v", st)
	}
	if n := len([]rune(st[1].Description)); n != 140 || !strings.HasPrefix(long, strings.TrimSuffix(st[1].Description, "…")) {
		t.Fatalf("long description sent as %d runes: %q", n, st[1].Description)
	}
	if err := scm.SetCommitStatus(ctx, carol, "alice", "app", sha, pipeline.CommitStatus{State: "done"}); !errors.Is(err, pipeline.ErrInvalid) {
		t.Fatalf("bad state: %v", err)
	}
	if err := scm.SetCommitStatus(ctx, bob, "alice", "app", sha, pipeline.CommitStatus{State: "success"}); !errors.Is(err, pipeline.ErrForbidden) {
		t.Fatalf("reader: %v, want ErrForbidden", err)
	}
}
