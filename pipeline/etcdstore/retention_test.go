package etcdstore_test

import (
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/etcdstore"
)

// prunedSet records the builds a pruner reports.
type prunedSet struct {
	mu sync.Mutex
	n  []int
}

func (p *prunedSet) add(_ context.Context, _, _ string, n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.n = append(p.n, n)
}

func (p *prunedSet) sorted() []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := slices.Clone(p.n)
	slices.Sort(out)
	return out
}

func buildNumbers(t *testing.T, s pipeline.Store, owner, repo string) []int {
	t.Helper()
	bs, err := s.ListBuilds(t.Context(), owner, repo, 1000, 0)
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, b := range bs {
		out = append(out, b.Number)
	}
	slices.Sort(out)
	return out
}

func writeLog(t *testing.T, logs pipeline.LogStore, owner, repo string, build, stage int, text string) {
	t.Helper()
	w, err := logs.Create(t.Context(), pipeline.LogRef{Pipeline: pipeline.Key(owner, repo), Build: build, Stage: stage})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(w, text); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestRetentionKeepsNewestFinishedBuildsAndNeverActiveOnes(t *testing.T) {
	s := newStore(t)
	mustCreatePipeline(t, s, "Acme", "Keep")
	statuses := []pipeline.Status{
		pipeline.StatusRunning, pipeline.StatusWaiting, // 1, 2: never pruned
		pipeline.StatusSuccess, pipeline.StatusFail, pipeline.StatusCanceled, pipeline.StatusSuccess, // 3-6
		pipeline.StatusSuccess, pipeline.StatusSuccess, pipeline.StatusSuccess, pipeline.StatusSuccess, // 7-10
		pipeline.StatusPending, pipeline.StatusFail, // 11 never pruned, 12
	}
	for i, st := range statuses {
		b := pipeline.Build{Status: st}
		if i == 3 {
			b.DeliveryID = "delivery-4"
		}
		mustCreateBuild(t, s, "Acme", "Keep", b)
	}
	logs := s.Logs(etcdstore.LogOptions{})
	writeLog(t, logs, "acme", "keep", 4, 0, "old output\n")
	writeLog(t, logs, "acme", "keep", 12, 0, "new output\n")
	// Another pipeline under the limit is left alone.
	mustCreatePipeline(t, s, "acme", "small")
	mustCreateBuild(t, s, "acme", "small", pipeline.Build{Status: pipeline.StatusSuccess})

	var pruned prunedSet
	r := s.StartRetention(etcdstore.RetentionConfig{KeepBuilds: 3, Batch: 2, Interval: time.Hour, SessionTTL: 2 * time.Second, OnBuildPruned: pruned.add})
	t.Cleanup(r.Stop)
	eventually(t, patience, "the first pass", func() bool { return r.Passes() >= 1 })
	if e := r.Errors(); e != 0 {
		t.Fatalf("pass errors: %d", e)
	}
	// Finished: 3-10 and 12; the newest three finished (12, 10, 9) stay,
	// with every build that is not final.
	if got, want := buildNumbers(t, s, "acme", "keep"), []int{1, 2, 9, 10, 11, 12}; !slices.Equal(got, want) {
		t.Fatalf("builds after pruning = %v, want %v", got, want)
	}
	if got, want := pruned.sorted(), []int{3, 4, 5, 6, 7, 8}; !slices.Equal(got, want) {
		t.Fatalf("OnBuildPruned got %v, want %v", got, want)
	}
	if got := r.PrunedBuilds(); got != 6 {
		t.Fatalf("PrunedBuilds = %d, want 6", got)
	}
	if got := buildNumbers(t, s, "acme", "small"); !slices.Equal(got, []int{1}) {
		t.Fatalf("small pipeline = %v, want [1]", got)
	}
	// The pruned build's logs and delivery record went with it; the kept
	// build's log stays.
	ref4 := pipeline.LogRef{Pipeline: "acme/keep", Build: 4}
	if _, err := logs.Read(t.Context(), ref4); !errors.Is(err, pipeline.ErrNotFound) {
		t.Fatalf("log of pruned build 4: err = %v, want not found", err)
	}
	if data, err := logs.Read(t.Context(), pipeline.LogRef{Pipeline: "acme/keep", Build: 12}); err != nil || string(data) != "new output\n" {
		t.Fatalf("log of kept build 12 = %q, %v", data, err)
	}
	for k := range rawValues(t, sharedClient(t), prefixOf(t)) {
		if strings.Contains(k, "delivery-4") {
			t.Fatalf("delivery record of a pruned build remains: %s", k)
		}
	}
	// Numbers continue from the counter, never from what is left.
	if b := mustCreateBuild(t, s, "acme", "keep", pipeline.Build{Status: pipeline.StatusSuccess}); b.Number != 13 {
		t.Fatalf("next build number = %d, want 13", b.Number)
	}
}

// sharedEndpoints returns the client URLs of the shared etcd.
func sharedEndpoints(t *testing.T) []string {
	t.Helper()
	sharedClient(t)
	return shared.e.Endpoints()
}

func TestRetentionPassesAgainAndPrunesBuildsThatFinishedSince(t *testing.T) {
	s := newStore(t)
	mustCreatePipeline(t, s, "acme", "again")
	for range 3 {
		mustCreateBuild(t, s, "acme", "again", pipeline.Build{Status: pipeline.StatusRunning})
	}
	for range 2 {
		mustCreateBuild(t, s, "acme", "again", pipeline.Build{Status: pipeline.StatusSuccess})
	}
	r := s.StartRetention(etcdstore.RetentionConfig{KeepBuilds: 1, Interval: 50 * time.Millisecond, SessionTTL: 2 * time.Second})
	t.Cleanup(r.Stop)
	eventually(t, patience, "build 4 pruned", func() bool { return slices.Equal(buildNumbers(t, s, "acme", "again"), []int{1, 2, 3, 5}) })
	for _, n := range []int{1, 2} {
		if _, err := s.UpdateBuild(t.Context(), "acme", "again", n, func(b *pipeline.Build) error { b.Status = pipeline.StatusFail; return nil }); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, patience, "builds 1 and 2 pruned once final", func() bool { return slices.Equal(buildNumbers(t, s, "acme", "again"), []int{3, 5}) })
	if b := mustCreateBuild(t, s, "acme", "again", pipeline.Build{}); b.Number != 6 {
		t.Fatalf("next number = %d, want 6", b.Number)
	}
}

func TestRetentionPrunesOldLogsAndKeepsTheBuild(t *testing.T) {
	s := newStore(t)
	mustCreatePipeline(t, s, "acme", "logs")
	now := time.Now()
	day := 24 * time.Hour
	at := func(d time.Duration) int64 { return now.Add(-d).UnixNano() }
	builds := []pipeline.Build{
		{Status: pipeline.StatusSuccess, Created: at(40 * day), Finished: at(40 * day)}, // 1: pruned
		{Status: pipeline.StatusWaiting, Created: at(39 * day)},                         // 2: waiting: kept
		{Status: pipeline.StatusFail, Created: at(35 * day), Finished: at(35 * day)},    // 3: pruned (after a waiting one)
		{Status: pipeline.StatusSuccess, Created: at(35 * day), Finished: at(1 * day)},  // 4: finished recently: kept
		{Status: pipeline.StatusSuccess, Created: at(2 * day), Finished: at(2 * day)},   // 5: young: kept
	}
	for _, b := range builds {
		mustCreateBuild(t, s, "acme", "logs", b)
	}
	raw := s.Logs(etcdstore.LogOptions{})
	for n := 1; n <= 5; n++ {
		writeLog(t, raw, "acme", "logs", n, 0, "stage 0\n")
		writeLog(t, raw, "acme", "logs", n, 1, "stage 1\n")
	}
	logs := s.PruneAware(raw, 30*day)
	var pruned prunedSet
	r := s.StartRetention(etcdstore.RetentionConfig{KeepLogs: 30 * day, Batch: 2, Interval: 50 * time.Millisecond, SessionTTL: 2 * time.Second, OnLogsPruned: pruned.add})
	t.Cleanup(r.Stop)
	eventually(t, patience, "two passes", func() bool { return r.Passes() >= 2 })
	if e := r.Errors(); e != 0 {
		t.Fatalf("pass errors: %d", e)
	}
	if got := pruned.sorted(); !slices.Equal(got, []int{1, 3}) {
		t.Fatalf("logs pruned of builds %v, want [1 3] (once each)", got)
	}
	for n := 1; n <= 5; n++ {
		if _, err := s.GetBuild(t.Context(), "acme", "logs", n); err != nil {
			t.Fatalf("build %d is gone: %v", n, err)
		}
		for stage := range 2 {
			ref := pipeline.LogRef{Pipeline: "acme/logs", Build: n, Stage: stage}
			data, err := logs.Read(t.Context(), ref)
			ferr := logs.Follow(t.Context(), ref, func([]byte) error { return nil })
			if n == 1 || n == 3 {
				if !errors.Is(err, pipeline.ErrLogPruned) || !errors.Is(ferr, pipeline.ErrLogPruned) {
					t.Fatalf("build %d stage %d: Read err = %v, Follow err = %v; want log pruned", n, stage, err, ferr)
				}
				if msg := pipeline.PublicMessage(err); !strings.Contains(msg, "log pruned") || !strings.Contains(msg, "--keep-logs") {
					t.Fatalf("message %q does not say the log was pruned", msg)
				}
				continue
			}
			if err != nil || !strings.HasPrefix(string(data), "stage ") {
				t.Fatalf("build %d stage %d: kept log = %q, %v", n, stage, data, err)
			}
		}
	}
	// A stage that never wrote a log is plain "not found", not pruned.
	if _, err := logs.Read(t.Context(), pipeline.LogRef{Pipeline: "acme/logs", Build: 5, Stage: 7}); !errors.Is(err, pipeline.ErrNotFound) || errors.Is(err, pipeline.ErrLogPruned) {
		t.Fatalf("missing log: err = %v, want not found without pruned", err)
	}
	// Once the waiting build finishes long ago (by the pruner's clock),
	// its logs go too.
	if _, err := s.UpdateBuild(t.Context(), "acme", "logs", 2, func(b *pipeline.Build) error {
		b.Status, b.Finished = pipeline.StatusCanceled, at(31*day)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	eventually(t, patience, "build 2's logs pruned", func() bool { return slices.Equal(pruned.sorted(), []int{1, 2, 3}) })
}

func TestRetentionRunsOnOneServerAtATimeAndFailsOver(t *testing.T) {
	// Two servers: two clients and two stores on one etcd and one prefix.
	prefix := prefixOf(t)
	ends := sharedEndpoints(t)
	open := func() *etcdstore.Cached {
		cli, err := etcdstore.Connect(t.Context(), etcdstore.ClientConfig{Endpoints: ends})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cli.Close() }) // closing at the end: nothing to do on error
		return newStoreWith(t, cli, etcdstore.Options{Prefix: prefix})
	}
	a, b := open(), open()
	mustCreatePipeline(t, a, "acme", "two")
	add := func(n int) {
		for range n {
			mustCreateBuild(t, a, "acme", "two", pipeline.Build{Status: pipeline.StatusSuccess})
		}
	}
	add(5)
	cfg := etcdstore.RetentionConfig{KeepBuilds: 2, Interval: 50 * time.Millisecond, SessionTTL: 2 * time.Second}
	cfg.Identity = "a"
	ra := a.StartRetention(cfg)
	cfg.Identity = "b"
	rb := b.StartRetention(cfg)
	stopped := map[*etcdstore.Retention]bool{}
	t.Cleanup(func() {
		for _, r := range []*etcdstore.Retention{ra, rb} {
			if !stopped[r] {
				r.Stop()
			}
		}
	})
	eventually(t, patience, "builds pruned to the newest two", func() bool { return slices.Equal(buildNumbers(t, a, "acme", "two"), []int{4, 5}) })
	lead, other := ra, rb
	if rb.Leader() {
		lead, other = rb, ra
	}
	if !lead.Leader() {
		t.Fatal("no server leads after pruning")
	}
	// Several passes later the other still has not pruned or passed.
	p := lead.Passes()
	eventually(t, patience, "more passes by the leader", func() bool { return lead.Passes() >= p+3 })
	if other.Leader() || other.Passes() != 0 || other.PrunedBuilds() != 0 {
		t.Fatalf("the other server pruned too: leader=%v passes=%d pruned=%d", other.Leader(), other.Passes(), other.PrunedBuilds())
	}
	if lead.PrunedBuilds() != 3 {
		t.Fatalf("leader pruned %d builds, want 3", lead.PrunedBuilds())
	}
	// The leader stops: the other takes over and prunes what comes next.
	lead.Stop()
	stopped[lead] = true
	add(3)
	eventually(t, patience, "the other server takes over", func() bool { return other.Leader() })
	eventually(t, patience, "the other server prunes", func() bool { return slices.Equal(buildNumbers(t, a, "acme", "two"), []int{7, 8}) })
	// The counter moves just after the delete commits: a reader of the
	// store can see the deletion first, so wait for it too.
	eventually(t, patience, "the other server counts what it pruned", func() bool { return other.PrunedBuilds() >= 3 })
	if other.PrunedBuilds() != 3 {
		t.Fatalf("the new leader pruned %d builds, want 3", other.PrunedBuilds())
	}
	if b := mustCreateBuild(t, b, "acme", "two", pipeline.Build{}); b.Number != 9 {
		t.Fatalf("next number = %d, want 9", b.Number)
	}
}
