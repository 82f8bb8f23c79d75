package pipeline

import (
	"fmt"

	"github.com/kontinuous/kontinuous/pipeline/spec"
)

// This file holds the build state machine: every transition of a Build as
// a pure method (no store, no clock: the time is an argument), so that the
// engine's store updates only call them and the rules can be tested on
// plain structs.
//
//	PENDING ──Start──▶ RUNNING ──StartStage/EndStage(SUCCESS)──▶ … ──Succeed──▶ SUCCESS
//	   │                  │ ╲──Wait──▶ WAITING ──Approve──▶ RUNNING
//	   │                  │ ╲──EndStage(FAIL)/Fail/FailRunning──▶ FAIL
//	   └──────────────────┴───Cancel (or RequestCancel, then Cancel)──▶ CANCELED
//	SUCCESS/FAIL/CANCELED ──RunFrom──▶ PENDING
//
// Invariant (checked by end): a finished build has no runner, no pending
// cancel request, and its Finished time is set.

// end is the one place a build becomes finished: it enforces the
// invariant of finished builds.
func (b *Build) end(status Status, now int64) {
	b.Status = status
	if b.Finished == 0 {
		b.Finished = now
	}
	b.Runner = ""
	if b.CancelRequested {
		b.CancelRequested = false
		if b.Message == cancelRequestedMessage {
			b.Message = ""
		}
	}
}

// skipRest gives every stage of b still PENDING its final status,
// SKIPPED, with msg: the build ended and they will never run.
func (b *Build) skipRest(msg string, now int64) {
	for i := range b.Stages {
		if s := &b.Stages[i]; s.Status == StatusPending {
			s.Status, s.Message, s.Finished = StatusSkipped, msg, now
		}
	}
}

// cancelRequested reports whether b is being canceled or was canceled.
func (b *Build) cancelRequested() bool {
	return b.Status == StatusCanceled || (!b.Status.Done() && b.CancelRequested)
}

// Claim makes instance the build's runner unless the build cannot run
// (finished or waiting) or another instance drives it (otherLive). It
// reports whether instance now runs the build.
func (b *Build) Claim(instance string, otherLive bool, now int64) bool {
	if b.Status.Done() || b.Status == StatusWaiting {
		return false
	}
	if b.Runner != "" && b.Runner != instance && otherLive {
		return false
	}
	b.Runner = instance
	b.Heartbeat = now
	return true
}

// Release gives up instance's claim on the build (the server stops): the
// next start, or another instance, takes it over at once.
func (b *Build) Release(instance string) {
	if b.Runner == instance {
		b.Runner = ""
	}
}

// Start lays out the stages read from the build's spec and starts the
// build at its first stage.
func (b *Build) Start(stages []Stage, now int64) {
	b.Stages = stages
	b.Status = StatusRunning
	b.Started = now
	b.CurrentStage = 0
}

// StartStage makes stage position i RUNNING. A stage still RUNNING is
// being resumed (a restart or a takeover): it keeps its start, by which
// executors recognise and adopt the work of the same run.
func (b *Build) StartStage(i int, now int64) {
	s := &b.Stages[i]
	resumed := s.Status == StatusRunning && s.Started != 0
	s.Status = StatusRunning
	if !resumed {
		s.Started = now
	}
	s.Finished = 0
	s.Message = ""
	b.Status = StatusRunning
	b.CurrentStage = i
	if b.Started == 0 {
		b.Started = now
	}
}

// EndStage records the end of stage position i with status and msg (a
// pending cancel turns it into CANCELED): a success moves the build to
// the next stage, a failure or a cancel ends the build. It returns the
// status and message the stage got.
func (b *Build) EndStage(i int, status Status, msg string, now int64) (Status, string) {
	s := &b.Stages[i]
	if b.cancelRequested() {
		status, msg = StatusCanceled, canceledMessage
	}
	s.Status, s.Message, s.Finished = status, msg, now
	switch status {
	case StatusSuccess:
		if i+1 < len(b.Stages) {
			b.CurrentStage = i + 1
		}
	case StatusFail:
		b.Message = fmt.Sprintf("stage %d %q failed: %s", s.Index, s.Name, msg)
		b.skipRest(skippedAfterFailure, now)
		b.end(StatusFail, now)
	case StatusCanceled:
		b.Cancel(now)
	}
	return status, msg
}

// Wait pauses the build at wait stage position i until it is approved.
func (b *Build) Wait(i int, now int64) {
	s := &b.Stages[i]
	s.Status = StatusWaiting
	if s.Started == 0 {
		s.Started = now
	}
	if msg, ok := s.Params["message"].(string); ok {
		s.Message = msg
	}
	b.Status = StatusWaiting
	b.CurrentStage = i
	b.Runner = ""
}

// Approve ends the WAITING wait stage index (1-based, as in the API)
// successfully and makes the build runnable again.
func (b *Build) Approve(index int, now int64) error {
	i := stagePos(b, index)
	if i < 0 {
		return Errorf(ErrNotFound, "build %d has no stage %d", b.Number, index)
	}
	s := &b.Stages[i]
	if s.Type != spec.TypeWait || s.Status != StatusWaiting || b.Status != StatusWaiting {
		return Errorf(ErrConflict, "stage %d is %s, not a waiting wait stage", index, s.Status)
	}
	s.Status = StatusSuccess
	s.Finished = now
	b.Status = StatusRunning
	b.Runner = ""
	if i+1 < len(b.Stages) {
		b.CurrentStage = i + 1
	}
	return nil
}

// Succeed ends a build whose stages all succeeded.
func (b *Build) Succeed(now int64) {
	b.end(StatusSuccess, now)
}

// Fail ends the build FAIL with msg before or between stages: stages not
// yet run are skipped.
func (b *Build) Fail(msg string, now int64) {
	b.skipRest(skippedAfterError, now)
	b.Message = msg
	b.end(StatusFail, now)
}

// FailRunning ends the build FAIL with msg, its RUNNING stages with it
// (the run that drove them died, e.g. it panicked). It returns the
// positions of the stages it ended.
func (b *Build) FailRunning(msg string, now int64) []int {
	var changed []int
	for i := range b.Stages {
		if s := &b.Stages[i]; s.Status == StatusRunning {
			s.Status, s.Message, s.Finished = StatusFail, msg, now
			changed = append(changed, i)
		}
	}
	b.Fail(msg, now)
	return changed
}

// RequestCancel cancels a build that has not ended. A build a live
// runner drives (runnerLive) is only marked for cancel: its runner stops
// the running stage and ends the build. Any other build ends CANCELED at
// once (Cancel); ended reports that, and changed lists the stages it
// canceled.
func (b *Build) RequestCancel(runnerLive bool, now int64) (ended bool, changed []int, err error) {
	if b.Status.Done() {
		return false, nil, Errorf(ErrConflict, "build %d already ended (%s)", b.Number, b.Status)
	}
	if b.cancelRequested() {
		return false, nil, Errorf(ErrConflict, "build %d is already being canceled", b.Number)
	}
	if runnerLive {
		b.CancelRequested, b.Message = true, cancelRequestedMessage
		return false, nil, nil
	}
	return true, b.Cancel(now), nil
}

// Cancel ends b as CANCELED: its running and waiting stages, and the
// current stage if it has not started, become CANCELED; the stages after
// them are skipped. It returns the positions of the stages it canceled.
func (b *Build) Cancel(now int64) []int {
	var changed []int
	for i := range b.Stages {
		s := &b.Stages[i]
		if s.Status == StatusRunning || s.Status == StatusWaiting || (s.Status == StatusPending && i == b.CurrentStage) {
			s.Status = StatusCanceled
			s.Finished = now
			s.Message = canceledMessage
			changed = append(changed, i)
		}
	}
	b.skipRest(skippedAfterCancel, now)
	b.end(StatusCanceled, now)
	return changed
}

// RunFrom makes a finished build run again from stage index (1-based) on:
// that stage and the later ones go back to PENDING. Every earlier stage
// must have succeeded.
func (b *Build) RunFrom(index int) error {
	if !b.Status.Done() {
		return Errorf(ErrConflict, "build %d is %s; it can be re-run once it ends", b.Number, b.Status)
	}
	i := stagePos(b, index)
	if i < 0 {
		return Errorf(ErrNotFound, "build %d has no stage %d", b.Number, index)
	}
	for j := 0; j < i; j++ {
		if s := b.Stages[j]; s.Status != StatusSuccess {
			return Errorf(ErrConflict, "stage %d %q is %s: a build re-runs from a stage only when every earlier stage succeeded", s.Index, s.Name, s.Status)
		}
	}
	for j := i; j < len(b.Stages); j++ {
		s := &b.Stages[j]
		s.Status, s.Started, s.Finished, s.Message = StatusPending, 0, 0, ""
		s.JobName, s.PodName = "", ""
	}
	b.Status = StatusPending
	b.CurrentStage = i
	b.Finished = 0
	b.Message = ""
	b.Runner = ""
	return nil
}

// stagePos is the position in b.Stages of the stage with index, or -1.
func stagePos(b *Build, index int) int {
	for i := range b.Stages {
		if b.Stages[i].Index == index {
			return i
		}
	}
	return -1
}
