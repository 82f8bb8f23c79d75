package pipeline_test

import (
	"context"
	"testing"
	"time"

	"github.com/kontinuous/kontinuous/pipeline"
)

// slowCleanup is a recExec whose CleanupBuild, called when a build ends,
// reports that it was called and then holds the ending run until release
// is closed.
type slowCleanup struct {
	*recExec
	cleaning chan struct{}
	release  chan struct{}
}

func (x *slowCleanup) CleanupBuild(ctx context.Context, _, _ string, _ int) error {
	select {
	case x.cleaning <- struct{}{}:
	default:
	}
	select {
	case <-x.release:
	case <-ctx.Done():
	}
	return nil
}

// A re-run asked for while the run that ended the build is still winding
// down (cleaning up, notifying) starts when that run is gone, not at the
// next recovery sweep (here an hour away: StaleAfter/3).
func TestRunFromWhileTheEndedRunWindsDownStartsOnceItIsGone(t *testing.T) {
	x := &slowCleanup{recExec: newRecExec("kubernetes", false), cleaning: make(chan struct{}, 1), release: make(chan struct{})}
	w := newMemWorld(t, x, func(c *pipeline.EngineConfig) { c.StaleAfter = 3 * time.Hour })
	w.create()
	w.repo.Commit("main", map[string]string{pipeline.SpecPath: memSpec(shStage("one", `true`))}, "spec")
	carol := memCallers["carol"]
	b, err := w.svc.TriggerBuild(t.Context(), carol, "acme", "app", pipeline.EventDashboard, pipeline.ManualTrigger{})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-x.cleaning:
	case <-time.After(patience):
		t.Fatal("the build never ended")
	}
	if got := buildState(w.waitFor(b.Number, "done", func(b pipeline.Build) bool { return b.Status.Done() })); got != `SUCCESS @0 "" [one:SUCCESS:]` {
		t.Fatalf("first run: %s", got)
	}
	if _, err := w.svc.RunFromStage(t.Context(), carol, "acme", "app", b.Number, 1); err != nil {
		t.Fatal(err)
	}
	close(x.release)
	w.waitFor(b.Number, "done again", func(b pipeline.Build) bool { return b.Status.Done() })
	if n := x.jobCount(); n != 2 {
		t.Fatalf("the executor ran %d stages, want 2", n)
	}
}
