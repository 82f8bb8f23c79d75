package etcdstore

// CacheHits is how many reads s answered from its watch-fed cache.
func CacheHits(s *Store) int64 { return s.rc.hits.Load() }

// Subscribers is how many followers the watch fan-out feeds.
func Subscribers(s *Store) int { return s.hub.subscribers() }
