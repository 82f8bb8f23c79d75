package memstore

import (
	"context"
	"fmt"
	"maps"
	"sync"

	"github.com/kontinuous/kontinuous/pipeline"
)

var (
	_ pipeline.LinkStore  = (*Store)(nil)
	_ pipeline.UserLocker = (*Store)(nil)
)

// links and locks live beside Store's maps (guarded by their own mutex:
// they are touched by account linking and token refreshes only).
type extras struct {
	mu    sync.Mutex
	links map[string]map[string]string // user id → forge → linked user id
	locks map[string]chan struct{}     // user id → a held lock's token
}

func (s *Store) extras() *extras {
	e := &s.ext
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.links == nil {
		e.links, e.locks = map[string]map[string]string{}, map[string]chan struct{}{}
	}
	return e
}

// LinkUsers links a and b both ways (see pipeline.LinkStore).
func (s *Store) LinkUsers(_ context.Context, a, b string) error {
	fa, fb := pipeline.ForgeName(a), pipeline.ForgeName(b)
	if fa == "" || fb == "" || fa == fb {
		return fmt.Errorf("memstore: link users: %w", pipeline.Invalid("user_id", "a link joins users of two different forges"))
	}
	e := s.extras()
	e.mu.Lock()
	defer e.mu.Unlock()
	if cur, ok := e.links[a][fb]; ok && cur != b {
		return pipeline.Errorf(pipeline.ErrConflict, "%s is already linked to another %s account", a, fb)
	}
	if cur, ok := e.links[b][fa]; ok && cur != a {
		return pipeline.Errorf(pipeline.ErrConflict, "this %s account is already linked to another Kontinuous user", fb)
	}
	link := func(id, forge, other string) {
		if e.links[id] == nil {
			e.links[id] = map[string]string{}
		}
		e.links[id][forge] = other
	}
	link(a, fb, b)
	link(b, fa, a)
	return nil
}

// LinkedUsers returns the users linked to id, by forge.
func (s *Store) LinkedUsers(_ context.Context, id string) (map[string]string, error) {
	e := s.extras()
	e.mu.Lock()
	defer e.mu.Unlock()
	return maps.Clone(e.links[id]), nil
}

// UnlinkUser removes id's link to other, its account on forge, both
// ways, and deletes other's user when other has no link left (see
// pipeline.LinkStore).
func (s *Store) UnlinkUser(_ context.Context, id, forge, other string) (bool, error) {
	e := s.extras()
	e.mu.Lock()
	defer e.mu.Unlock()
	cur, ok := e.links[id][forge]
	if !ok {
		return false, notFound("link of %s to %s", id, forge)
	}
	if cur != other {
		return false, fmt.Errorf("memstore: unlink %s from %s: %w", id, forge,
			pipeline.Errorf(pipeline.ErrConflict, "the %s account linked to %s is no longer %s", forge, id, other))
	}
	delete(e.links[id], forge)
	if back := pipeline.ForgeName(id); e.links[other][back] == id {
		delete(e.links[other], back)
	}
	if len(e.links[other]) > 0 {
		return false, nil // still linked to another user, who keeps it
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.users, other)
	s.wrote()
	return true, nil
}

// LockUser takes id's lock in this process (the store serves one).
func (s *Store) LockUser(ctx context.Context, id string) (func(), error) {
	e := s.extras()
	for {
		e.mu.Lock()
		held, ok := e.locks[id]
		if !ok {
			mine := make(chan struct{})
			e.locks[id] = mine
			e.mu.Unlock()
			return func() {
				e.mu.Lock()
				delete(e.locks, id)
				e.mu.Unlock()
				close(mine)
			}, nil
		}
		e.mu.Unlock()
		select {
		case <-held:
		case <-ctx.Done():
			return nil, fmt.Errorf("memstore: lock user %s: %w", id, ctx.Err())
		}
	}
}
