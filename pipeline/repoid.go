package pipeline

import (
	"context"
	"errors"
)

// RepoAccessor is implemented by forges that report, with a user's
// permission on owner/name, the id of the repository that name leads to
// today, from one cached look-up (githubscm does). The service compares
// that id with the one recorded when the pipeline was created; for forges
// without it, it asks SCM.Repository for the id (one more call).
type RepoAccessor interface {
	RepoAccess(ctx context.Context, tok ForgeToken, owner, name string) (Permission, int64, error)
}

// repoAccess returns the caller's permission on owner/name and the id of
// the repository the name leads to today (0 when the caller cannot see it).
func (s *Service) repoAccess(ctx context.Context, c Caller, owner, name string) (Permission, int64, error) {
	tok, f := c.Token, s.scm(c.UserID)
	if ra, ok := f.(RepoAccessor); ok {
		return ra.RepoAccess(ctx, tok, owner, name)
	}
	p, err := f.Permission(ctx, tok, owner, name)
	if err != nil || p == PermNone {
		return p, 0, err
	}
	r, err := f.Repository(ctx, tok, owner, name)
	if err != nil {
		return PermNone, 0, err
	}
	return p, r.ID, nil
}

// sameRepository reports whether the repository owner/name leads to today
// (id) is the one p was created for. A pipeline recorded without an id
// (none should be) matches any.
func sameRepository(p Pipeline, id int64) bool {
	return p.RepoID == 0 || p.RepoID == id
}

// orphanView is what the creator of an orphaned pipeline sees of it: that
// it exists and is orphaned, nothing stored with it.
func orphanView(p Pipeline) Pipeline {
	return Pipeline{ID: p.ID, Owner: p.Owner, Repo: p.Repo, Events: []string{}, Login: p.Login,
		Notif: []Notif{}, Secrets: []string{}, Vars: map[string]string{}, Orphaned: true}
}

// orphanFor returns the stored pipeline owner/repo when it is orphaned —
// the name now leads, as the caller sees it, to another repository than
// the one it was created for — and the caller may see that: its creator,
// or an admin of the repository now holding the name (who must be able to
// free the name by deleting it). Neither sees anything stored with it.
// Anyone else, and everyone when it is not orphaned, gets ErrNotFound.
func (s *Service) orphanFor(ctx context.Context, c Caller, owner, repo string) (Pipeline, error) {
	notFound := Errorf(ErrNotFound, "pipeline %s/%s not found", owner, repo)
	p, err := s.cfg.Store.GetPipeline(ctx, owner, repo)
	if errors.Is(err, ErrNotFound) {
		return Pipeline{}, notFound
	}
	if err != nil {
		return Pipeline{}, err
	}
	if c, err = s.forPipeline(ctx, c, owner, repo); err != nil {
		return Pipeline{}, err
	}
	if !s.sameForge(p, c) {
		return Pipeline{}, notFound
	}
	perm, id, err := s.repoAccess(ctx, c, owner, repo)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return Pipeline{}, err
	}
	if !orphanedFor(p, c, perm, id) {
		return Pipeline{}, notFound
	}
	return p, nil
}

// orphanedFor reports whether p is orphaned as seen by caller c, who has
// perm on the repository (id) holding p's name today, and c may be told.
func orphanedFor(p Pipeline, c Caller, perm Permission, id int64) bool {
	if id == 0 || sameRepository(p, id) {
		return false
	}
	return (c.UserID != "" && p.OwnerUserID == c.UserID) || perm >= PermAdmin
}
