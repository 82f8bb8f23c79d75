package github

import (
	"crypto/sha256"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/kontinuous/kontinuous/pipeline"
)

// permKey identifies a cached permission: a hash of the token (never the
// token itself) and the case-folded owner/repo.
type permKey struct {
	token [sha256.Size]byte
	repo  string
}

type permEntry struct {
	perm    pipeline.Permission
	id      int64 // the repository's id; 0 when not known
	expires time.Time
}

// permCache remembers permission look-ups for a TTL, bounded in size.
type permCache struct {
	ttl time.Duration
	max int
	now func() time.Time

	mu sync.Mutex
	m  map[permKey]permEntry
}

func newPermCache(ttl time.Duration, max int, now func() time.Time) *permCache {
	return &permCache{ttl: ttl, max: max, now: now, m: map[permKey]permEntry{}}
}

func keyOf(tok pipeline.ForgeToken, owner, name string) permKey {
	return permKey{token: sha256.Sum256([]byte(tok.AccessToken)), repo: pipeline.Key(owner, name)}
}

func (c *permCache) get(tok pipeline.ForgeToken, owner, name string) (pipeline.Permission, bool) {
	p, _, ok := c.access(tok, owner, name)
	return p, ok
}

// access returns a cached permission with the repository's id (0 when
// the look-up that cached it did not give one).
func (c *permCache) access(tok pipeline.ForgeToken, owner, name string) (pipeline.Permission, int64, bool) {
	k := keyOf(tok, owner, name)
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[k]
	if !ok {
		return pipeline.PermNone, 0, false
	}
	if !c.now().Before(e.expires) {
		delete(c.m, k)
		return pipeline.PermNone, 0, false
	}
	return e.perm, e.id, true
}

func (c *permCache) put(tok pipeline.ForgeToken, owner, name string, p pipeline.Permission) {
	c.putAccess(tok, owner, name, p, 0)
}

// putAccess caches a permission with the repository's id.
func (c *permCache) putAccess(tok pipeline.ForgeToken, owner, name string, p pipeline.Permission, id int64) {
	if strings.TrimSpace(owner) == "" || strings.TrimSpace(name) == "" {
		return
	}
	k := keyOf(tok, owner, name)
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, exists := c.m[k]; !exists && len(c.m) >= c.max {
		c.evict(now)
	}
	c.m[k] = permEntry{perm: p, id: id, expires: now.Add(c.ttl)}
}

// evict drops expired entries, then, if the cache is still full, the
// entries closest to expiry (the oldest) until a tenth of it is free. c.mu
// must be held.
func (c *permCache) evict(now time.Time) {
	for k, e := range c.m {
		if !now.Before(e.expires) {
			delete(c.m, k)
		}
	}
	if len(c.m) < c.max {
		return
	}
	keep := c.max - max(1, c.max/10)
	keys := make([]permKey, 0, len(c.m))
	for k := range c.m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b permKey) int { return c.m[a].expires.Compare(c.m[b].expires) })
	for _, k := range keys[:len(keys)-keep] {
		delete(c.m, k)
	}
}
