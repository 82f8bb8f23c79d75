package gitrepo_test

import (
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kontinuous/kontinuous/pipeline/pipelinetest/gitrepo"
)

func newRepo(t *testing.T) (*gitrepo.Root, *gitrepo.Repo) {
	t.Helper()
	rt := gitrepo.New(t, gitrepo.Config{Committer: "Forge <noreply@example.com>"})
	repo := rt.Repo("acme/app.git")
	if err := repo.Init("app", "Alice <alice@example.com>"); err != nil {
		t.Fatal(err)
	}
	return rt, repo
}

// Commits write files and delete them on a new branch from main; bad
// branch names and paths are refused.
func TestCommitsAndFiles(t *testing.T) {
	_, repo := newRepo(t)
	sha, err := repo.CommitChanges("feature", gitrepo.Changes(map[string]string{"a/b.txt": "hello\n", "README.md": ""}), "add b", "Alice <alice@example.com>")
	if err != nil || !gitrepo.IsSHA(sha) || repo.Head("feature") != sha {
		t.Fatalf("commit: %q %v (head %q)", sha, err, repo.Head("feature"))
	}
	if c, ok := repo.File("feature", "a/b.txt"); !ok || c != "hello\n" {
		t.Fatalf("File = %q %v", c, ok)
	}
	if _, ok := repo.File("feature", "README.md"); ok {
		t.Fatal("README.md was deleted on feature but File finds it")
	}
	if _, ok := repo.File("main", "README.md"); !ok {
		t.Fatal("README.md is missing on main")
	}
	if _, err := repo.CommitChanges("bad..branch", nil, "x", "A <a@b>"); err == nil {
		t.Fatal("an invalid branch name was committed")
	}
	if _, err := repo.CommitChanges("main", gitrepo.Changes(map[string]string{"../x": "y"}), "x", "A <a@b>"); err == nil {
		t.Fatal("a path leaving the tree was committed")
	}
}

// git runs git in dir with no user or system configuration.
func git(dir string, args ...string) (string, error) {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_TERMINAL_PROMPT=0", "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null",
		"GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// A repository served behind a check: the right credentials clone what
// was committed, a reader cannot push, a writer can, anyone else is asked
// for credentials with the check's realm.
func TestCloneAndPushBehindTheCheck(t *testing.T) {
	rt, repo := newRepo(t)
	if _, err := repo.CommitChanges("feature", gitrepo.Changes(map[string]string{"a/b.txt": "hello\n"}), "add b", "Alice <alice@example.com>"); err != nil {
		t.Fatal(err)
	}
	check := func(req *http.Request, owner, name string, push bool) (*gitrepo.Repo, string, *gitrepo.Refusal) {
		user, pass, _ := req.BasicAuth()
		switch {
		case pass != "reader" && pass != "writer":
			return nil, "", &gitrepo.Refusal{Status: http.StatusUnauthorized, Realm: "Test", Message: "who?"}
		case owner+"/"+name != "acme/app":
			return nil, "", &gitrepo.Refusal{Status: http.StatusNotFound, Message: "no such repository"}
		case push && pass != "writer":
			return nil, "", &gitrepo.Refusal{Status: http.StatusForbidden, Message: "read only"}
		}
		return repo, user, nil
	}
	srv := httptest.NewServer(rt.Handler("/git/", check))
	t.Cleanup(srv.Close)
	base := strings.TrimPrefix(srv.URL, "http://")

	resp, err := http.Get(srv.URL + "/git/acme/app.git/info/refs?service=git-upload-pack")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") != `Basic realm="Test"` {
		t.Fatalf("anonymous: %d %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}

	work := t.TempDir()
	clone := filepath.Join(work, "clone")
	if out, err := git(work, "clone", "--quiet", "--branch", "feature", "http://u:reader@"+base+"/git/acme/app.git", clone); err != nil {
		t.Fatalf("clone: %v: %s", err, out)
	}
	if b, err := os.ReadFile(filepath.Join(clone, "a", "b.txt")); err != nil || string(b) != "hello\n" {
		t.Fatalf("cloned a/b.txt = %q %v", b, err)
	}
	if out, err := git(work, "clone", "--quiet", "http://u:reader@"+base+"/git/acme/other.git", filepath.Join(work, "other")); err == nil || !strings.Contains(out, "404") && !strings.Contains(out, "not found") {
		t.Fatalf("clone of a repository the check does not know: %v: %s", err, out)
	}

	if err := os.WriteFile(filepath.Join(clone, "c.txt"), []byte("c\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := git(clone, "add", "c.txt"); err != nil {
		t.Fatalf("add: %v: %s", err, out)
	}
	if out, err := git(clone, "commit", "--quiet", "-m", "c"); err != nil {
		t.Fatalf("commit: %v: %s", err, out)
	}
	if out, err := git(clone, "push", "--quiet", "origin", "feature"); err == nil || !strings.Contains(out, "403") {
		t.Fatalf("a reader pushed: %v: %s", err, out)
	}
	if out, err := git(clone, "push", "--quiet", "http://u:writer@"+base+"/git/acme/app.git", "feature"); err != nil {
		t.Fatalf("writer push: %v: %s", err, out)
	}
	local, _ := git(clone, "rev-parse", "HEAD")
	if repo.Head("feature") != strings.TrimSpace(local) {
		t.Fatalf("after push the repository's feature is %q, the clone's %q", repo.Head("feature"), local)
	}
}
