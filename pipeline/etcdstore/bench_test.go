package etcdstore_test

import (
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"testing"

	"github.com/kontinuous/kontinuous/pipeline/etcdstore"
)

// benchRun numbers benchmark invocations: the testing package calls a
// benchmark several times, each needs a fresh key space.
var benchRun atomic.Int64

func benchStore(b *testing.B) *etcdstore.Store {
	b.Helper()
	return newStoreWith(b, sharedClient(b), newOpts(fmt.Sprintf("%s%d/", prefixOf(b), benchRun.Add(1))))
}

// BenchmarkCreateBuild measures build creation under contention on one
// pipeline's counter (every goroutine competes for the next number).
func BenchmarkCreateBuild(b *testing.B) {
	s := benchStore(b)
	mustCreatePipeline(b, s, "acme", "bench")
	build := fullBuild()
	build.DeliveryID = ""
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.CreateBuild(b.Context(), "acme", "bench", build); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkGetBuild measures reading builds of one pipeline in parallel.
func BenchmarkGetBuild(b *testing.B) {
	s := benchStore(b)
	mustCreatePipeline(b, s, "acme", "bench")
	build := fullBuild()
	build.DeliveryID = ""
	const n = 100
	for range n {
		mustCreateBuild(b, s, "acme", "bench", build)
	}
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.GetBuild(b.Context(), "acme", "bench", 1+rand.IntN(n)); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
