package pipeline_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kontinuous/kontinuous/pipeline"
)

// refusingStore refuses every build update with ErrUnavailable while
// refuse is set (etcd under a NOSPACE alarm: reads work, writes do not),
// and counts the refused updates and the engine's recovery sweeps.
type refusingStore struct {
	pipeline.Store
	refuse  atomic.Bool
	refused atomic.Int64
	sweeps  atomic.Int64 // ActiveBuilds calls: the engine's recovery sweeps
}

func (s *refusingStore) ActiveBuilds(ctx context.Context) ([]pipeline.Build, error) {
	s.sweeps.Add(1)
	return s.Store.ActiveBuilds(ctx)
}

func (s *refusingStore) UpdateBuild(ctx context.Context, owner, repo string, number int, fn func(*pipeline.Build) error) (pipeline.Build, error) {
	if s.refuse.Load() {
		s.refused.Add(1)
		return pipeline.Build{}, pipeline.Errorf(pipeline.ErrUnavailable, "etcd: database space exceeded")
	}
	return s.Store.UpdateBuild(ctx, owner, repo, number, fn)
}

// TestAfterAStoreOutageRunnersGetToRecordTheirStagesBeforeATakeover: no
// runner can beat its heart while the store refuses writes. Once writes
// work again, another server must not take the build over at once (it
// would FAIL a stage that its runner saw succeed) but leave the runner
// StaleAfter to record it.
func TestAfterAStoreOutageRunnersGetToRecordTheirStagesBeforeATakeover(t *testing.T) {
	var rs *refusingStore
	x := newRecExec("local", false)
	w := newMemWorld(t, x, func(c *pipeline.EngineConfig) {
		rs = &refusingStore{Store: c.Store}
		c.Store = rs
		// The sweep every 5 s; the grace after an outage 15 s: the two
		// sweeps waited for below end within 10 s of the refused claim,
		// with 5 s to spare on a busy machine.
		c.StaleAfter = 15 * time.Second
	})
	w.create()
	spec := memSpec(shStage("one", "true"))
	sha := w.repo.Commit("main", map[string]string{pipeline.SpecPath: spec}, "spec")
	// Its runner ("other", another server) beat its heart last 30 s ago:
	// the store refused its beats since.
	beat := time.Now().Add(-30 * time.Second).UnixNano()
	rs.refuse.Store(true)
	b, err := w.store.CreateBuild(t.Context(), "acme", "app", pipeline.Build{Event: "push", Branch: "main", Commit: sha,
		Author: "alice", Status: pipeline.StatusRunning, Created: beat, Started: beat, Runner: "other", Heartbeat: beat,
		CloneURL: w.repo.CloneURL, Spec: []byte(spec),
		Stages: []pipeline.Stage{{ID: "s1", Name: "one", Type: "command", Index: 1, Status: pipeline.StatusRunning, Started: beat,
			Params: map[string]any{"command": []any{"true"}}}}})
	if err != nil {
		t.Fatal(err)
	}
	w.engine.Enqueue("acme", "app", b.Number) // as its sweep does: the claim meets the outage
	// Once its claim was refused, writes work again; wait for this
	// engine's next try at the build (its sweep, every second).
	deadline := time.Now().Add(patience)
	for rs.refused.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the engine never tried to claim the build")
		}
		time.Sleep(10 * time.Millisecond)
	}
	rs.refuse.Store(false)
	// Two sweeps after the outage: the first one would have taken the
	// stale build over at once (its claim runs before the second sweep).
	lifted := rs.sweeps.Load()
	for rs.sweeps.Load() < lifted+2 {
		if time.Now().After(deadline) {
			t.Fatal("the engine's recovery sweep did not run twice")
		}
		time.Sleep(10 * time.Millisecond)
	}
	got, err := w.store.GetBuild(t.Context(), "acme", "app", b.Number)
	if err != nil {
		t.Fatal(err)
	}
	if got.Runner != "other" || got.Status != pipeline.StatusRunning {
		t.Fatalf("soon after the outage the build was taken over: %s (runner %q)", buildState(got), got.Runner)
	}
	// The runner records its stage's success: the build is its to end.
	if _, err := w.store.UpdateBuild(t.Context(), "acme", "app", b.Number, func(nb *pipeline.Build) error {
		nb.Heartbeat = pipeline.Now()
		nb.EndStage(0, pipeline.StatusSuccess, "", pipeline.Now())
		nb.Succeed(pipeline.Now())
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	got = w.waitFor(b.Number, "done", func(b pipeline.Build) bool { return b.Status.Done() })
	if got.Status != pipeline.StatusSuccess || x.jobCount() != 0 {
		t.Fatalf("after the outage: %s, %d stages run here", buildState(got), x.jobCount())
	}
}
