package pipeline_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/kontinuous/kontinuous/pipeline"
)

// What the engine's recovery sweep does, on the in-memory store, with
// the builds a dead runner (or none) left behind.
func TestRecoveryFinishesWhatADeadRunnerLeft(t *testing.T) {
	longAgo := time.Now().Add(-time.Hour).UnixNano()
	cases := []struct {
		name string
		// left is the build as the dead runner (or a queue nobody ran)
		// left it; stages and the spec are filled in when it has none.
		left func(b *pipeline.Build)
		want string // buildState once it ended
		jobs int    // stages the executor ran
	}{
		{
			name: "queued, never run",
			left: func(b *pipeline.Build) {},
			want: `SUCCESS @0 "" [one:SUCCESS:]`,
			jobs: 1,
		},
		{
			name: "a stage running on a runner that died",
			left: func(b *pipeline.Build) {
				b.Status, b.Started, b.Runner, b.Heartbeat = pipeline.StatusRunning, longAgo, "ghost", longAgo
				b.Stages[0].Status, b.Stages[0].Started = pipeline.StatusRunning, longAgo
			},
			want: `FAIL @0 "stage 1 \"one\" failed: the server stopped while this stage was running; re-run the build from this stage" [one:FAIL:the server stopped while this stage was running; re-run the build from this stage]`,
		},
		{
			name: "a cancel its dead runner never completed",
			left: func(b *pipeline.Build) {
				b.Status, b.Started, b.Runner, b.Heartbeat = pipeline.StatusRunning, longAgo, "ghost", longAgo
				b.Stages[0].Status, b.Stages[0].Started = pipeline.StatusRunning, longAgo
				b.CancelRequested, b.Message = true, "cancel requested; waiting for the running stage to stop"
			},
			want: `CANCELED @0 "" [one:CANCELED:build canceled]`,
		},
		{
			name: "an approved wait whose runner is gone",
			left: func(b *pipeline.Build) {
				b.Spec = []byte(memSpec("      - name: approve\n        type: wait\n", shStage("one", "true")))
				b.Status, b.Started, b.CurrentStage = pipeline.StatusRunning, longAgo, 1
				b.Stages = []pipeline.Stage{{ID: "w", Name: "approve", Type: "wait", Index: 1, Status: pipeline.StatusSuccess, Params: map[string]any{}},
					{ID: "c", Name: "one", Type: "command", Index: 2, Status: pipeline.StatusPending, Params: map[string]any{"command": []any{"true"}}}}
			},
			want: `SUCCESS @1 "" [approve:SUCCESS: | one:SUCCESS:]`,
			jobs: 1,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			x := newRecExec("local", false)
			w := newMemWorld(t, x)
			w.create()
			spec := memSpec(shStage("one", "true"))
			sha := w.repo.Commit("main", map[string]string{pipeline.SpecPath: spec}, "spec")
			b, err := w.store.CreateBuild(t.Context(), "acme", "app", pipeline.Build{Event: "push", Branch: "main", Commit: sha,
				Author: "alice", Status: pipeline.StatusPending, Created: pipeline.Now(), CloneURL: w.repo.CloneURL, Stages: []pipeline.Stage{}})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.store.UpdateBuild(t.Context(), "acme", "app", b.Number, func(b *pipeline.Build) error {
				if tc.name != "queued, never run" {
					b.Spec = []byte(spec)
					b.Stages = []pipeline.Stage{{ID: "s1", Name: "one", Type: "command", Index: 1, Status: pipeline.StatusPending,
						Params: map[string]any{"command": []any{"true"}}}}
				}
				tc.left(b)
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			// The sweep runs at start and every StaleAfter/3 (1 s here).
			got := w.waitFor(b.Number, "done", func(b pipeline.Build) bool { return b.Status.Done() && b.Runner == "" })
			if s := buildState(got); s != tc.want || got.Finished == 0 || got.CancelRequested {
				t.Fatalf("recovered:\n got %s\nwant %s", s, tc.want)
			}
			if n := x.jobCount(); n != tc.jobs {
				t.Fatalf("the executor ran %d stages, want %d", n, tc.jobs)
			}
		})
	}
}

// A panic in a build's run fails that build, saying so, and the engine
// runs the next one.
func TestPanicFailsTheBuildAndTheEngineGoesOnOnTheMemoryStore(t *testing.T) {
	x := newRecExec("local", false)
	x.panics = true
	w := newMemWorld(t, x)
	w.create()
	w.repo.Commit("main", map[string]string{pipeline.SpecPath: memSpec(shStage("one", "true"))}, "spec")
	const msg = "internal error in the server while running this build; its log has the details"
	for i, want := range []string{
		fmt.Sprintf(`FAIL @0 %q [one:FAIL:%s]`, msg, msg),
		`SUCCESS @0 "" [one:SUCCESS:]`,
	} {
		b, err := w.svc.TriggerBuild(t.Context(), memCallers["carol"], "acme", "app", pipeline.EventCLI, pipeline.ManualTrigger{})
		if err != nil {
			t.Fatal(err)
		}
		got := w.waitFor(b.Number, "done", func(b pipeline.Build) bool { return b.Status.Done() && b.Runner == "" })
		if s := buildState(got); s != want {
			t.Fatalf("build %d:\n got %s\nwant %s", i+1, s, want)
		}
	}
}

// A runner whose build another instance took over stops the stage's
// work (its executor sees ErrTakenOver) and writes nothing more to the
// build.
func TestRunnerThatLostItsClaimStopsOnTheMemoryStore(t *testing.T) {
	x := newRecExec("local", true)
	w := newMemWorld(t, x, func(c *pipeline.EngineConfig) { c.StaleAfter = time.Hour })
	w.create()
	w.repo.Commit("main", map[string]string{pipeline.SpecPath: memSpec(shStage("one", "true"))}, "spec")
	b, err := w.svc.TriggerBuild(t.Context(), memCallers["carol"], "acme", "app", pipeline.EventCLI, pipeline.ManualTrigger{})
	if err != nil {
		t.Fatal(err)
	}
	waitStarted(t, x)
	takeOver(t, w.store, b.Number, x)
	// The stage's log ends (the runner closes it last): following it
	// returns.
	if err := w.svc.FollowStageLog(t.Context(), memCallers["dave"], "acme", "app", b.Number, 1, func([]byte) error { return nil }); err != nil {
		t.Fatal(err)
	}
	got, err := w.store.GetBuild(t.Context(), "acme", "app", b.Number)
	if err != nil || got.Status != pipeline.StatusRunning || got.Stages[0].Status != pipeline.StatusRunning || got.Runner != "other" {
		t.Fatalf("after a takeover the old runner changed the build: %s runner %q %v", buildState(got), got.Runner, err)
	}
}
