package etcdstore_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/etcdstore"
	"github.com/kontinuous/kontinuous/pipeline/pipelinetest"
)

// startedStore is a store whose watch-fed read cache runs.
func startedStore(t *testing.T, opts etcdstore.Options) *etcdstore.Cached {
	t.Helper()
	return newStoreWith(t, sharedClient(t), opts)
}

func TestCachedReadsSeeThisStoresOwnWritesAtOnce(t *testing.T) {
	s := startedStore(t, newOpts(prefixOf(t)))
	ctx := t.Context()
	mustCreatePipeline(t, s, "acme", "app")
	for i := range 30 {
		b := mustCreateBuild(t, s, "acme", "app", pipeline.Build{Status: pipeline.StatusPending, Commit: fmt.Sprint(i)})
		// Each read comes right after a write; none may miss it.
		list, err := s.ListBuilds(ctx, "acme", "app", 10, 0)
		if err != nil || len(list) == 0 || list[0].Number != b.Number {
			t.Fatalf("after creating %d: list %v, %v", b.Number, list, err)
		}
		p, err := s.GetPipeline(ctx, "acme", "app")
		if err != nil || p.LatestBuild == nil || p.LatestBuild.Number != b.Number {
			t.Fatalf("after creating %d: pipeline latest %+v, %v", b.Number, p.LatestBuild, err)
		}
		if _, err := s.UpdateBuild(ctx, "acme", "app", b.Number, func(b *pipeline.Build) error {
			b.Status = pipeline.StatusRunning
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		got, err := s.GetBuild(ctx, "acme", "app", b.Number)
		if err != nil || got.Status != pipeline.StatusRunning {
			t.Fatalf("after updating %d: %s, %v", b.Number, got.Status, err)
		}
		if i%10 == 9 {
			if err := s.DeleteBuild(ctx, "acme", "app", b.Number); err != nil {
				t.Fatal(err)
			}
			if _, err := s.GetBuild(ctx, "acme", "app", b.Number); !errors.Is(err, pipeline.ErrNotFound) {
				t.Fatalf("deleted build %d: %v, want ErrNotFound", b.Number, err)
			}
		}
	}
	if err := s.DeletePipeline(ctx, "acme", "app"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ListBuilds(ctx, "acme", "app", 10, 0); !errors.Is(err, pipeline.ErrNotFound) {
		t.Fatalf("list of a deleted pipeline: %v, want ErrNotFound", err)
	}
	if _, err := s.GetPipeline(ctx, "acme", "app"); !errors.Is(err, pipeline.ErrNotFound) {
		t.Fatalf("deleted pipeline: %v, want ErrNotFound", err)
	}
	if _, err := s.GetBuild(ctx, "acme", "app", 1); !errors.Is(err, pipeline.ErrNotFound) {
		t.Fatalf("build of a deleted pipeline: %v, want ErrNotFound", err)
	}
	if etcdstore.CacheHits(s) < 90 {
		t.Errorf("only %d reads answered from memory; the cache is not used", etcdstore.CacheHits(s))
	}
}

// TestCachedReadsAgreeWithEtcdUnderConcurrentWritesFromTwoStores writes
// from two stores at once (creates, updates, deletes, a pipeline deleted
// and created again) while reading through the cache of one of them;
// afterwards every cached read must equal a linearizable read.
func TestCachedReadsAgreeWithEtcdUnderConcurrentWritesFromTwoStores(t *testing.T) {
	prefix := prefixOf(t)
	cached := startedStore(t, newOpts(prefix))
	other := newStoreWith(t, sharedClient(t), newOpts(prefix))
	truth := newPlainWith(t, sharedClient(t), newOpts(prefix))
	ctx := t.Context()
	for _, r := range []string{"a", "b"} {
		mustCreatePipeline(t, cached, "acme", r)
	}
	var wg sync.WaitGroup
	errc := make(chan error, 100)
	for w, s := range []*etcdstore.Cached{cached, other, cached, other} {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for i := range 60 {
				repo := []string{"a", "b"}[rng.IntN(2)]
				b, err := s.CreateBuild(ctx, "acme", repo, pipeline.Build{Status: pipeline.StatusPending})
				if errors.Is(err, pipeline.ErrNotFound) {
					continue // the pipeline is being re-created
				}
				if err != nil {
					errc <- err
					return
				}
				if _, err := s.UpdateBuild(ctx, "acme", repo, b.Number, func(b *pipeline.Build) error {
					b.Status = pipeline.StatusSuccess
					return nil
				}); err != nil && !errors.Is(err, pipeline.ErrNotFound) {
					errc <- err
					return
				}
				if i%7 == 0 {
					if err := s.DeleteBuild(ctx, "acme", repo, b.Number); err != nil && !errors.Is(err, pipeline.ErrNotFound) {
						errc <- err
						return
					}
				}
				// Reads through the cache must never fail or go backwards
				// on this store's own writes.
				if s == cached {
					got, err := s.GetBuild(ctx, "acme", repo, b.Number)
					if err == nil && got.Number != b.Number {
						errc <- fmt.Errorf("GetBuild(%d) = build %d", b.Number, got.Number)
						return
					}
				}
			}
		})
	}
	wg.Go(func() {
		time.Sleep(50 * time.Millisecond)
		if err := other.DeletePipeline(ctx, "acme", "b"); err != nil {
			errc <- err
			return
		}
		if _, err := other.CreatePipeline(ctx, minimalPipeline("acme", "b")); err != nil {
			errc <- err
		}
	})
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	// The cache has caught up with the other store's writes once the
	// watch delivered them; then every read agrees with etcd.
	for _, repo := range []string{"a", "b"} {
		eventually(t, patience, "cached reads of acme/"+repo+" agree with etcd", func() bool {
			want, err1 := truth.ListBuilds(ctx, "acme", repo, 500, 0)
			got, err2 := cached.ListBuilds(ctx, "acme", repo, 500, 0)
			if err1 != nil || err2 != nil || !reflect.DeepEqual(got, want) {
				return false
			}
			wp, err1 := truth.GetPipeline(ctx, "acme", repo)
			gp, err2 := cached.GetPipeline(ctx, "acme", repo)
			if err1 != nil || err2 != nil || !reflect.DeepEqual(gp, wp) {
				return false
			}
			for n := 1; n <= 250; n++ {
				w, err1 := truth.GetBuild(ctx, "acme", repo, n)
				g, err2 := cached.GetBuild(ctx, "acme", repo, n)
				if !errors.Is(err1, pipeline.ErrNotFound) && err1 != nil || (err1 == nil) != (err2 == nil) || !reflect.DeepEqual(g, w) {
					return false
				}
			}
			return true
		})
	}
	if etcdstore.CacheHits(cached) == 0 {
		t.Error("no read answered from memory; the cache is not used")
	}
}

func TestCachedReadsSeeAnotherStoresWritesThroughTheWatch(t *testing.T) {
	prefix := prefixOf(t)
	reader := startedStore(t, newOpts(prefix))
	writer := newStoreWith(t, sharedClient(t), newOpts(prefix))
	ctx := t.Context()
	mustCreatePipeline(t, writer, "acme", "app")
	if _, err := reader.ListBuilds(ctx, "acme", "app", 10, 0); err != nil { // loads acme/app
		t.Fatal(err)
	}
	hits := etcdstore.CacheHits(reader)
	b := mustCreateBuild(t, writer, "acme", "app", pipeline.Build{Status: pipeline.StatusPending})
	eventually(t, patience, "the reader sees the other store's build", func() bool {
		got, err := reader.GetBuild(ctx, "acme", "app", b.Number)
		return err == nil && got.ID == b.ID
	})
	if etcdstore.CacheHits(reader) == hits {
		t.Error("the reader did not answer from memory")
	}
}

func TestCachedReadsStopAndAnswerUnavailableWhenEtcdIsDown(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an etcd cluster")
	}
	c := pipelinetest.StartEtcdCluster(t)
	s := etcdstore.NewCached(etcdstore.New(c.Client(), testBox(t), etcdstore.Options{Prefix: prefixOf(t), OpTimeout: 2 * time.Second}), etcdstore.CacheOptions{})
	t.Cleanup(s.Close)
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	mustCreatePipeline(t, s, "acme", "app")
	b := mustCreateBuild(t, s, "acme", "app", pipeline.Build{Status: pipeline.StatusPending})
	if _, err := s.GetBuild(t.Context(), "acme", "app", b.Number); err != nil {
		t.Fatal(err)
	}
	hits := etcdstore.CacheHits(s)
	if _, err := s.GetBuild(t.Context(), "acme", "app", b.Number); err != nil || etcdstore.CacheHits(s) == hits {
		t.Fatalf("second read: %v, hits %d → %d: not answered from memory", err, hits, etcdstore.CacheHits(s))
	}
	c.StopAll()
	// Once the watch has been silent for a second, reads go to etcd again
	// and fail as unavailable (the contract's 503), bounded by OpTimeout.
	eventually(t, patience, "reads answer ErrUnavailable", func() bool {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		_, err := s.GetBuild(ctx, "acme", "app", b.Number)
		_, lerr := s.ListBuilds(ctx, "acme", "app", 10, 0)
		return errors.Is(err, pipeline.ErrUnavailable) && errors.Is(lerr, pipeline.ErrUnavailable)
	})
	c.StartAll()
	eventually(t, patience, "reads work again", func() bool {
		got, err := s.GetBuild(t.Context(), "acme", "app", b.Number)
		return err == nil && got.ID == b.ID
	})
}

// TestUpdatesFromTwoCachedStoresLoseNothing: UpdateBuild starts from the
// read cache's value; when another server changed the build meanwhile,
// the transaction's revision check must make it retry on the new value.
func TestUpdatesFromTwoCachedStoresLoseNothing(t *testing.T) {
	prefix := prefixOf(t)
	a, b := startedStore(t, newOpts(prefix)), startedStore(t, newOpts(prefix))
	mustCreatePipeline(t, a, "acme", "app")
	mustCreateBuild(t, a, "acme", "app", pipeline.Build{Status: pipeline.StatusRunning})
	for _, s := range []*etcdstore.Cached{a, b} { // both load acme/app into their caches
		if _, err := s.GetBuild(t.Context(), "acme", "app", 1); err != nil {
			t.Fatal(err)
		}
	}
	const n = 15
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	for i := range 2 * n {
		s := []*etcdstore.Cached{a, b}[i%2]
		wg.Go(func() {
			_, err := s.UpdateBuild(t.Context(), "acme", "app", 1, func(b *pipeline.Build) error {
				b.Stages = append(b.Stages, pipeline.Stage{Name: fmt.Sprintf("marker-%d", i)})
				return nil
			})
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	got, err := newPlainWith(t, sharedClient(t), newOpts(prefix)).GetBuild(t.Context(), "acme", "app", 1)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, st := range got.Stages {
		if seen[st.Name] {
			t.Errorf("%s applied twice", st.Name)
		}
		seen[st.Name] = true
	}
	if len(seen) != 2*n {
		t.Errorf("%d of %d updates kept: %v", len(seen), 2*n, seen)
	}
}
