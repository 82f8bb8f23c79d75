package etcdstore

// CacheHits is how many reads c answered from its watch-fed cache.
func CacheHits(c *Cached) int64 { return c.rc.hits.Load() }

// Subscribers is how many followers c's watch fan-out feeds.
func Subscribers(c *Cached) int { return c.hub.subscribers() }

// InCache reports whether owner/repo is held in c's read cache.
func InCache(c *Cached, owner, repo string) bool {
	pk, err := pipelineKey(owner, repo)
	if err != nil {
		return false
	}
	c.rc.mu.RLock()
	defer c.rc.mu.RUnlock()
	return c.rc.pipes[pk] != nil
}
