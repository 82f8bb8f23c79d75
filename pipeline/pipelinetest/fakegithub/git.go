package fakegithub

import (
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/kontinuous/kontinuous/pipeline/pipelinetest/gitrepo"
)

// Repo is a repository of the fake: a real bare git repository on disk
// (its Dir, DefaultBranch "main", Head and File come from gitrepo.Repo).
type Repo struct {
	*gitrepo.Repo
	// Owner and Name as added.
	Owner string
	Name  string
	// ID is the numeric repository id (REST and webhook payloads).
	ID int64
	// CloneURL is the HTTPS clone URL, s.URL + "/git/owner/name.git".
	CloneURL string

	s *Server

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
		Repo:  s.git.Repo(owner + "/" + name + ".git"),
		Owner: owner, Name: name, ID: s.nextID,
		CloneURL: s.URL + "/git/" + owner + "/" + name + ".git",
		s:        s, grants: map[string]int{}, statuses: map[string][]statusRec{}, created: s.now(),
	}
	s.repos[repoKey(owner, name)] = r
	s.mu.Unlock()

	if err := r.Init(name, author(owner)); err != nil {
		s.t.Fatalf("fakegithub: AddRepo: %v", err)
	}
	return r
}

// author is GitHub's identity of a user's commits.
func author(login string) string {
	return fmt.Sprintf("%s <%s@users.noreply.github.com>", login, strings.ToLower(login))
}

// Commit commits files on branch (creating the branch from main if it does
// not exist) and returns the new commit's SHA. A file whose content is ""
// is deleted.
func (r *Repo) Commit(branch string, files map[string]string, msg string) string {
	r.s.t.Helper()
	sha, err := r.CommitChanges(branch, gitrepo.Changes(files), msg, author(r.Owner))
	if err != nil {
		r.s.t.Fatalf("fakegithub: Commit: %v", err)
	}
	return sha
}

// checkGit lets a git request through with basic auth username
// x-access-token and a user token as password: read access to clone,
// push to push.
func (s *Server) checkGit(req *http.Request, owner, name string, push bool) (*gitrepo.Repo, string, *gitrepo.Refusal) {
	username, token, ok := req.BasicAuth()
	var u *user
	if ok && username == "x-access-token" && token != "" {
		u = s.userByToken(token)
	}
	if u == nil {
		return nil, "", &gitrepo.Refusal{Status: http.StatusUnauthorized, Realm: "GitHub", Message: "Invalid username or password."}
	}
	s.mu.Lock()
	r := s.repos[repoKey(owner, name)]
	perm := permNone
	if r != nil {
		perm = r.permOf(u)
	}
	s.mu.Unlock()
	if r == nil || perm < permRead {
		return nil, "", &gitrepo.Refusal{Status: http.StatusNotFound, Message: "Repository not found."}
	}
	if push && perm < permPush {
		return nil, "", &gitrepo.Refusal{Status: http.StatusForbidden, Message: fmt.Sprintf("Permission to %s/%s denied to %s.", r.Owner, r.Name, u.login)}
	}
	return r.Repo, u.login, nil
}
