package fakebitbucket

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/cgi"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"
)

// Repo is a repository of the fake: a real bare git repository on disk.
type Repo struct {
	// Workspace and Slug as added; UUID in braces.
	Workspace string
	Slug      string
	UUID      string
	// CloneURL is the https clone link without the user part.
	CloneURL string
	// Dir is the bare repository's directory.
	Dir string

	s     *Server
	gitMu sync.Mutex

	// Guarded by s.mu.
	perms    map[string]string // username -> read | write | admin
	hooks    []Hook
	keys     []DeployKey
	statuses map[string][]Status
	pulls    []PullRequest
	nextKey  int
}

// Hook is an installed webhook (Secret as given; Bitbucket never returns it).
type Hook struct {
	UUID, URL, Description, Secret string
	Events                         []string
	Active                         bool
}

// DeployKey is an installed access key.
type DeployKey struct {
	ID         int
	Key, Label string
}

// Status is a posted commit build status.
type Status struct {
	Key, State, Name, URL, Description, Refname string
}

// PullRequest is a pull request opened through the API.
type PullRequest struct {
	ID                  int
	Title, Source, Dest string
}

var nameRE = regexp.MustCompile(`^[a-z0-9_.-]+$`)

// AddRepo creates ws/slug: a bare git repository with one commit
// (README.md) on its main branch "main".
func (s *Server) AddRepo(ws, slug string) *Repo {
	s.t.Helper()
	if !nameRE.MatchString(ws) || !nameRE.MatchString(slug) {
		s.t.Fatalf("fakebitbucket: AddRepo: invalid name %q/%q", ws, slug)
	}
	r := &Repo{
		Workspace: ws, Slug: slug, UUID: "{" + uuid() + "}",
		CloneURL: s.URL + "/git/" + ws + "/" + slug + ".git",
		Dir:      filepath.Join(s.root, ws, slug+".git"),
		s:        s, perms: map[string]string{}, statuses: map[string][]Status{},
	}
	s.mu.Lock()
	if s.repos[ws+"/"+slug] != nil {
		s.mu.Unlock()
		s.t.Fatalf("fakebitbucket: AddRepo: %s/%s exists", ws, slug)
	}
	s.repos[ws+"/"+slug] = r
	s.mu.Unlock()
	if err := os.MkdirAll(filepath.Dir(r.Dir), 0o755); err != nil {
		s.t.Fatalf("fakebitbucket: %v", err)
	}
	if out, err := exec.Command("git", "init", "--quiet", "--bare", "--initial-branch=main", r.Dir).CombinedOutput(); err != nil {
		s.t.Fatalf("fakebitbucket: git init: %v: %s", err, out)
	}
	if _, err := r.commit("main", map[string]string{"README.md": "# " + slug + "\n"}, "Initial commit"); err != nil {
		s.t.Fatalf("fakebitbucket: AddRepo: %v", err)
	}
	return r
}

// Grant gives username perm ("read", "write" or "admin"; "" removes it).
func (r *Repo) Grant(username, perm string) {
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	if perm == "" {
		delete(r.perms, username)
		return
	}
	r.perms[username] = perm
}

// Commit commits files on branch (created from main when missing) and
// returns the new commit's SHA; content "" deletes a file.
func (r *Repo) Commit(branch string, files map[string]string, msg string) string {
	r.s.t.Helper()
	sha, err := r.commit(branch, files, msg)
	if err != nil {
		r.s.t.Fatalf("fakebitbucket: Commit: %v", err)
	}
	return sha
}

// Head returns the SHA at the tip of branch ("" when there is none).
func (r *Repo) Head(branch string) string {
	sha, err := r.resolve("refs/heads/" + branch)
	if err != nil {
		return ""
	}
	return sha
}

// Hooks lists the installed webhooks.
func (r *Repo) Hooks() []Hook {
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	return append([]Hook(nil), r.hooks...)
}

// DeployKeys lists the installed deploy keys.
func (r *Repo) DeployKeys() []DeployKey {
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	return append([]DeployKey(nil), r.keys...)
}

// Statuses lists the statuses posted on sha, oldest first.
func (r *Repo) Statuses(sha string) []Status {
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	return append([]Status(nil), r.statuses[sha]...)
}

// PullRequests lists the pull requests opened through the API.
func (r *Repo) PullRequests() []PullRequest {
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	return append([]PullRequest(nil), r.pulls...)
}

// File returns path's content at ref and whether it exists.
func (r *Repo) File(ref, path string) (string, bool) {
	out, err := r.git(nil, "cat-file", "blob", ref+":"+path)
	if err != nil {
		return "", false
	}
	return string(out), true
}

func (r *Repo) git(stdin []byte, args ...string) ([]byte, error) {
	cmd := exec.Command("git", args...)
	cmd.Env = append(r.s.gitEnv(), "GIT_DIR="+r.Dir)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("git %s: %w: %s", args[0], err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

func (s *Server) gitEnv() []string {
	return []string{
		"PATH=" + os.Getenv("PATH"), "HOME=" + s.home, "LC_ALL=C",
		"GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null", "GIT_TERMINAL_PROMPT=0",
	}
}

func (r *Repo) resolve(ref string) (string, error) {
	out, err := r.git(nil, "rev-parse", "--verify", "--quiet", ref+"^{commit}")
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(out)), nil
}

// commit writes files on branch with git fast-import.
func (r *Repo) commit(branch string, files map[string]string, msg string) (string, error) {
	r.gitMu.Lock()
	defer r.gitMu.Unlock()
	return r.commitFrom(branch, "", files, msg)
}

func (r *Repo) commitFrom(branch, from string, files map[string]string, msg string) (string, error) {
	parent, err := r.resolve("refs/heads/" + branch)
	if err != nil {
		parent = ""
		if from == "" && branch != "main" {
			from = "refs/heads/main"
		}
		if from != "" {
			if parent, err = r.resolve(from); err != nil {
				return "", fmt.Errorf("resolve %s: %w", from, err)
			}
		}
	}
	when := time.Now().Unix()
	var in bytes.Buffer
	fmt.Fprintf(&in, "commit refs/heads/%s\n", branch)
	fmt.Fprintf(&in, "author Bitbucket <noreply@bitbucket.org> %d +0000\n", when)
	fmt.Fprintf(&in, "committer Bitbucket <noreply@bitbucket.org> %d +0000\n", when)
	fmt.Fprintf(&in, "data %d\n%s\n", len(msg), msg)
	if parent != "" {
		fmt.Fprintf(&in, "from %s\n", parent)
	}
	paths := make([]string, 0, len(files))
	for p := range files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		if files[p] == "" {
			fmt.Fprintf(&in, "D %s\n", p)
			continue
		}
		fmt.Fprintf(&in, "M 100644 inline %s\ndata %d\n%s\n", p, len(files[p]), files[p])
	}
	in.WriteString("done\n")
	if _, err := r.git(in.Bytes(), "fast-import", "--quiet", "--done"); err != nil {
		return "", err
	}
	return r.resolve("refs/heads/" + branch)
}

// serveGit serves git smart HTTP for /git/{ws}/{slug}.git/... behind basic
// auth: user x-token-auth, password a live access token of a user with
// read access (write to push).
func (s *Server) serveGit(w http.ResponseWriter, req *http.Request) {
	parts := strings.SplitN(strings.TrimPrefix(req.URL.Path, "/git/"), "/", 3)
	if len(parts) < 3 {
		http.NotFound(w, req)
		return
	}
	ws, slug, rest := parts[0], strings.TrimSuffix(parts[1], ".git"), parts[2]
	user, tok, ok := req.BasicAuth()
	var u *User
	if ok && user == "x-token-auth" {
		u = s.userByToken(tok)
	}
	if u == nil {
		w.Header().Set("WWW-Authenticate", `Basic realm="Bitbucket.org HTTP"`)
		http.Error(w, "Invalid credentials", http.StatusUnauthorized)
		return
	}
	s.mu.Lock()
	r := s.repos[ws+"/"+slug]
	perm := ""
	if r != nil {
		perm = r.perms[u.Username]
	}
	s.mu.Unlock()
	if perm == "" {
		http.Error(w, "Repository not found", http.StatusNotFound)
		return
	}
	if (req.URL.Query().Get("service") == "git-receive-pack" || strings.HasSuffix(rest, "git-receive-pack")) && perm == "read" {
		http.Error(w, "Forbidden", http.StatusForbidden)
		return
	}
	out := req.Clone(req.Context())
	out.Header.Del("Authorization")
	out.URL.Path = "/" + ws + "/" + slug + ".git/" + rest
	out.URL.RawPath = ""
	h := &cgi.Handler{
		Path: s.backend, Root: "/", Dir: s.root,
		Env: append(s.gitEnv(), "GIT_PROJECT_ROOT="+s.root, "GIT_HTTP_EXPORT_ALL=1", "REMOTE_USER="+u.Username,
			"GIT_CONFIG_COUNT=1", "GIT_CONFIG_KEY_0=uploadpack.allowAnySHA1InWant", "GIT_CONFIG_VALUE_0=true"),
	}
	h.ServeHTTP(w, out)
}
