package fakebitbucketdc

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

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
	sha, err := r.commit(branch, changes, msg, r.Project)
	if err != nil {
		r.s.t.Fatalf("fakebitbucketdc: Commit: %v", err)
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
	fmt.Fprintf(&in, "author %s <%s@example.com> %d +0000\n", author, strings.ToLower(author), when)
	fmt.Fprintf(&in, "committer Bitbucket <noreply@example.com> %d +0000\n", when)
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
