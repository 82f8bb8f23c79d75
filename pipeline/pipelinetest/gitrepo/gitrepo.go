// Package gitrepo is the git half of the forge stand-ins: real bare
// repositories on disk, commits written with git fast-import, and git smart
// HTTP served by git's own git-http-backend behind a credential check each
// stand-in supplies (GitHub's x-access-token, Bitbucket Cloud's
// x-token-auth, Data Center's HTTP access tokens).
package gitrepo

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Config is what differs between the stand-ins' repositories.
type Config struct {
	// Committer is the committer of every commit, "Name <email>".
	Committer string
	// Clock dates commits; nil means time.Now.
	Clock func() time.Time
	// ServeConfig is git configuration for git-http-backend, as
	// "key=value" (e.g. "uploadpack.allowFilter=true").
	ServeConfig []string
}

// Root is a directory of bare repositories and the git environment they
// are read, written and served with.
type Root struct {
	dir     string // GIT_PROJECT_ROOT
	home    string // HOME for git processes
	backend string // path of git-http-backend
	cfg     Config
}

// New makes a Root in a fresh temporary directory of t. It needs the git
// command and git-http-backend (shipped with git); without them t fails.
func New(t testing.TB, cfg Config) *Root {
	t.Helper()
	gitBin, err := exec.LookPath("git")
	if err != nil {
		t.Fatalf("gitrepo: git is required: %v", err)
	}
	out, err := exec.Command(gitBin, "--exec-path").Output()
	if err != nil {
		t.Fatalf("gitrepo: git --exec-path: %v", err)
	}
	backend := filepath.Join(strings.TrimSpace(string(out)), "git-http-backend")
	if _, err := os.Stat(backend); err != nil {
		t.Fatalf("gitrepo: git-http-backend not found: %v", err)
	}
	dir := t.TempDir()
	rt := &Root{dir: filepath.Join(dir, "repos"), home: filepath.Join(dir, "home"), backend: backend, cfg: cfg}
	for _, d := range []string{rt.dir, rt.home} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatalf("gitrepo: %v", err)
		}
	}
	return rt
}

func (rt *Root) now() time.Time {
	if rt.cfg.Clock != nil {
		return rt.cfg.Clock()
	}
	return time.Now()
}

// env is the environment of every git process: no system or user
// configuration, no prompts, C locale.
func (rt *Root) env(gitDir string) []string {
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + rt.home,
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

// Repo is one bare repository below a Root.
type Repo struct {
	// Dir is the bare repository's directory.
	Dir string
	// DefaultBranch is "main".
	DefaultBranch string

	rel  string // Dir relative to the root, slash-separated: owner/name.git
	root *Root
	mu   sync.Mutex // serialises writes to the repository
}

// Repo returns the repository rel ("owner/name.git") below the root; Init
// creates it on disk.
func (rt *Root) Repo(rel string) *Repo {
	return &Repo{Dir: filepath.Join(rt.dir, filepath.FromSlash(rel)), DefaultBranch: "main", rel: rel, root: rt}
}

// Init creates the bare repository with one commit by author ("Name
// <email>") on main: README.md holding "# title".
func (r *Repo) Init(title, author string) error {
	if err := os.MkdirAll(filepath.Dir(r.Dir), 0o755); err != nil {
		return err
	}
	if out, err := exec.Command("git", "init", "--quiet", "--bare", "--initial-branch=main", r.Dir).CombinedOutput(); err != nil {
		return fmt.Errorf("git init: %v: %s", err, out)
	}
	readme := "# " + title + "\n"
	_, err := r.CommitChanges("main", map[string]*string{"README.md": &readme}, "Initial commit", author)
	return err
}

// Lock serialises writes to the repository: hold it across a
// read-check-write, writing with CommitChangesLocked.
func (r *Repo) Lock() { r.mu.Lock() }

// Unlock releases Lock.
func (r *Repo) Unlock() { r.mu.Unlock() }

// ErrNoRef is the error of a ref, path or object that does not exist.
var ErrNoRef = errors.New("no such ref")

// Git runs a git command against the repository and returns its output.
func (r *Repo) Git(stdin []byte, args ...string) ([]byte, error) {
	cmd := exec.Command("git", args...)
	cmd.Env = r.root.env(r.Dir)
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

var shaRE = regexp.MustCompile(`^[0-9a-f]{40}$`)

// IsSHA tells whether s is a full lower-case hex commit id.
func IsSHA(s string) bool { return shaRE.MatchString(s) }

// Resolve returns the commit SHA that ref (branch, tag, full ref or SHA)
// names, or ErrNoRef.
func (r *Repo) Resolve(ref string) (string, error) {
	if ref == "" || strings.ContainsAny(ref, "\x00\n\r") {
		return "", ErrNoRef
	}
	out, err := r.Git(nil, "rev-parse", "--verify", "--quiet", "--end-of-options", ref+"^{commit}")
	if err != nil {
		return "", ErrNoRef
	}
	sha := strings.TrimSpace(string(out))
	if !IsSHA(sha) {
		return "", ErrNoRef
	}
	return sha, nil
}

// Head returns the SHA at the tip of branch, or "" if there is no such
// branch.
func (r *Repo) Head(branch string) string {
	sha, err := r.Resolve("refs/heads/" + branch)
	if err != nil {
		return ""
	}
	return sha
}

// File returns the content of path at ref (branch, tag or SHA) and whether
// it exists.
func (r *Repo) File(ref, path string) (string, bool) {
	sha, err := r.Resolve(ref)
	if err != nil {
		return "", false
	}
	e, err := r.LsEntry(sha, path)
	if err != nil || e.Type != "blob" {
		return "", false
	}
	b, err := r.CatBlob(e.SHA)
	if err != nil {
		return "", false
	}
	return string(b), true
}

// TreeEntry is one line of git ls-tree --long.
type TreeEntry struct {
	Mode, Type, SHA, Path string
	// Size is the blob's size (0 for trees).
	Size int64
}

// LsTree lists the entries of the tree at commit:dir ("" is the root).
func (r *Repo) LsTree(commit, dir string) ([]TreeEntry, error) {
	spec := commit
	if dir != "" {
		spec = commit + ":" + dir
	}
	out, err := r.Git(nil, "ls-tree", "-z", "--long", "--end-of-options", spec)
	if err != nil {
		return nil, err
	}
	return parseLsTree(out, dir), nil
}

// LsEntry returns the entry at path in commit, or ErrNoRef.
func (r *Repo) LsEntry(commit, path string) (TreeEntry, error) {
	out, err := r.Git(nil, "ls-tree", "-z", "--long", "--full-tree", "--end-of-options", commit, "--", path)
	if err != nil {
		return TreeEntry{}, err
	}
	for _, e := range parseLsTree(out, "") {
		if e.Path == path {
			return e, nil
		}
	}
	return TreeEntry{}, ErrNoRef
}

func parseLsTree(out []byte, dir string) []TreeEntry {
	var entries []TreeEntry
	for _, rec := range bytes.Split(out, []byte{0}) {
		meta, name, ok := bytes.Cut(rec, []byte{'\t'})
		if !ok {
			continue
		}
		f := strings.Fields(string(meta))
		if len(f) != 4 {
			continue
		}
		e := TreeEntry{Mode: f[0], Type: f[1], SHA: f[2], Path: string(name)}
		if dir != "" {
			e.Path = dir + "/" + e.Path
		}
		e.Size, _ = strconv.ParseInt(f[3], 10, 64) // "-" for trees: size 0
		entries = append(entries, e)
	}
	return entries
}

// CatBlob returns the content of the blob sha.
func (r *Repo) CatBlob(sha string) ([]byte, error) {
	return r.Git(nil, "cat-file", "blob", sha)
}

// ValidPath tells whether p is a file path a commit may write: relative,
// no empty, "." , ".." or ".git" segment, no control characters or quotes.
func ValidPath(p string) bool {
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

// ValidBranch tells whether b is a branch name git accepts
// (git check-ref-format's rules).
func ValidBranch(b string) bool {
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

// Changes turns path -> content into the changes CommitChanges takes:
// content "" deletes the file.
func Changes(files map[string]string) map[string]*string {
	changes := make(map[string]*string, len(files))
	for p, c := range files {
		if c == "" {
			changes[p] = nil
			continue
		}
		changes[p] = &c
	}
	return changes
}

// CommitChanges writes changes (path -> content, nil deletes) on branch
// (created from the default branch when missing) as author ("Name
// <email>") and returns the new commit's SHA. The caller must not hold
// Lock.
func (r *Repo) CommitChanges(branch string, files map[string]*string, msg, author string) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.CommitChangesLocked(branch, "", files, msg, author)
}

// CommitChangesLocked commits on branch. The parent is the branch head,
// or, for a new branch, from (or the default branch when from is ""). The
// caller holds Lock.
func (r *Repo) CommitChangesLocked(branch, from string, files map[string]*string, msg, author string) (string, error) {
	if !ValidBranch(branch) {
		return "", fmt.Errorf("invalid branch name %q", branch)
	}
	for p := range files {
		if !ValidPath(p) {
			return "", fmt.Errorf("invalid path %q", p)
		}
	}
	parent, err := r.parent(branch, from)
	if err != nil {
		return "", err
	}
	when := r.root.now().Unix()
	var in bytes.Buffer
	fmt.Fprintf(&in, "commit refs/heads/%s\n", branch)
	fmt.Fprintf(&in, "author %s %d +0000\n", author, when)
	fmt.Fprintf(&in, "committer %s %d +0000\n", r.root.cfg.Committer, when)
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
	if _, err := r.Git(in.Bytes(), "fast-import", "--quiet", "--done"); err != nil {
		return "", err
	}
	return r.Resolve("refs/heads/" + branch)
}

// parent is the parent of the next commit on branch: its head, or for a
// new branch from (the default branch when from is ""), or "" for the
// first commit of the repository.
func (r *Repo) parent(branch, from string) (string, error) {
	if head, err := r.Resolve("refs/heads/" + branch); err == nil {
		return head, nil
	}
	if from == "" && branch != r.DefaultBranch {
		from = "refs/heads/" + r.DefaultBranch
	}
	if from == "" {
		return "", nil
	}
	parent, err := r.Resolve(from)
	if err != nil {
		return "", fmt.Errorf("resolve %s: %w", from, err)
	}
	return parent, nil
}

// CreateRef points ref (refs/heads/x) at sha; it fails if ref exists.
func (r *Repo) CreateRef(ref, sha string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, err := r.Git(nil, "update-ref", "--no-deref", ref, sha, strings.Repeat("0", 40))
	return err
}
