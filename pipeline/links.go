package pipeline

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Account linking: a user signed in with one forge may connect their
// account on another forge from the same session. The two forge identities
// ("{forge}|{id}", e.g. a GitHub and a Bitbucket user) stay separate users,
// each with its own stored (encrypted) token, and are linked both ways: whichever one
// signs in sees the other's connection. A forge account is linked to at
// most one user of each other forge. A pipeline created on the linked
// forge is owned by the linked identity, so its builds, clones and
// statuses use that connection's token as they use any owner's.

// LinkStore records which users of different forges are one person.
// The etcd and in-memory stores implement it.
type LinkStore interface {
	// LinkUsers links a and b (ids on two different forges) both ways in
	// one transaction. It is ErrConflict when a is already linked to
	// another user of b's forge or b to another user of a's forge;
	// linking the same pair again is no error.
	LinkUsers(ctx context.Context, a, b string) error
	// LinkedUsers returns the users linked to id, by forge name (empty
	// when none).
	LinkedUsers(ctx context.Context, id string) (map[string]string, error)
	// UnlinkUser disconnects other, the account linked to id on forge,
	// in one transaction: the link is removed both ways, and other's
	// stored user (with its forge tokens) is deleted when other has no
	// link left; an account also linked to a third user keeps its user
	// (and tokens) for that one. deleted reports which. It is
	// ErrNotFound when id has no account linked on forge, ErrConflict
	// when the link is to another account than other (it changed since
	// the caller read it).
	UnlinkUser(ctx context.Context, id, forge, other string) (deleted bool, err error)
}

// UserLocker serializes work on one user's forge connection across every
// server sharing the store (a token refresh: forges that rotate refresh
// tokens refuse the second of two concurrent refreshes).
type UserLocker interface {
	// LockUser blocks until the caller holds id's lock or ctx ends, and
	// returns the function that releases it.
	LockUser(ctx context.Context, id string) (unlock func(), err error)
}

// ForgeName is the forge prefix of a user id ("{forge}|{id}" → "{forge}"),
// "" when it has none.
func ForgeName(userID string) string {
	name, _, ok := strings.Cut(userID, "|")
	if !ok {
		return ""
	}
	return name
}

// Connected is one of a user's forge connections: the forge identity and
// its stored user (with token).
type Connected struct {
	Forge string
	User  User
}

// Connections returns the stored users behind id's connections: id's own
// (when stored) first, then each linked one by forge name. store need not
// be a LinkStore (then only id's own).
func Connections(ctx context.Context, store interface {
	GetUser(ctx context.Context, id string) (User, error)
}, id string) ([]Connected, error) {
	var out []Connected
	u, err := store.GetUser(ctx, id)
	switch {
	case err == nil:
		out = append(out, Connected{Forge: ForgeName(id), User: u})
	case !errors.Is(err, ErrNotFound):
		return nil, err
	}
	ls, ok := store.(LinkStore)
	if !ok {
		return out, nil
	}
	links, err := ls.LinkedUsers(ctx, id)
	if err != nil {
		return nil, err
	}
	for _, forge := range sortedKeys(links) {
		lu, err := store.GetUser(ctx, links[forge])
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, Connected{Forge: forge, User: lu})
	}
	return out, nil
}

func sortedKeys(m map[string]string) []string { return slices.Sorted(maps.Keys(m)) }

// on returns c as it acts on forge: c itself when forge is c's own,
// otherwise the user linked to c on that forge with that connection's
// token (refreshed when due). ok is false when c has no connection to
// forge; an expired connection is the 401 saying to reconnect.
func (s *Service) on(ctx context.Context, c Caller, forge string) (Caller, bool, error) {
	if forge == "" || forge == ForgeOf(s.forges, c.UserID) {
		return c, true, nil
	}
	ls, ok := s.cfg.Store.(LinkStore)
	if !ok || c.UserID == "" {
		return c, false, nil
	}
	links, err := ls.LinkedUsers(ctx, c.UserID)
	if err != nil {
		return c, false, err
	}
	id, ok := links[forge]
	if !ok {
		return c, false, nil
	}
	u, err := s.cfg.Store.GetUser(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return c, false, nil
	}
	if err != nil {
		return c, false, err
	}
	f, _ := s.forges.Get(forge)
	if f == nil {
		return c, false, nil
	}
	if !u.Token.Valid() && !u.Token.Expired {
		return c, false, nil
	}
	tok, err := FreshToken(ctx, f, s.cfg.Store, u)
	if err != nil {
		return c, true, err
	}
	return Caller{UserID: u.ID, Login: u.Login, Token: tok}, true, nil
}

// forPipeline returns c as it acts on the stored pipeline owner/repo: on
// that pipeline's forge when c is linked to it (see on). c is returned
// unchanged when no such pipeline is stored or c has no connection to its
// forge (authorization then hides the pipeline). The pipeline is the one
// c's grant carries when Authorize read it (no second read).
func (s *Service) forPipeline(ctx context.Context, c Caller, owner, repo string) (Caller, error) {
	if s.ValidateRepoName(owner, repo) != nil {
		return c, nil // refused by the authorization that follows
	}
	p, err := s.pipelineOf(ctx, c, owner, repo)
	if errors.Is(err, ErrNotFound) {
		return c, nil
	}
	if err != nil {
		return c, err
	}
	return s.onPipeline(ctx, c, p)
}

// onPipeline returns c as it acts on p's forge (see forPipeline). The
// linked caller keeps c's grant: Authorize checked it acting as that very
// account.
func (s *Service) onPipeline(ctx context.Context, c Caller, p Pipeline) (Caller, error) {
	v, ok, err := s.on(ctx, c, ForgeOf(s.forges, p.OwnerUserID))
	if err != nil || !ok {
		return c, err
	}
	v.granted = c.granted
	return v, nil
}

// RepositoryList is the caller's repositories on every connected forge.
type RepositoryList struct {
	Repositories []Repository
	// Reconnect names the linked forges whose connection expired: their
	// repositories are left out until the user reconnects.
	Reconnect []string
}

// AllRepositories lists the caller's repositories on their own forge and
// on every linked forge, each with Forge set. The caller's own forge
// failing fails the list; a linked connection that expired is left out
// and named in Reconnect.
func (s *Service) AllRepositories(ctx context.Context, c Caller) (RepositoryList, error) {
	own, err := s.Repositories(ctx, c)
	if err != nil {
		return RepositoryList{}, err
	}
	mine := ForgeOf(s.forges, c.UserID)
	out := RepositoryList{Repositories: make([]Repository, 0, len(own))}
	for _, r := range own {
		r.Forge = mine
		out.Repositories = append(out.Repositories, r)
	}
	ls, ok := s.cfg.Store.(LinkStore)
	if !ok || c.UserID == "" {
		return out, nil
	}
	links, err := ls.LinkedUsers(ctx, c.UserID)
	if err != nil {
		return RepositoryList{}, err
	}
	for _, forge := range sortedKeys(links) {
		v, ok, err := s.on(ctx, c, forge)
		if errors.Is(err, ErrUnauthorized) {
			out.Reconnect = append(out.Reconnect, forge)
			continue
		}
		if err != nil {
			return RepositoryList{}, err
		}
		if !ok {
			continue
		}
		rs, err := s.scm(v.UserID).Repositories(ctx, v.Token)
		if errors.Is(err, ErrUnauthorized) {
			out.Reconnect = append(out.Reconnect, forge)
			continue
		}
		if err != nil {
			return RepositoryList{}, err
		}
		for _, r := range rs {
			r.Forge = forge
			out.Repositories = append(out.Repositories, r)
		}
	}
	return out, nil
}

// Disconnect removes user userID's connection to forge: the account
// linked to them there is unlinked both ways, and its stored user (with
// its tokens) is deleted unless that account is still linked to another
// user (who keeps their connection to it). It is ErrNotFound for a forge
// this server does not have, or one the caller is not connected to;
// ErrConflict for the forge the caller signed in with (their identity:
// sign out instead), while the linked account still owns pipelines (named
// in the message: delete them first, their builds use its token) and when
// the connection changed meanwhile (to another account); ErrNotImplemented
// when the store keeps no links.
//
// It holds the account's user lock (UserLocker) from the pipeline check
// to the unlink: a refresh of the account's token running meanwhile
// finishes first and nothing stores its tokens again after, and a
// pipeline a create is storing as that account (CreatePipeline stores it
// under the same lock) is either seen by the check or finds the link gone.
func (s *Service) Disconnect(ctx context.Context, userID, forge string) error {
	if _, ok := s.forges.Get(forge); !ok || forge == "" {
		return Errorf(ErrNotFound, "%q is not a forge of this server (%s)", forge, strings.Join(s.forges.Names(), ", "))
	}
	if forge == ForgeOf(s.forges, userID) {
		return Errorf(ErrConflict, "you signed in with %s: that connection is your identity here and cannot be disconnected (sign out instead)", forge)
	}
	ls, ok := s.cfg.Store.(LinkStore)
	if !ok {
		return Errorf(ErrNotImplemented, "this server keeps no connected accounts")
	}
	links, err := ls.LinkedUsers(ctx, userID)
	if err != nil {
		return err
	}
	other, ok := links[forge]
	if !ok {
		return Errorf(ErrNotFound, "you have no %s connection", forge)
	}
	if l, ok := s.cfg.Store.(UserLocker); ok {
		unlock, err := l.LockUser(ctx, other)
		if err != nil {
			return fmt.Errorf("lock the %s connection of %s: %w", forge, userID, err)
		}
		defer unlock()
	}
	all, err := s.cfg.Store.ListPipelines(ctx)
	if err != nil {
		return err
	}
	var owned []string
	for _, p := range all {
		if p.OwnerUserID == other {
			owned = append(owned, p.Owner+"/"+p.Repo)
		}
	}
	if len(owned) > 0 {
		return Errorf(ErrConflict, "your %s account still owns the pipelines %s (their builds use its token): delete them first (DELETE /api/v1/pipelines/{owner}/{repo})", forge, strings.Join(owned, ", "))
	}
	deleted, err := ls.UnlinkUser(ctx, userID, forge, other)
	switch {
	case errors.Is(err, ErrNotFound):
		return Errorf(ErrNotFound, "you have no %s connection", forge)
	case errors.Is(err, ErrConflict):
		return Errorf(ErrConflict, "your %s connection changed while it was being removed; try again", forge)
	case err != nil:
		return err
	}
	s.log.Info("connection removed", "user", userID, "forge", forge, "account", other, "account_deleted", deleted)
	return nil
}
