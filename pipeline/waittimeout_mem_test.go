package pipeline_test

import (
	"strings"
	"testing"
	"time"

	"github.com/kontinuous/kontinuous/pipeline"
)

// A wait stage with a timeout FAILs once nobody approved it in time,
// saying so; the stages after it are skipped, and nothing ran.
func TestWaitStagePastItsTimeoutFailsTheBuild(t *testing.T) {
	x := newRecExec("local", false)
	w := newMemWorld(t, x) // the recovery sweep every second
	w.create()
	spec := memSpec("      - name: approve\n        type: wait\n        params: {message: \"ship it?\", timeout: 1s}\n", shStage("one", "true"))
	sha := w.repo.Commit("main", map[string]string{pipeline.SpecPath: spec}, "spec")
	b, err := w.store.CreateBuild(t.Context(), "acme", "app", pipeline.Build{Event: "push", Branch: "main", Commit: sha,
		Author: "alice", Status: pipeline.StatusPending, Created: pipeline.Now(), CloneURL: w.repo.CloneURL, Stages: []pipeline.Stage{}})
	if err != nil {
		t.Fatal(err)
	}
	w.engine.Enqueue("acme", "app", b.Number)
	got := w.waitFor(b.Number, "failed", func(b pipeline.Build) bool { return b.Status.Done() })
	st := got.Stages[0]
	if got.Status != pipeline.StatusFail || st.Status != pipeline.StatusFail || st.Message != "not approved within 1s" ||
		!strings.Contains(got.Message, "not approved within 1s") || got.Stages[1].Status != pipeline.StatusSkipped {
		t.Fatalf("after the wait's timeout: %s", buildState(got))
	}
	if d := time.Duration(st.Finished - st.Started); st.Started == 0 || d < time.Second {
		t.Fatalf("failed %s after it began waiting, before its 1s timeout", d)
	}
	if n := x.jobCount(); n != 0 {
		t.Fatalf("the executor ran %d stages", n)
	}
}
