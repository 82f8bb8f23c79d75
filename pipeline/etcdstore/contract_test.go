package etcdstore_test

import (
	"testing"

	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/storetest"
)

// TestStoreContract runs the store contract suite (the one the in-memory
// store passes) on the etcd store with its read cache.
func TestStoreContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) pipeline.Store { return startedStore(t, newOpts(prefixOf(t))) })
}
