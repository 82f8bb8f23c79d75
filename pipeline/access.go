package pipeline

import "context"

// Access is what the caller may do with a pipeline, as GET
// /api/v1/pipelines/{owner}/{repo} shows it (field "permissions"), so a
// UI offers only the actions that will succeed: read → see everything,
// push → run, cancel, approve, restart; admin → settings, secrets, delete.
type Access struct {
	Read  bool `json:"read"`
	Push  bool `json:"push"`
	Admin bool `json:"admin"`
}

// AccessOf returns the caller's access to a pipeline's repository (the
// forge permission, cached briefly like every permission look-up). A caller
// who cannot read it gets ErrNotFound, as from GetPipeline.
func (s *Service) AccessOf(ctx context.Context, c Caller, owner, repo string) (Access, error) {
	c, err := s.forPipeline(ctx, c, owner, repo)
	if err != nil {
		return Access{}, err
	}
	if err := s.authorize(ctx, c, owner, repo, PermRead); err != nil {
		if _, oerr := s.orphanFor(ctx, c, owner, repo); oerr == nil {
			// Shown as orphaned: nothing of it may be read or done
			// (but deleting it, see DeletePipeline).
			return Access{}, nil
		}
		return Access{}, err
	}
	p, err := s.scm(c.UserID).Permission(ctx, c.Token, owner, repo)
	if err != nil {
		return Access{}, err
	}
	return Access{Read: p >= PermRead, Push: p >= PermPush, Admin: p >= PermAdmin}, nil
}
