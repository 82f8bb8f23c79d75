package etcdstore_test

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/kontinuous/kontinuous/pipeline"
)

func TestSustainedConcurrentCreatesFromTwoStoresAllSucceedGapFree(t *testing.T) {
	// Two stores on one key space stand for two server instances; each
	// groups its callers' creates into shared transactions.
	a := newStore(t)
	b := newStoreWith(t, sharedClient(t), newOpts(prefixOf(t)))
	mustCreatePipeline(t, a, "acme", "busy")
	const callers, each = 64, 20
	var mu sync.Mutex
	byDelivery := map[string][]int{}
	var wg sync.WaitGroup
	for c := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := a
			if c%2 == 1 {
				s = b
			}
			for j := range each {
				// Callers c and c^1 send the same deliveries (a redelivery
				// racing the original, through the other instance).
				d := fmt.Sprintf("d-%d-%d", c/2, j)
				got, err := s.CreateBuild(t.Context(), "acme", "busy", pipeline.Build{DeliveryID: d})
				if err != nil && !errors.Is(err, pipeline.ErrConflict) {
					t.Errorf("create %s: %v", d, err)
					return
				}
				if errors.Is(err, pipeline.ErrConflict) && got.Number == 0 {
					t.Errorf("create %s: %v (a conflict without the original build)", d, err)
					return
				}
				mu.Lock()
				byDelivery[d] = append(byDelivery[d], got.Number)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	var numbers []int
	for d, ns := range byDelivery {
		if len(ns) != 2 || ns[0] != ns[1] {
			t.Errorf("delivery %s got builds %v, want the same build twice", d, ns)
		}
		numbers = append(numbers, ns[0])
	}
	slices.Sort(numbers)
	for i, n := range numbers {
		if n != i+1 {
			t.Fatalf("numbers are not 1..%d gap-free: %v", callers/2*each, numbers)
		}
	}
}

func TestListAndLatestStayRightWhenTheNewestBuildsAreDeleted(t *testing.T) {
	// A plain store (every read from etcd): this is about the bounded
	// etcd ranges, and a build made by another store must be seen at once.
	s := newPlainWith(t, sharedClient(t), newOpts(prefixOf(t)))
	mustCreatePipeline(t, s, "acme", "app")
	const n = 200
	for range n {
		mustCreateBuild(t, s, "acme", "app", pipeline.Build{Status: pipeline.StatusSuccess})
	}
	// Reads remember the newest number (200) and bound their ranges
	// below it; then the newest 100 go away.
	if p, err := s.GetPipeline(t.Context(), "acme", "app"); err != nil || p.LatestBuild == nil || p.LatestBuild.Number != n {
		t.Fatalf("latest before deletion: %+v %v", p.LatestBuild, err)
	}
	for k := 101; k <= n; k++ {
		if err := s.DeleteBuild(t.Context(), "acme", "app", k); err != nil {
			t.Fatal(err)
		}
	}
	p, err := s.GetPipeline(t.Context(), "acme", "app")
	if err != nil || p.LatestBuild == nil || p.LatestBuild.Number != 100 {
		t.Fatalf("latest after deleting 101..200: %+v %v", p.LatestBuild, err)
	}
	cases := []struct {
		limit, before int
		first, last   int
	}{
		{50, 0, 100, 51},
		{50, 51, 50, 1},
		{100, 150, 100, 1},
		{10, 2, 1, 1},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("limit=%d,before=%d", c.limit, c.before), func(t *testing.T) {
			bs, err := s.ListBuilds(t.Context(), "acme", "app", c.limit, c.before)
			if err != nil {
				t.Fatal(err)
			}
			if len(bs) == 0 || bs[0].Number != c.first || bs[len(bs)-1].Number != c.last || len(bs) != c.first-c.last+1 {
				t.Fatalf("got %d builds from %d to %d, want %d to %d", len(bs), bs[0].Number, bs[len(bs)-1].Number, c.first, c.last)
			}
		})
	}
	// A newer build made elsewhere (another store) is seen at once.
	other := newStoreWith(t, sharedClient(t), newOpts(prefixOf(t)))
	made := mustCreateBuild(t, other, "acme", "app", pipeline.Build{})
	if p, err := s.GetPipeline(t.Context(), "acme", "app"); err != nil || p.LatestBuild == nil || p.LatestBuild.Number != made.Number {
		t.Fatalf("latest after another store's create: %+v %v, want %d", p.LatestBuild, err, made.Number)
	}
	if bs, err := s.ListBuilds(t.Context(), "acme", "app", 1, 0); err != nil || len(bs) != 1 || bs[0].Number != made.Number {
		t.Fatalf("list after another store's create: %v %v", bs, err)
	}
}

func TestReadBuildsAreCopiesTheCallerMayChange(t *testing.T) {
	s := newStore(t)
	mustCreatePipeline(t, s, "acme", "app")
	b := fullBuild()
	b.DeliveryID = ""
	made := mustCreateBuild(t, s, "acme", "app", b)
	first, err := s.GetBuild(t.Context(), "acme", "app", made.Number)
	if err != nil {
		t.Fatal(err)
	}
	first.Stages[0].Params["command"] = "changed"
	first.Stages[0].Vars["X"] = "changed"
	first.Stages = first.Stages[:0]
	again, err := s.GetBuild(t.Context(), "acme", "app", made.Number)
	if err != nil {
		t.Fatal(err)
	}
	if len(again.Stages) == 0 || again.Stages[0].Params["command"] == "changed" || again.Stages[0].Vars["X"] == "changed" {
		t.Fatalf("a change to a read build reached the next read: %+v", again)
	}
	list, err := s.ListBuilds(t.Context(), "acme", "app", 1, 0)
	if err != nil || len(list) != 1 || len(list[0].Stages) == 0 {
		t.Fatalf("list: %v %v", list, err)
	}
}

// BenchmarkListBuildsDeepHistory reads the newest page (50) of a pipeline
// with 20,000 builds, and its pipeline with the latest build: their cost
// should follow the page, not the history (etcd counts every key of an
// open range, even with a limit).
func BenchmarkListBuildsDeepHistory(b *testing.B) {
	s := benchStore(b)
	mustCreatePipeline(b, s, "acme", "deep")
	const n = 20000
	var wg sync.WaitGroup
	for w := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range n / 32 {
				if _, err := s.CreateBuild(b.Context(), "acme", "deep", pipeline.Build{Status: pipeline.StatusSuccess, Author: fmt.Sprint(w)}); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.Run("ListBuilds", func(b *testing.B) {
		for b.Loop() {
			if bs, err := s.ListBuilds(b.Context(), "acme", "deep", 50, 0); err != nil || len(bs) != 50 {
				b.Fatal(len(bs), err)
			}
		}
	})
	b.Run("GetPipeline", func(b *testing.B) {
		for b.Loop() {
			if p, err := s.GetPipeline(b.Context(), "acme", "deep"); err != nil || p.LatestBuild == nil {
				b.Fatal(err)
			}
		}
	})
}
