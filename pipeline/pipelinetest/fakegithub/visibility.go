package fakegithub

// SetPublic makes a repository public (true) or private (false, the
// default of AddRepo): the API reports "private" and "visibility" so.
func (s *Server) SetPublic(owner, name string, public bool) {
	s.t.Helper()
	r := s.Repo(owner, name)
	s.mu.Lock()
	r.public = public
	s.mu.Unlock()
}

func visibility(public bool) string {
	if public {
		return "public"
	}
	return "private"
}
