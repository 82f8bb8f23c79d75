package pipeline

import (
	"errors"
	"testing"

	"github.com/kontinuous/kontinuous/pipeline/spec"
)

// threeStages is a build RUNNING its first of three stages (a command, a
// wait, a command), driven by runner "a".
func threeStages() Build {
	return Build{
		Number: 7, Status: StatusRunning, Started: 1, Runner: "a", Heartbeat: 1,
		Stages: []Stage{
			{Index: 1, Name: "build", Type: spec.TypeCommand, Status: StatusRunning, Started: 1},
			{Index: 2, Name: "approve", Type: spec.TypeWait, Status: StatusPending, Params: map[string]any{"message": "ship it?"}},
			{Index: 3, Name: "deploy", Type: spec.TypeCommand, Status: StatusPending},
		},
	}
}

func statuses(b Build) []Status {
	out := make([]Status, len(b.Stages))
	for i, s := range b.Stages {
		out[i] = s.Status
	}
	return out
}

// checkInvariants fails t when b breaks a rule every build keeps.
func checkInvariants(t *testing.T, b Build) {
	t.Helper()
	if b.Status.Done() {
		if b.Runner != "" || b.CancelRequested || b.Finished == 0 {
			t.Errorf("finished build %s keeps runner %q, cancel requested %v, finished %d", b.Status, b.Runner, b.CancelRequested, b.Finished)
		}
		for _, s := range b.Stages {
			if !s.Status.Done() && s.Status != StatusSkipped {
				t.Errorf("finished build %s has stage %d %s", b.Status, s.Index, s.Status)
			}
		}
	}
	if b.Status == StatusWaiting && b.Runner != "" {
		t.Errorf("waiting build has runner %q", b.Runner)
	}
}

func TestBuildTransitions(t *testing.T) {
	const now = 100
	for _, tc := range []struct {
		name   string
		build  func() Build
		step   func(*Build) error
		status Status
		stages []Status
		msg    string
		err    error
	}{
		{name: "first stage succeeds", build: threeStages, step: func(b *Build) error {
			st, _ := b.EndStage(0, StatusSuccess, "", now)
			if st != StatusSuccess || b.CurrentStage != 1 {
				t.Errorf("EndStage = %s, current %d", st, b.CurrentStage)
			}
			return nil
		}, status: StatusRunning, stages: []Status{StatusSuccess, StatusPending, StatusPending}},
		{name: "stage fails: rest skipped", build: threeStages, step: func(b *Build) error {
			b.EndStage(0, StatusFail, "exit 1", now)
			return nil
		}, status: StatusFail, stages: []Status{StatusFail, StatusSkipped, StatusSkipped}, msg: `stage 1 "build" failed: exit 1`},
		{name: "stage ends while cancel requested: canceled", build: func() Build {
			b := threeStages()
			b.CancelRequested, b.Message = true, cancelRequestedMessage
			return b
		}, step: func(b *Build) error {
			if st, m := b.EndStage(0, StatusSuccess, "", now); st != StatusCanceled || m != canceledMessage {
				t.Errorf("EndStage = %s %q", st, m)
			}
			return nil
		}, status: StatusCanceled, stages: []Status{StatusCanceled, StatusSkipped, StatusSkipped}},
		{name: "wait then approve", build: threeStages, step: func(b *Build) error {
			b.EndStage(0, StatusSuccess, "", now)
			b.Wait(1, now)
			if b.Status != StatusWaiting || b.Stages[1].Message != "ship it?" || b.Runner != "" {
				t.Errorf("after Wait: %s %q runner %q", b.Status, b.Stages[1].Message, b.Runner)
			}
			return b.Approve(2, now)
		}, status: StatusRunning, stages: []Status{StatusSuccess, StatusSuccess, StatusPending}},
		{name: "approve a stage that is not waiting", build: threeStages, step: func(b *Build) error {
			return b.Approve(1, now)
		}, status: StatusRunning, stages: []Status{StatusRunning, StatusPending, StatusPending}, err: ErrConflict},
		{name: "approve a missing stage", build: threeStages, step: func(b *Build) error {
			return b.Approve(9, now)
		}, status: StatusRunning, stages: []Status{StatusRunning, StatusPending, StatusPending}, err: ErrNotFound},
		{name: "cancel with a live runner only marks", build: threeStages, step: func(b *Build) error {
			ended, _, err := b.RequestCancel(true, now)
			if ended || !b.CancelRequested {
				t.Errorf("ended %v, requested %v", ended, b.CancelRequested)
			}
			return err
		}, status: StatusRunning, stages: []Status{StatusRunning, StatusPending, StatusPending}, msg: cancelRequestedMessage},
		{name: "cancel without a live runner ends", build: threeStages, step: func(b *Build) error {
			ended, changed, err := b.RequestCancel(false, now)
			if !ended || len(changed) != 1 || changed[0] != 0 {
				t.Errorf("ended %v, changed %v", ended, changed)
			}
			return err
		}, status: StatusCanceled, stages: []Status{StatusCanceled, StatusSkipped, StatusSkipped}},
		{name: "cancel twice", build: func() Build {
			b := threeStages()
			b.CancelRequested = true
			return b
		}, step: func(b *Build) error {
			_, _, err := b.RequestCancel(true, now)
			return err
		}, status: StatusRunning, stages: []Status{StatusRunning, StatusPending, StatusPending}, err: ErrConflict},
		{name: "cancel a finished build", build: func() Build {
			b := threeStages()
			b.EndStage(0, StatusSuccess, "", 5)
			b.Fail("x", 5)
			return b
		}, step: func(b *Build) error {
			_, _, err := b.RequestCancel(false, now)
			return err
		}, status: StatusFail, stages: []Status{StatusSuccess, StatusSkipped, StatusSkipped}, msg: "x", err: ErrConflict},
		{name: "fail before stages", build: func() Build { return Build{Number: 1, Status: StatusPending, Runner: "a"} }, step: func(b *Build) error {
			b.Fail("no .pipeline.yml", now)
			return nil
		}, status: StatusFail, stages: []Status{}, msg: "no .pipeline.yml"},
		{name: "fail running stages (panic)", build: threeStages, step: func(b *Build) error {
			if changed := b.FailRunning("boom", now); len(changed) != 1 {
				t.Errorf("changed %v", changed)
			}
			return nil
		}, status: StatusFail, stages: []Status{StatusFail, StatusSkipped, StatusSkipped}, msg: "boom"},
		{name: "all stages succeed", build: func() Build {
			b := threeStages()
			b.Stages = b.Stages[:1]
			return b
		}, step: func(b *Build) error {
			b.EndStage(0, StatusSuccess, "", now)
			b.Succeed(now)
			return nil
		}, status: StatusSuccess, stages: []Status{StatusSuccess}},
		{name: "run from stage 2 after a failure there", build: func() Build {
			b := threeStages()
			b.EndStage(0, StatusSuccess, "", 5)
			b.StartStage(1, 6)
			b.EndStage(1, StatusFail, "no", 7)
			return b
		}, step: func(b *Build) error {
			if err := b.RunFrom(2); err != nil {
				return err
			}
			if b.CurrentStage != 1 || b.Finished != 0 || b.Message != "" {
				t.Errorf("after RunFrom: current %d finished %d message %q", b.CurrentStage, b.Finished, b.Message)
			}
			return nil
		}, status: StatusPending, stages: []Status{StatusSuccess, StatusPending, StatusPending}},
		{name: "run from after a failed earlier stage", build: func() Build {
			b := threeStages()
			b.EndStage(0, StatusFail, "no", 5)
			return b
		}, step: func(b *Build) error { return b.RunFrom(2) },
			status: StatusFail, stages: []Status{StatusFail, StatusSkipped, StatusSkipped}, msg: `stage 1 "build" failed: no`, err: ErrConflict},
		{name: "run from a running build", build: threeStages, step: func(b *Build) error { return b.RunFrom(1) },
			status: StatusRunning, stages: []Status{StatusRunning, StatusPending, StatusPending}, err: ErrConflict},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.build()
			err := tc.step(&b)
			if tc.err == nil && err != nil || tc.err != nil && !errors.Is(err, tc.err) {
				t.Fatalf("error = %v, want %v", err, tc.err)
			}
			if b.Status != tc.status || b.Message != tc.msg {
				t.Errorf("build = %s %q, want %s %q", b.Status, b.Message, tc.status, tc.msg)
			}
			if got := statuses(b); len(got) != len(tc.stages) || !equalStatuses(got, tc.stages) {
				t.Errorf("stages = %v, want %v", got, tc.stages)
			}
			checkInvariants(t, b)
		})
	}
}

func equalStatuses(a, b []Status) bool {
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestClaimTakeoverAndRelease(t *testing.T) {
	b := threeStages()
	if b.Claim("b", true, 9) {
		t.Fatal("b claimed a build a live runner drives")
	}
	if !b.Claim("b", false, 9) || b.Runner != "b" || b.Heartbeat != 9 {
		t.Fatalf("takeover of a stale runner: runner %q heartbeat %d", b.Runner, b.Heartbeat)
	}
	// A resumed stage keeps its start (executors adopt the same run).
	b.StartStage(0, 20)
	if b.Stages[0].Started != 1 {
		t.Errorf("resumed stage start = %d, want 1", b.Stages[0].Started)
	}
	b.Release("a")
	if b.Runner != "b" {
		t.Errorf("another instance's release took b's claim")
	}
	b.Release("b")
	if b.Runner != "" {
		t.Errorf("release left runner %q", b.Runner)
	}
	b.Wait(1, 30)
	if b.Claim("b", false, 31) {
		t.Error("claimed a waiting build")
	}
	b.Cancel(32)
	if b.Claim("b", false, 33) {
		t.Error("claimed a finished build")
	}
}
