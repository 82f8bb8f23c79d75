package etcdstore

// CacheHits is how many reads s answered from its watch-fed cache.
func CacheHits(s *Store) int64 { return s.rc.hits.Load() }

// Subscribers is how many followers the watch fan-out feeds.
func Subscribers(s *Store) int { return s.hub.subscribers() }

// Cached reports whether owner/repo is held in s's read cache.
func Cached(s *Store, owner, repo string) bool {
	pk, err := pipelineKey(owner, repo)
	if err != nil {
		return false
	}
	s.rc.mu.RLock()
	defer s.rc.mu.RUnlock()
	return s.rc.pipes[pk] != nil
}
