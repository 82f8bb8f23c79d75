package fakegithub

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"net/http/cgi"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Repo is a repository of the fake: a real bare git repository on disk.
type Repo struct {
	// Owner and Name as added.
	Owner string
	Name  string
	// ID is the numeric repository id (REST and webhook payloads).
	ID int64
	// CloneURL is the HTTPS clone URL, s.URL + "/git/owner/name.git".
	CloneURL string
	// DefaultBranch is "main".
	DefaultBranch string
	// Dir is the bare repository's directory.
	Dir string

	s     *Server
	gitMu sync.Mutex // serialises writes to the git repository

	// Guarded by s.mu.
	grants   map[string]int
	hooks    []hookRec
	keys     []DeployKey
	statuses map[string][]statusRec
	pulls    []PullRequest
	created  time.Time
	public   bool // SetPublic; guarded by s.mu
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)

// AddRepo creates owner/name: a bare git repository with one commit
// (README.md) on its default branch "main", served at CloneURL.
func (s *Server) AddRepo(owner, name string) *Repo {
	s.t.Helper()
	if !nameRE.MatchString(owner) || !nameRE.MatchString(name) || name == "." || name == ".." || owner == "." || owner == ".." {
		s.t.Fatalf("fakegithub: AddRepo: invalid name %q/%q", owner, name)
	}
	s.mu.Lock()
	if s.repos[repoKey(owner, name)] != nil {
		s.mu.Unlock()
		s.t.Fatalf("fakegithub: AddRepo: %s/%s exists", owner, name)
	}
	s.nextID++
	r := &Repo{
		Owner: owner, Name: name, ID: s.nextID, DefaultBranch: "main",
		CloneURL: s.URL + "/git/" + owner + "/" + name + ".git",
		Dir:      filepath.Join(s.root, owner, name+".git"),
		s:        s, grants: map[string]int{}, statuses: map[string][]statusRec{}, created: s.now(),
	}
	s.repos[repoKey(owner, name)] = r
	s.mu.Unlock()

	if err := os.MkdirAll(filepath.Dir(r.Dir), 0o755); err != nil {
		s.t.Fatalf("fakegithub: AddRepo: %v", err)
	}
	if out, err := exec.Command("git", "init", "--quiet", "--bare", "--initial-branch=main", r.Dir).CombinedOutput(); err != nil {
		s.t.Fatalf("fakegithub: git init: %v: %s", err, out)
	}
	readme := "# " + name + "\n"
	if _, err := r.commit("main", map[string]*string{"README.md": &readme}, "Initial commit", owner); err != nil {
		s.t.Fatalf("fakegithub: AddRepo: %v", err)
	}
	return r
}

// Commit commits files on branch (creating the branch from main if it does
// not exist) and returns the new commit's SHA. A file whose content is ""
// is deleted.
func (r *Repo) Commit(branch string, files map[string]string, msg string) string {
	r.s.t.Helper()
	changes := make(map[string]*string, len(files))
	for p, c := range files {
		if c == "" {
			changes[p] = nil
			continue
		}
		changes[p] = &c
	}
	sha, err := r.commit(branch, changes, msg, r.Owner)
	if err != nil {
		r.s.t.Fatalf("fakegithub: Commit: %v", err)
	}
	return sha
}

// Head returns the SHA at the tip of branch, or "" if there is no such
// branch.
func (r *Repo) Head(branch string) string {
	sha, err := r.resolve("refs/heads/" + branch)
	if err != nil {
		return ""
	}
	return sha
}

// File returns the content of path at ref (branch, tag or SHA) and whether
// it exists.
func (r *Repo) File(ref, path string) (string, bool) {
	sha, err := r.resolve(ref)
	if err != nil {
		return "", false
	}
	e, err := r.lsEntry(sha, path)
	if err != nil || e.typ != "blob" {
		return "", false
	}
	b, err := r.catBlob(e.sha)
	if err != nil {
		return "", false
	}
	return string(b), true
}

var errNoRef = errors.New("no such ref")

// git runs a git command against the repository.
func (r *Repo) git(stdin []byte, args ...string) ([]byte, error) {
	cmd := exec.Command("git", args...)
	cmd.Env = r.s.gitEnv(r.Dir)
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

func (s *Server) gitEnv(gitDir string) []string {
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + s.home,
		"LC_ALL=C",
		"GIT_CONFIG_NOSYSTEM=1",
		"GIT_CONFIG_GLOBAL=/dev/null",
		"GIT_TERMINAL_PROMPT=0",
	}
	if gitDir != "" {
		env = append(env, "GIT_DIR="+gitDir)
	}
	return env
}

var shaRE = regexp.MustCompile(`^[0-9a-f]{40}$`)

// resolve returns the commit SHA that ref names.
func (r *Repo) resolve(ref string) (string, error) {
	if ref == "" || strings.ContainsAny(ref, "\x00\n\r") {
		return "", errNoRef
	}
	out, err := r.git(nil, "rev-parse", "--verify", "--quiet", "--end-of-options", ref+"^{commit}")
	if err != nil {
		return "", errNoRef
	}
	sha := strings.TrimSpace(string(out))
	if !shaRE.MatchString(sha) {
		return "", errNoRef
	}
	return sha, nil
}

type treeEntry struct {
	mode, typ, sha, path string
	size                 int64
}

// lsTree lists the entries of the tree at commit:dir ("" is the root).
func (r *Repo) lsTree(commit, dir string) ([]treeEntry, error) {
	spec := commit
	if dir != "" {
		spec = commit + ":" + dir
	}
	out, err := r.git(nil, "ls-tree", "-z", "--long", "--end-of-options", spec)
	if err != nil {
		return nil, err
	}
	return parseLsTree(out, dir), nil
}

// lsEntry returns the entry at path in commit.
func (r *Repo) lsEntry(commit, path string) (treeEntry, error) {
	out, err := r.git(nil, "ls-tree", "-z", "--long", "--full-tree", "--end-of-options", commit, "--", path)
	if err != nil {
		return treeEntry{}, err
	}
	for _, e := range parseLsTree(out, "") {
		if e.path == path {
			return e, nil
		}
	}
	return treeEntry{}, errNoRef
}

func parseLsTree(out []byte, dir string) []treeEntry {
	var entries []treeEntry
	for _, rec := range bytes.Split(out, []byte{0}) {
		meta, name, ok := bytes.Cut(rec, []byte{'\t'})
		if !ok {
			continue
		}
		f := strings.Fields(string(meta))
		if len(f) != 4 {
			continue
		}
		e := treeEntry{mode: f[0], typ: f[1], sha: f[2], path: string(name)}
		if dir != "" {
			e.path = dir + "/" + e.path
		}
		e.size, _ = strconv.ParseInt(f[3], 10, 64) // "-" for trees: size 0
		entries = append(entries, e)
	}
	return entries
}

func (r *Repo) catBlob(sha string) ([]byte, error) {
	return r.git(nil, "cat-file", "blob", sha)
}

func validPath(p string) bool {
	if p == "" || strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/") || strings.ContainsAny(p, "\x00\n\r\"") {
		return false
	}
	for _, seg := range strings.Split(p, "/") {
		if seg == "" || seg == "." || seg == ".." || seg == ".git" {
			return false
		}
	}
	return true
}

func validBranch(b string) bool {
	if b == "" || strings.HasPrefix(b, "-") || strings.HasPrefix(b, "/") || strings.HasSuffix(b, "/") ||
		strings.HasSuffix(b, ".lock") || strings.HasSuffix(b, ".") || strings.Contains(b, "..") ||
		strings.Contains(b, "//") || strings.Contains(b, "@{") || b == "@" {
		return false
	}
	for _, c := range b {
		if c < 0x20 || c == 0x7f || strings.ContainsRune(" ~^:?*[\\", c) {
			return false
		}
	}
	return true
}

// commit writes changes (path -> content, nil deletes) on branch as author
// and returns the new commit SHA. The caller must not hold r.gitMu.
func (r *Repo) commit(branch string, files map[string]*string, msg, author string) (string, error) {
	r.gitMu.Lock()
	defer r.gitMu.Unlock()
	return r.commitLocked(branch, "", files, msg, author)
}

// commitLocked commits on branch. The parent is the branch head, or, for a
// new branch, from (or the default branch when from is ""). r.gitMu must
// be held.
func (r *Repo) commitLocked(branch, from string, files map[string]*string, msg, author string) (string, error) {
	if !validBranch(branch) {
		return "", fmt.Errorf("invalid branch name %q", branch)
	}
	for p := range files {
		if !validPath(p) {
			return "", fmt.Errorf("invalid path %q", p)
		}
	}
	parent, err := r.resolve("refs/heads/" + branch)
	if err != nil {
		parent = ""
		if from == "" && branch != r.DefaultBranch {
			from = "refs/heads/" + r.DefaultBranch
		}
		if from != "" {
			if parent, err = r.resolve(from); err != nil {
				return "", fmt.Errorf("resolve %s: %w", from, err)
			}
		}
	}
	when := r.s.clock().Unix()
	var in bytes.Buffer
	fmt.Fprintf(&in, "commit refs/heads/%s\n", branch)
	fmt.Fprintf(&in, "author %s <%s@users.noreply.github.com> %d +0000\n", author, strings.ToLower(author), when)
	fmt.Fprintf(&in, "committer GitHub <noreply@github.com> %d +0000\n", when)
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
		c := files[p]
		if c == nil {
			fmt.Fprintf(&in, "D %s\n", p)
			continue
		}
		fmt.Fprintf(&in, "M 100644 inline %s\ndata %d\n%s\n", p, len(*c), *c)
	}
	in.WriteString("done\n")
	if _, err := r.git(in.Bytes(), "fast-import", "--quiet", "--done"); err != nil {
		return "", err
	}
	return r.resolve("refs/heads/" + branch)
}

// createRef points ref (refs/heads/x) at sha; it fails if ref exists.
func (r *Repo) createRef(ref, sha string) error {
	r.gitMu.Lock()
	defer r.gitMu.Unlock()
	_, err := r.git(nil, "update-ref", "--no-deref", ref, sha, strings.Repeat("0", 40))
	return err
}

// serveGit serves git smart HTTP for /git/{owner}/{name}[.git]/... behind
// basic auth (username x-access-token, password a user token).
func (s *Server) serveGit(w http.ResponseWriter, req *http.Request) {
	parts := strings.SplitN(strings.TrimPrefix(req.URL.Path, "/git/"), "/", 3)
	if len(parts) < 3 {
		http.Error(w, "Not Found", http.StatusNotFound)
		return
	}
	owner, name, rest := parts[0], strings.TrimSuffix(parts[1], ".git"), parts[2]

	username, token, ok := req.BasicAuth()
	if !ok || username != "x-access-token" || token == "" {
		w.Header().Set("WWW-Authenticate", `Basic realm="GitHub"`)
		http.Error(w, "Invalid username or password.", http.StatusUnauthorized)
		return
	}
	u := s.userByToken(token)
	if u == nil {
		w.Header().Set("WWW-Authenticate", `Basic realm="GitHub"`)
		http.Error(w, "Invalid username or password.", http.StatusUnauthorized)
		return
	}
	s.mu.Lock()
	r := s.repos[repoKey(owner, name)]
	perm := permNone
	if r != nil {
		perm = r.permOf(u)
	}
	s.mu.Unlock()
	if r == nil || perm < permRead {
		http.Error(w, "Repository not found.", http.StatusNotFound)
		return
	}
	if (req.URL.Query().Get("service") == "git-receive-pack" || strings.HasSuffix(rest, "git-receive-pack")) && perm < permPush {
		http.Error(w, fmt.Sprintf("Permission to %s/%s denied to %s.", r.Owner, r.Name, u.login), http.StatusForbidden)
		return
	}

	out := req.Clone(req.Context())
	out.Header.Del("Authorization")
	out.URL.Path = "/" + r.Owner + "/" + r.Name + ".git/" + rest
	out.URL.RawPath = ""
	h := &cgi.Handler{
		Path: s.backend,
		Root: "/",
		Dir:  s.root,
		Env: append(s.gitEnv(""),
			"GIT_PROJECT_ROOT="+s.root,
			"GIT_HTTP_EXPORT_ALL=1",
			"REMOTE_USER="+u.login,
			// Like GitHub: any commit can be fetched by SHA, partial clones work.
			"GIT_CONFIG_COUNT=2",
			"GIT_CONFIG_KEY_0=uploadpack.allowAnySHA1InWant", "GIT_CONFIG_VALUE_0=true",
			"GIT_CONFIG_KEY_1=uploadpack.allowFilter", "GIT_CONFIG_VALUE_1=true",
		),
	}
	h.ServeHTTP(w, out)
}
