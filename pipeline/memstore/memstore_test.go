package memstore_test

import (
	"testing"

	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/memstore"
	"github.com/kontinuous/kontinuous/pipeline/storetest"
)

func TestStoreContract(t *testing.T) {
	storetest.Run(t, func(*testing.T) pipeline.Store { return memstore.New() })
}
