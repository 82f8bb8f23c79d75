package forgeutil

import (
	"crypto/sha256"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/kontinuous/kontinuous/pipeline"
)

// Permission cache defaults: a look-up is reused for PermissionTTL, and
// the cache holds at most PermissionCacheSize entries.
const (
	PermissionTTL       = 30 * time.Second
	PermissionCacheSize = 10000
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

// PermCache remembers permission look-ups (a token's permission on a
// repository, with the repository's id) for a TTL, bounded in size. It
// keeps a hash of the token, never the token. It is safe for concurrent
// use.
type PermCache struct {
	ttl time.Duration
	max int
	now func() time.Time

	mu sync.Mutex
	m  map[permKey]permEntry
}

// NewPermCache returns a cache whose entries last ttl (PermissionTTL when
// ≤ 0), holding at most max (PermissionCacheSize when ≤ 0), on the clock
// now (time.Now when nil).
func NewPermCache(ttl time.Duration, max int, now func() time.Time) *PermCache {
	if ttl <= 0 {
		ttl = PermissionTTL
	}
	if max <= 0 {
		max = PermissionCacheSize
	}
	if now == nil {
		now = time.Now
	}
	return &PermCache{ttl: ttl, max: max, now: now, m: map[permKey]permEntry{}}
}

func keyOf(tok pipeline.ForgeToken, owner, name string) permKey {
	return permKey{token: sha256.Sum256([]byte(tok.AccessToken)), repo: pipeline.Key(owner, name)}
}

// Get returns tok's cached permission on owner/name.
func (c *PermCache) Get(tok pipeline.ForgeToken, owner, name string) (pipeline.Permission, bool) {
	p, _, ok := c.Access(tok, owner, name)
	return p, ok
}

// Access returns a cached permission with the repository's id (0 when
// the look-up that cached it did not give one).
func (c *PermCache) Access(tok pipeline.ForgeToken, owner, name string) (pipeline.Permission, int64, bool) {
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

// Put caches tok's permission on owner/name.
func (c *PermCache) Put(tok pipeline.ForgeToken, owner, name string, p pipeline.Permission) {
	c.PutAccess(tok, owner, name, p, 0)
}

// PutAccess caches a permission with the repository's id. An empty owner
// or name is not cached.
func (c *PermCache) PutAccess(tok pipeline.ForgeToken, owner, name string, p pipeline.Permission, id int64) {
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
func (c *PermCache) evict(now time.Time) {
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
