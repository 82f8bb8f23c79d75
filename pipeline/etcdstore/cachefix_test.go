package etcdstore_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/etcdstore"
)

// TestCacheMissesDoNotEvictHits: reads of pipelines that do not exist
// (anonymous webhook posts) must not push real pipelines out of the cache.
func TestCacheMissesDoNotEvictHits(t *testing.T) {
	s := startedStore(t, newOpts(prefixOf(t)))
	ctx := t.Context()
	mustCreatePipeline(t, s, "acme", "app")
	if _, err := s.GetPipeline(ctx, "acme", "app"); err != nil {
		t.Fatal(err)
	}
	if !etcdstore.InCache(s, "acme", "app") {
		t.Fatal("acme/app not cached after a read")
	}
	const misses, workers = 10000, 8
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < misses; i += workers {
				if _, err := s.GetPipeline(ctx, "ghost", fmt.Sprintf("repo%d", i)); !errors.Is(err, pipeline.ErrNotFound) {
					errs <- fmt.Errorf("ghost/repo%d: %v, want ErrNotFound", i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if !etcdstore.InCache(s, "acme", "app") {
		t.Fatalf("acme/app evicted by %d reads of pipelines that do not exist", misses)
	}
	st := s.CacheStats()
	if st.Misses < misses {
		t.Errorf("misses counted %d, want >= %d", st.Misses, misses)
	}
}

// TestCacheAsksForProgressOnlyWhileAReaderWaits: an idle server sends etcd
// no progress requests; a read after the idle time still answers from
// memory, after one.
func TestCacheAsksForProgressOnlyWhileAReaderWaits(t *testing.T) {
	s := startedStore(t, newOpts(prefixOf(t)))
	ctx := t.Context()
	mustCreatePipeline(t, s, "acme", "app")
	if _, err := s.GetPipeline(ctx, "acme", "app"); err != nil {
		t.Fatal(err)
	}
	before := s.CacheStats()
	time.Sleep(time.Second) // the window in which nothing may be sent
	idle := s.CacheStats()
	if n := idle.ProgressRequests - before.ProgressRequests; n != 0 {
		t.Fatalf("%d progress requests in one idle second, want 0", n)
	}
	// Readers after the idle time are still answered from memory.
	eventually(t, 10*time.Second, "a read answered from memory after idling", func() bool {
		h := s.CacheStats().Hits
		if _, err := s.GetPipeline(ctx, "acme", "app"); err != nil {
			t.Fatal(err)
		}
		return s.CacheStats().Hits > h
	})
	if s.CacheStats().ProgressRequests == idle.ProgressRequests {
		t.Error("a stale cache answered without asking etcd for progress")
	}
}

// TestWatchBuildSubscribersShareOneWatch: N WatchBuild callers cost no
// etcd watch of their own; every one sees the update.
func TestWatchBuildSubscribersShareOneWatch(t *testing.T) {
	s := startedStore(t, newOpts(prefixOf(t)))
	ctx := t.Context()
	mustCreatePipeline(t, s, "acme", "app")
	b := mustCreateBuild(t, s, "acme", "app", pipeline.Build{Status: pipeline.StatusPending})
	const n = 50
	before := s.CacheStats().BuildWatches
	var wg sync.WaitGroup
	seen := make(chan pipeline.Status, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = s.WatchBuild(ctx, "acme", "app", b.Number, func(b pipeline.Build) bool {
				if b.Status == pipeline.StatusRunning {
					seen <- b.Status
					return false
				}
				return true
			})
		}()
	}
	eventually(t, 10*time.Second, "watchers subscribed", func() bool { return etcdstore.Subscribers(s) == n })
	if _, err := s.UpdateBuild(ctx, "acme", "app", b.Number, func(b *pipeline.Build) error {
		b.Status = pipeline.StatusRunning
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if len(seen) != n {
		t.Fatalf("%d of %d watchers saw the update", len(seen), n)
	}
	if got := s.CacheStats().BuildWatches - before; got != 0 {
		t.Errorf("%d etcd watches opened for %d WatchBuild callers, want 0 (the prefix watch is shared)", got, n)
	}
}

// TestConsistentReadsSeeOtherServersWritesFromMemory: with
// CacheOptions.LinearizableReads a read on A sees a write B just
// answered, yet is answered from A's cache after one revision read.
func TestConsistentReadsSeeOtherServersWritesFromMemory(t *testing.T) {
	prefix := prefixOf(t)
	a := newCachedWith(t, sharedClient(t), newOpts(prefix), etcdstore.CacheOptions{LinearizableReads: true})
	b := startedStore(t, newOpts(prefix))
	ctx := t.Context()
	mustCreatePipeline(t, b, "acme", "app")
	bu := mustCreateBuild(t, b, "acme", "app", pipeline.Build{Status: pipeline.StatusPending})
	if _, err := a.GetBuild(ctx, "acme", "app", bu.Number); err != nil {
		t.Fatal(err)
	}
	before := a.CacheStats()
	const rounds = 50
	for i := range rounds {
		if _, err := b.UpdateBuild(ctx, "acme", "app", bu.Number, func(b *pipeline.Build) error {
			b.Commit = fmt.Sprint(i)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		got, err := a.GetBuild(ctx, "acme", "app", bu.Number)
		if err != nil || got.Commit != fmt.Sprint(i) {
			t.Fatalf("round %d: read on A got commit %q, %v; want the write B answered", i, got.Commit, err)
		}
	}
	st := a.CacheStats()
	if n := st.ConsistentReads - before.ConsistentReads; n < rounds {
		t.Errorf("%d consistent reads counted, want %d", n, rounds)
	}
	if n := st.Hits - before.Hits; n < rounds/2 {
		t.Errorf("only %d of %d consistent reads answered from memory", n, rounds)
	}
}

// TestCacheEvictsTheLeastRecentlyReadPipeline: with more pipelines than
// the cache holds, one read all along stays cached.
func TestCacheEvictsTheLeastRecentlyReadPipeline(t *testing.T) {
	s := startedStore(t, newOpts(prefixOf(t)))
	ctx := t.Context()
	const others = 300 // more than the cache holds (256)
	mustCreatePipeline(t, s, "acme", "hot")
	for i := range others {
		mustCreatePipeline(t, s, "acme", fmt.Sprintf("cold%d", i))
	}
	for i := range others {
		for _, repo := range []string{"hot", fmt.Sprintf("cold%d", i)} {
			if _, err := s.GetPipeline(ctx, "acme", repo); err != nil {
				t.Fatal(err)
			}
		}
	}
	if !etcdstore.InCache(s, "acme", "hot") {
		t.Fatal("the pipeline read all along was evicted")
	}
	if etcdstore.InCache(s, "acme", "cold0") {
		t.Fatal("the pipeline read longest ago is still cached")
	}
}
