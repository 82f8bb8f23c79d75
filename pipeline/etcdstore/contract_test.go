package etcdstore_test

import (
	"testing"

	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/etcdstore"
	"github.com/kontinuous/kontinuous/pipeline/storetest"
)

// TestStoreContract runs the store contract suite (the one the in-memory
// store passes) on the plain etcd store and on the store behind its read
// cache (as a server runs it, and with consistent reads).
func TestStoreContract(t *testing.T) {
	t.Run("plain", func(t *testing.T) {
		storetest.Run(t, func(t *testing.T) pipeline.Store { return newPlainWith(t, sharedClient(t), newOpts(prefixOf(t))) })
	})
	t.Run("cached", func(t *testing.T) {
		storetest.Run(t, func(t *testing.T) pipeline.Store { return startedStore(t, newOpts(prefixOf(t))) })
	})
	t.Run("cached-consistent", func(t *testing.T) {
		storetest.Run(t, func(t *testing.T) pipeline.Store {
			return newCachedWith(t, sharedClient(t), newOpts(prefixOf(t)), etcdstore.CacheOptions{LinearizableReads: true})
		})
	})
}
