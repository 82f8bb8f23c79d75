package fakebitbucket

import (
	"net/http"
	"regexp"

	"github.com/kontinuous/kontinuous/pipeline/pipelinetest/gitrepo"
)

// Repo is a repository of the fake: a real bare git repository on disk
// (its Dir, DefaultBranch "main", Head and File come from gitrepo.Repo).
type Repo struct {
	*gitrepo.Repo
	// Workspace and Slug as added; UUID in braces.
	Workspace string
	Slug      string
	UUID      string
	// CloneURL is the https clone link without the user part.
	CloneURL string

	s *Server

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
		Repo:      s.git.Repo(ws + "/" + slug + ".git"),
		Workspace: ws, Slug: slug, UUID: "{" + uuid() + "}",
		CloneURL: s.URL + "/git/" + ws + "/" + slug + ".git",
		s:        s, perms: map[string]string{}, statuses: map[string][]Status{},
	}
	s.mu.Lock()
	if s.repos[ws+"/"+slug] != nil {
		s.mu.Unlock()
		s.t.Fatalf("fakebitbucket: AddRepo: %s/%s exists", ws, slug)
	}
	s.repos[ws+"/"+slug] = r
	s.mu.Unlock()
	if err := r.Init(slug, committer); err != nil {
		s.t.Fatalf("fakebitbucket: AddRepo: %v", err)
	}
	return r
}

// committer is the author and committer of every commit the stand-in
// writes.
const committer = "Bitbucket <noreply@bitbucket.org>"

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
	sha, err := r.CommitChanges(branch, gitrepo.Changes(files), msg, committer)
	if err != nil {
		r.s.t.Fatalf("fakebitbucket: Commit: %v", err)
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

// checkGit lets a git request through with basic auth user x-token-auth,
// password a live access token of a user with read access (write to
// push).
func (s *Server) checkGit(req *http.Request, ws, slug string, push bool) (*gitrepo.Repo, string, *gitrepo.Refusal) {
	user, tok, ok := req.BasicAuth()
	var u *User
	if ok && user == "x-token-auth" {
		u = s.userByToken(tok)
	}
	if u == nil {
		return nil, "", &gitrepo.Refusal{Status: http.StatusUnauthorized, Realm: "Bitbucket.org HTTP", Message: "Invalid credentials"}
	}
	s.mu.Lock()
	r := s.repos[ws+"/"+slug]
	perm := ""
	if r != nil {
		perm = r.perms[u.Username]
	}
	s.mu.Unlock()
	if perm == "" {
		return nil, "", &gitrepo.Refusal{Status: http.StatusNotFound, Message: "Repository not found"}
	}
	if push && perm == "read" {
		return nil, "", &gitrepo.Refusal{Status: http.StatusForbidden, Message: "Forbidden"}
	}
	return r.Repo, u.Username, nil
}
