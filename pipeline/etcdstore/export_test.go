package etcdstore

// CacheHits is how many reads s answered from its watch-fed cache.
func CacheHits(s *Store) int64 { return s.rc.hits.Load() }
