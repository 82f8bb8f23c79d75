package pipeline

// Forge selection: a user's forge is the one their id names
// ("<forge>|<id>"); a pipeline lives on its creator's forge. A user id
// without a known prefix belongs to the default forge.

// forges returns the registry the service uses.
func (c ServiceConfig) forges() *Forges {
	if c.Forges != nil {
		return c.Forges
	}
	return NewForges(c.SCM)
}

// scm is the forge of userID.
func (s *Service) scm(userID string) Forge {
	if s.forges != nil {
		if f, ok := s.forges.ForUser(userID); ok {
			return f
		}
	}
	return s.cfg.SCM
}

// ForgeOf names the forge of userID in reg ("" for the default forge's
// users without a prefix when reg is nil).
func ForgeOf(reg *Forges, userID string) string {
	if reg != nil {
		if f, ok := reg.ForUser(userID); ok {
			return f.Name()
		}
		if d := reg.Default(); d != nil {
			return d.Name()
		}
	}
	return ""
}

// sameForge reports whether p lives on c's forge.
func (s *Service) sameForge(p Pipeline, c Caller) bool {
	return ForgeOf(s.forges, p.OwnerUserID) == ForgeOf(s.forges, c.UserID)
}

// scm is the forge of pipeline p: its creator's.
func (e *Engine) scm(p Pipeline) Forge {
	if e.cfg.Forges != nil {
		if f, ok := e.cfg.Forges.ForUser(p.OwnerUserID); ok {
			return f
		}
	}
	return e.cfg.SCM
}
