package local

import (
	"fmt"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// gitServer is a real git repository served over smart HTTP by git
// http-backend, behind the basic auth GitHub expects for clone tokens.
type gitServer struct {
	cloneURL string
	token    string
	first    string // commit with hello.txt = v1
	head     string // main's head: hello.txt = v2
	pull     string // commit only reachable from refs/pull/1/head
}

// shared is the one server of the package's tests: it is only read.
var shared *gitServer

func TestMain(m *testing.M) {
	code, err := runWithGitServer(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "git server:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

func runWithGitServer(m *testing.M) (int, error) {
	tmp, err := os.MkdirTemp("", "local-executor-test-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(tmp)
	s, stop, err := startGitServer(tmp)
	if err != nil {
		return 0, err
	}
	defer stop()
	shared = s
	return m.Run(), nil
}

// newGitServer returns the package's git server.
func newGitServer(t testing.TB) *gitServer {
	t.Helper()
	if shared == nil {
		t.Fatal("no git server")
	}
	return shared
}

// gitCLI runs the git CLI in dir with a configuration of its own.
func gitCLI(home, dir string, args ...string) (string, error) {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "HOME="+home, "GIT_CONFIG_NOSYSTEM=1",
		"GIT_AUTHOR_NAME=Test", "GIT_AUTHOR_EMAIL=test@example.com",
		"GIT_COMMITTER_NAME=Test", "GIT_COMMITTER_EMAIL=test@example.com")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

// startGitServer makes a repository with three commits under tmp and
// serves it.
func startGitServer(tmp string) (*gitServer, func(), error) {
	var failed error
	git := func(dir string, args ...string) string {
		if failed != nil {
			return ""
		}
		out, err := gitCLI(tmp, dir, args...)
		failed = err
		return out
	}
	write := func(name, content string) {
		p := filepath.Join(tmp, "work", name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil && failed == nil {
			failed = err
		}
		if err := os.WriteFile(p, []byte(content), 0o755); err != nil && failed == nil {
			failed = err
		}
	}
	backend := filepath.Join(git("", "--exec-path"), "git-http-backend")
	root := filepath.Join(tmp, "repos")
	work := filepath.Join(tmp, "work")
	git("", "init", "-q", "-b", "main", work)
	write("hello.txt", "v1\n")
	write("sub/dir/script.sh", "#!/bin/sh\necho script ran in \"$(pwd)\"\n")
	write("deploy/app.yaml", "commit: {{.KONTINUOUS_COMMIT}}\n")
	if err := os.Symlink("../..", filepath.Join(work, "escape")); err != nil && failed == nil {
		failed = err
	}
	git(work, "add", "-A")
	git(work, "commit", "-q", "-m", "first")
	s := &gitServer{token: "ghs_test_clone_token_1234567890"}
	s.first = git(work, "rev-parse", "HEAD")
	write("hello.txt", "v2\n")
	git(work, "commit", "-q", "-am", "second")
	s.head = git(work, "rev-parse", "HEAD")
	git(work, "checkout", "-q", "-b", "fork-pr")
	write("hello.txt", "from a fork\n")
	git(work, "commit", "-q", "-am", "fork")
	s.pull = git(work, "rev-parse", "HEAD")
	git(work, "checkout", "-q", "main")

	bare := filepath.Join(root, "acme", "app.git")
	git("", "clone", "-q", "--bare", work, bare)
	// As on GitHub: the fork's commit is under refs/pull/1/head only.
	git(bare, "update-ref", "refs/pull/1/head", s.pull)
	git(bare, "branch", "-D", "fork-pr")
	if failed != nil {
		return nil, nil, failed
	}

	h := &cgi.Handler{
		Path: backend,
		Root: "/",
		Env:  []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1"},
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, pass, ok := r.BasicAuth()
		if !ok || user != "x-access-token" || pass != s.token {
			w.Header().Set("WWW-Authenticate", `Basic realm="GitHub"`)
			http.Error(w, "bad credentials", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	}))
	s.cloneURL = srv.URL + "/acme/app.git"
	return s, srv.Close, nil
}
