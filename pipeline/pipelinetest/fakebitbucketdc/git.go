package fakebitbucketdc

import (
	"net/http"
	"strings"

	"github.com/kontinuous/kontinuous/pipeline/pipelinetest/gitrepo"
)

// author is the identity of a commit the stand-in writes for name.
func author(name string) string {
	return name + " <" + strings.ToLower(name) + "@example.com>"
}

// Commit commits files on branch (creating the branch from main if it does
// not exist) and returns the new commit's SHA. A file whose content is ""
// is deleted.
func (r *Repo) Commit(branch string, files map[string]string, msg string) string {
	r.s.t.Helper()
	sha, err := r.CommitChanges(branch, gitrepo.Changes(files), msg, author(r.Project))
	if err != nil {
		r.s.t.Fatalf("fakebitbucketdc: Commit: %v", err)
	}
	return sha
}

// checkGit lets a git request through with basic auth user:token, token
// an HTTP access token of that user; OAuth access tokens are refused as
// Data Center refuses them. Cloning needs read access, pushing write.
func (s *Server) checkGit(req *http.Request, project, slug string, push bool) (*gitrepo.Repo, string, *gitrepo.Refusal) {
	u, tok, ok := req.BasicAuth()
	s.mu.Lock()
	owner := s.httpTokens[tok]
	r := s.repos[repoKey(project, slug)]
	perm := 0
	if r != nil && owner != "" {
		perm = r.permOf(owner)
	}
	s.mu.Unlock()
	if !ok || owner == "" || owner != u {
		return nil, "", &gitrepo.Refusal{Status: http.StatusUnauthorized, Realm: "Atlassian Bitbucket", Message: "Authentication failed"}
	}
	if r == nil || perm == 0 {
		return nil, "", &gitrepo.Refusal{Status: http.StatusNotFound, Message: "Repository not found"}
	}
	if push && perm < permRank[RepoWrite] {
		return nil, "", &gitrepo.Refusal{Status: http.StatusForbidden, Message: "forbidden"}
	}
	return r.Repo, owner, nil
}
