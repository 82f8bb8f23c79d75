package fakegithub

import "os"

// DeleteRepo removes owner/name with its git data, webhooks and grants,
// as deleting a repository on GitHub does; AddRepo can then create a new
// repository of that name, with a new id.
func (s *Server) DeleteRepo(owner, name string) {
	s.t.Helper()
	s.mu.Lock()
	r := s.repos[repoKey(owner, name)]
	delete(s.repos, repoKey(owner, name))
	s.mu.Unlock()
	if r == nil {
		s.t.Fatalf("fakegithub: DeleteRepo: no repository %s/%s", owner, name)
		return
	}
	if err := os.RemoveAll(r.Dir); err != nil {
		s.t.Fatalf("fakegithub: DeleteRepo: %v", err)
	}
}
