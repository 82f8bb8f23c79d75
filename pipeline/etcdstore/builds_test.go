package etcdstore_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/etcdstore"
)

func fullBuild() pipeline.Build {
	return pipeline.Build{
		ID:           "build-uuid",
		Number:       1234, // replaced by the allocated number
		Status:       pipeline.StatusRunning,
		Created:      1_700_000_000_000_000_001,
		Started:      1_700_000_000_000_000_002,
		Finished:     1_700_000_000_000_000_003,
		CurrentStage: 1,
		Branch:       "main",
		Commit:       "0123456789abcdef0123456789abcdef01234567",
		Author:       "wile",
		Event:        pipeline.EventPush,
		CloneURL:     "https://github.example/Acme/Rocket.git",
		Stages: []pipeline.Stage{{
			ID: "s1", Name: "test", Type: "command", Index: 1,
			Params:  map[string]any{"command": []any{"go", "test"}, "timeout": float64(60)},
			Labels:  map[string]string{"tier": "unit"},
			Started: 1, Finished: 2, Message: "ok", Status: pipeline.StatusSuccess,
			PodNamespace: "ns", JobName: "job", PodName: "pod", DockerImage: "golang:1.26",
			Artifacts: []string{"bin/app"}, Secrets: []string{"creds"}, Vars: map[string]string{"A": "b"},
		}},
		Owner:           "ignored",
		Repo:            "ignored",
		DeliveryID:      "72d3162e-cc78-11e3-81ab-4c9367dc0958",
		Fork:            true,
		Message:         "why it failed",
		Spec:            []byte("apiVersion: v1alpha1\nkind: Pipeline\n"),
		Runner:          "server-a",
		Heartbeat:       1_700_000_000_000_000_004,
		CancelRequested: true,
	}
}

func TestBuildRoundTripKeepsEveryField(t *testing.T) {
	s := newStore(t)
	mustCreatePipeline(t, s, "Acme", "Rocket")
	in := fullBuild()
	requireAllFieldsSet(t, in, "Revision") // set by lists, not stored

	created, err := s.CreateBuild(t.Context(), "acme", "rocket", in)
	if err != nil {
		t.Fatal(err)
	}
	want := in
	want.Number, want.Owner, want.Repo = 1, "Acme", "Rocket"
	if diff := cmp.Diff(want, created); diff != "" {
		t.Errorf("CreateBuild result (-want +got):\n%s", diff)
	}
	got, err := s.GetBuild(t.Context(), "acme", "rocket", 1)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("GetBuild (-want +got):\n%s", diff)
	}
}

func TestCreateBuildSetsIDAndCreated(t *testing.T) {
	s := newStore(t)
	mustCreatePipeline(t, s, "acme", "app")
	a := mustCreateBuild(t, s, "acme", "app", pipeline.Build{})
	b := mustCreateBuild(t, s, "acme", "app", pipeline.Build{})
	if a.ID == "" || a.ID == b.ID || a.Created == 0 {
		t.Errorf("builds got ID %q / %q, Created %d: want distinct IDs and a creation time", a.ID, b.ID, a.Created)
	}
}

func TestCreateBuildForMissingPipelineIsNotFound(t *testing.T) {
	s := newStore(t)
	_, err := s.CreateBuild(t.Context(), "acme", "missing", pipeline.Build{})
	wantErr(t, err, pipeline.ErrNotFound)
}

func TestConcurrentCreateBuildNumbersAreUniqueAndGapFree(t *testing.T) {
	s := newStore(t)
	mustCreatePipeline(t, s, "acme", "app")
	const n = 50
	numbers := make([]int, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			b, err := s.CreateBuild(t.Context(), "acme", "app", pipeline.Build{Author: fmt.Sprint(i)})
			numbers[i], errs[i] = b.Number, err
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	slices.Sort(numbers)
	for i, got := range numbers {
		if got != i+1 {
			t.Fatalf("sorted numbers = %v, want exactly 1..%d", numbers, n)
		}
	}
	list, err := s.ListBuilds(t.Context(), "acme", "app", 100, 0)
	if err != nil || len(list) != n {
		t.Fatalf("ListBuilds: %d builds, %v; want %d", len(list), err, n)
	}
}

func TestConcurrentUpdateBuildLosesNoUpdate(t *testing.T) {
	s := newStore(t)
	mustCreatePipeline(t, s, "acme", "app")
	mustCreateBuild(t, s, "acme", "app", pipeline.Build{Status: pipeline.StatusRunning})
	const n = 20
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			_, errs[i] = s.UpdateBuild(t.Context(), "acme", "app", 1, func(b *pipeline.Build) error {
				b.Stages = append(b.Stages, pipeline.Stage{Name: fmt.Sprintf("marker-%d", i)})
				return nil
			})
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	b, err := s.GetBuild(t.Context(), "acme", "app", 1)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, st := range b.Stages {
		names = append(names, st.Name)
	}
	slices.Sort(names)
	var want []string
	for i := range n {
		want = append(want, fmt.Sprintf("marker-%d", i))
	}
	slices.Sort(want)
	if diff := cmp.Diff(want, names); diff != "" {
		t.Errorf("markers after concurrent updates (-want +got):\n%s", diff)
	}
}

func TestUpdateBuildKeepsIdentity(t *testing.T) {
	s := newStore(t)
	mustCreatePipeline(t, s, "Acme", "App")
	orig := mustCreateBuild(t, s, "acme", "app", pipeline.Build{DeliveryID: "d1"})
	got, err := s.UpdateBuild(t.Context(), "acme", "app", 1, func(b *pipeline.Build) error {
		b.ID, b.Number, b.Owner, b.Repo, b.DeliveryID = "x", 9, "o", "r", "d2"
		b.Status = pipeline.StatusRunning
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != orig.ID || got.Number != 1 || got.Owner != "Acme" || got.Repo != "App" || got.DeliveryID != "d1" {
		t.Errorf("identity changed: %+v", got)
	}
	if got.Status != pipeline.StatusRunning {
		t.Errorf("status = %s, want RUNNING", got.Status)
	}
	_, err = s.UpdateBuild(t.Context(), "acme", "app", 2, func(*pipeline.Build) error { return nil })
	wantErr(t, err, pipeline.ErrNotFound)
	_, err = s.UpdateBuild(t.Context(), "acme", "app", 0, func(*pipeline.Build) error { return nil })
	wantErr(t, err, pipeline.ErrInvalid)
}

func TestDuplicateDeliveryReturnsOriginalBuildWithoutNewNumber(t *testing.T) {
	s := newStore(t)
	mustCreatePipeline(t, s, "acme", "app")
	first := mustCreateBuild(t, s, "acme", "app", pipeline.Build{DeliveryID: "delivery-1", Commit: "aaa"})

	again, err := s.CreateBuild(t.Context(), "ACME", "app", pipeline.Build{DeliveryID: "delivery-1", Commit: "bbb"})
	wantErr(t, err, pipeline.ErrConflict)
	if again.Number != first.Number || again.ID != first.ID || again.Commit != "aaa" {
		t.Errorf("duplicate delivery returned %+v, want the original build %d", again, first.Number)
	}
	next := mustCreateBuild(t, s, "acme", "app", pipeline.Build{DeliveryID: "delivery-2"})
	if next.Number != 2 {
		t.Errorf("next build number = %d, want 2 (the duplicate must not consume one)", next.Number)
	}
	// The same delivery id on another pipeline is another delivery.
	mustCreatePipeline(t, s, "acme", "other")
	if _, err := s.CreateBuild(t.Context(), "acme", "other", pipeline.Build{DeliveryID: "delivery-1"}); err != nil {
		t.Errorf("delivery id of another pipeline: %v", err)
	}
}

func TestConcurrentDuplicateDeliveriesMakeOneBuild(t *testing.T) {
	s := newStore(t)
	mustCreatePipeline(t, s, "acme", "app")
	const n = 10
	var wg sync.WaitGroup
	numbers := make([]int, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			b, err := s.CreateBuild(t.Context(), "acme", "app", pipeline.Build{DeliveryID: "same"})
			numbers[i], errs[i] = b.Number, err
		})
	}
	wg.Wait()
	created := 0
	for i := range n {
		switch {
		case errs[i] == nil:
			created++
		case !errors.Is(errs[i], pipeline.ErrConflict):
			t.Fatalf("CreateBuild: %v", errs[i])
		}
		if numbers[i] != 1 {
			t.Errorf("goroutine %d got build %d, want 1", i, numbers[i])
		}
	}
	if created != 1 {
		t.Errorf("%d builds created for one delivery, want 1", created)
	}
}

func TestDeleteBuildNeverReusesNumber(t *testing.T) {
	s := newStore(t)
	mustCreatePipeline(t, s, "acme", "app")
	mustCreateBuild(t, s, "acme", "app", pipeline.Build{})
	mustCreateBuild(t, s, "acme", "app", pipeline.Build{DeliveryID: "dd"})
	if err := s.DeleteBuild(t.Context(), "acme", "app", 2); err != nil {
		t.Fatal(err)
	}
	_, err := s.GetBuild(t.Context(), "acme", "app", 2)
	wantErr(t, err, pipeline.ErrNotFound)
	wantErr(t, s.DeleteBuild(t.Context(), "acme", "app", 2), pipeline.ErrNotFound)

	b := mustCreateBuild(t, s, "acme", "app", pipeline.Build{})
	if b.Number != 3 {
		t.Errorf("build after deleting #2 got number %d, want 3", b.Number)
	}
	// The deleted build's delivery no longer de-duplicates.
	r := mustCreateBuild(t, s, "acme", "app", pipeline.Build{DeliveryID: "dd"})
	if r.Number != 4 {
		t.Errorf("redelivery of a deleted build's delivery got %d, want 4", r.Number)
	}
}

func TestListBuildsPagesNewestFirst(t *testing.T) {
	s := newStore(t)
	mustCreatePipeline(t, s, "acme", "app")
	mustCreatePipeline(t, s, "acme", "app-x") // neighbour: its builds must not show
	for range 7 {
		mustCreateBuild(t, s, "acme", "app", pipeline.Build{})
	}
	mustCreateBuild(t, s, "acme", "app-x", pipeline.Build{})
	if err := s.DeleteBuild(t.Context(), "acme", "app", 4); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name          string
		limit, before int
		want          []int
	}{
		{"first page", 3, 0, []int{7, 6, 5}},
		{"next page skips deleted", 3, 5, []int{3, 2, 1}},
		{"before 2", 3, 2, []int{1}},
		{"before 1 is empty", 3, 1, []int{}},
		{"default limit", 0, 0, []int{7, 6, 5, 3, 2, 1}},
		{"before beyond newest", 2, 100, []int{7, 6}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			list, err := s.ListBuilds(t.Context(), "Acme", "App", tc.limit, tc.before)
			if err != nil {
				t.Fatal(err)
			}
			got := []int{}
			for _, b := range list {
				got = append(got, b.Number)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("numbers (-want +got):\n%s", diff)
			}
		})
	}
	_, err := s.ListBuilds(t.Context(), "acme", "missing", 0, 0)
	wantErr(t, err, pipeline.ErrNotFound)
}

func TestActiveBuildsListsUnfinishedBuildsOfEveryPipeline(t *testing.T) {
	s := newStore(t)
	mustCreatePipeline(t, s, "acme", "a")
	mustCreatePipeline(t, s, "acme", "b")
	mustCreateBuild(t, s, "acme", "a", pipeline.Build{Status: pipeline.StatusPending})  // a#1
	mustCreateBuild(t, s, "acme", "a", pipeline.Build{Status: pipeline.StatusSuccess})  // a#2
	mustCreateBuild(t, s, "acme", "b", pipeline.Build{Status: pipeline.StatusRunning})  // b#1
	mustCreateBuild(t, s, "acme", "b", pipeline.Build{Status: pipeline.StatusWaiting})  // b#2
	mustCreateBuild(t, s, "acme", "b", pipeline.Build{Status: pipeline.StatusCanceled}) // b#3

	active := func() []string {
		t.Helper()
		list, err := s.ActiveBuilds(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		out := []string{}
		for _, b := range list {
			out = append(out, fmt.Sprintf("%s#%d", b.Repo, b.Number))
		}
		slices.Sort(out)
		return out
	}
	if diff := cmp.Diff([]string{"a#1", "b#1", "b#2"}, active()); diff != "" {
		t.Errorf("active builds (-want +got):\n%s", diff)
	}
	setStatus := func(repo string, n int, st pipeline.Status) {
		t.Helper()
		if _, err := s.UpdateBuild(t.Context(), "acme", repo, n, func(b *pipeline.Build) error { b.Status = st; return nil }); err != nil {
			t.Fatal(err)
		}
	}
	setStatus("b", 1, pipeline.StatusFail)
	setStatus("a", 2, pipeline.StatusRunning) // restarted
	setStatus("b", 2, pipeline.StatusRunning) // still active
	if err := s.DeleteBuild(t.Context(), "acme", "a", 1); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"a#2", "b#2"}, active()); diff != "" {
		t.Errorf("active builds after updates (-want +got):\n%s", diff)
	}
}

func TestWatchBuildSeesEachNewVersionUntilStopped(t *testing.T) {
	s := newStore(t)
	mustCreatePipeline(t, s, "acme", "app")
	mustCreateBuild(t, s, "acme", "app", pipeline.Build{Status: pipeline.StatusPending})

	seen := make(chan pipeline.Status, 10)
	done := make(chan error, 1)
	go func() {
		done <- s.WatchBuild(t.Context(), "acme", "app", 1, func(b pipeline.Build) bool {
			seen <- b.Status
			return !b.Status.Done()
		})
	}()
	next := func() pipeline.Status {
		t.Helper()
		select {
		case st := <-seen:
			return st
		case <-time.After(patience):
			t.Fatal("no version seen")
			return ""
		}
	}
	if st := next(); st != pipeline.StatusPending {
		t.Fatalf("first value = %s, want the current PENDING", st)
	}
	for _, st := range []pipeline.Status{pipeline.StatusRunning, pipeline.StatusSuccess} {
		if _, err := s.UpdateBuild(t.Context(), "acme", "app", 1, func(b *pipeline.Build) error { b.Status = st; return nil }); err != nil {
			t.Fatal(err)
		}
		if got := next(); got != st {
			t.Fatalf("watch saw %s, want %s", got, st)
		}
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("WatchBuild = %v, want nil after fn returned false", err)
		}
	case <-time.After(patience):
		t.Fatal("WatchBuild did not return after fn returned false")
	}
}

func TestWatchBuildEndsWithContextOrDeletion(t *testing.T) {
	s := newStore(t)
	mustCreatePipeline(t, s, "acme", "app")
	mustCreateBuild(t, s, "acme", "app", pipeline.Build{})
	mustCreateBuild(t, s, "acme", "app", pipeline.Build{})

	t.Run("canceled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		started := make(chan struct{})
		done := make(chan error, 1)
		go func() {
			done <- s.WatchBuild(ctx, "acme", "app", 1, func(pipeline.Build) bool { close(started); return true })
		}()
		<-started
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) || errors.Is(err, pipeline.ErrUnavailable) {
				t.Errorf("WatchBuild after cancel = %v, want context.Canceled", err)
			}
		case <-time.After(patience):
			t.Fatal("WatchBuild did not return after cancel")
		}
	})
	t.Run("deleted", func(t *testing.T) {
		started := make(chan struct{})
		done := make(chan error, 1)
		go func() {
			done <- s.WatchBuild(t.Context(), "acme", "app", 2, func(pipeline.Build) bool { close(started); return true })
		}()
		<-started
		if err := s.DeleteBuild(t.Context(), "acme", "app", 2); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-done:
			wantErr(t, err, pipeline.ErrNotFound)
		case <-time.After(patience):
			t.Fatal("WatchBuild did not return after the build was deleted")
		}
	})
	t.Run("missing", func(t *testing.T) {
		err := s.WatchBuild(t.Context(), "acme", "app", 99, func(pipeline.Build) bool { return true })
		wantErr(t, err, pipeline.ErrNotFound)
	})
}

func TestActiveBuildsSkipsAnUnreadableRecord(t *testing.T) {
	cli := sharedClient(t)
	prefix := prefixOf(t)
	s := newPlainWith(t, cli, newOpts(prefix))
	mustCreatePipeline(t, s, "acme", "a")
	mustCreateBuild(t, s, "acme", "a", pipeline.Build{Status: pipeline.StatusRunning}) // a#1
	mustCreateBuild(t, s, "acme", "a", pipeline.Build{Status: pipeline.StatusPending}) // a#2
	// Find build 1's record by its content and break it.
	var key string
	for k, v := range rawValues(t, cli, prefix) {
		if strings.Contains(v, `"number":1,`) && strings.Contains(v, `"status":"RUNNING"`) {
			key = k
		}
	}
	if key == "" {
		t.Fatal("build 1's record not found")
	}
	if _, err := cli.Put(t.Context(), key, "{not json"); err != nil {
		t.Fatal(err)
	}
	list, err := s.ActiveBuilds(t.Context())
	if err != nil {
		t.Fatalf("one unreadable record failed the whole list: %v", err)
	}
	if len(list) != 1 || list[0].Number != 2 {
		t.Fatalf("active builds = %+v, want build 2 only", list)
	}
}

func TestListedBuildsCarryTheirRecordsRevision(t *testing.T) {
	for _, tc := range []struct {
		name string
		open func(t *testing.T) pipeline.Store
	}{
		{"plain", func(t *testing.T) pipeline.Store { return newPlainWith(t, sharedClient(t), newOpts(prefixOf(t))) }},
		{"cached", func(t *testing.T) pipeline.Store { return newStore(t) }},
		{"cached-consistent", func(t *testing.T) pipeline.Store {
			return newCachedWith(t, sharedClient(t), newOpts(prefixOf(t)), etcdstore.CacheOptions{LinearizableReads: true})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.open(t)
			mustCreatePipeline(t, s, "acme", "app")
			mustCreateBuild(t, s, "acme", "app", pipeline.Build{Status: pipeline.StatusPending})
			mustCreateBuild(t, s, "acme", "app", pipeline.Build{Status: pipeline.StatusPending})
			revs := func() map[int]int64 {
				t.Helper()
				list, err := s.ListBuilds(t.Context(), "acme", "app", 10, 0)
				if err != nil {
					t.Fatal(err)
				}
				out := map[int]int64{}
				for _, b := range list {
					if b.Revision == 0 {
						t.Fatalf("build %d listed without a revision", b.Number)
					}
					out[b.Number] = b.Revision
				}
				return out
			}
			first := revs()
			if again := revs(); !maps.Equal(first, again) {
				t.Fatalf("unchanged builds changed revision: %v then %v", first, again)
			}
			if _, err := s.UpdateBuild(t.Context(), "acme", "app", 1, func(b *pipeline.Build) error { b.Status = pipeline.StatusRunning; return nil }); err != nil {
				t.Fatal(err)
			}
			after := revs()
			if after[1] <= first[1] || after[2] != first[2] {
				t.Fatalf("after updating build 1: %v (before %v)", after, first)
			}
		})
	}
}

// Builds recorded while builds carried stage-token hashes still read,
// and a build written now no longer records them.
func TestBuildRecordedWithStageTokensStillReads(t *testing.T) {
	cli := sharedClient(t)
	prefix := prefixOf(t)
	s := newCachedWith(t, cli, etcdstore.Options{Prefix: prefix}, etcdstore.CacheOptions{LinearizableReads: true})
	mustCreatePipeline(t, s, "acme", "app")
	made := mustCreateBuild(t, s, "acme", "app", pipeline.Build{Status: pipeline.StatusRunning, Branch: "main"})
	var key, value string
	for k, v := range rawValues(t, cli, prefix) {
		if strings.Contains(v, `"number":1,`) && strings.Contains(v, `"status":"RUNNING"`) {
			key, value = k, v
		}
	}
	if key == "" {
		t.Fatal("build 1's record not found")
	}
	if strings.Contains(value, "stage_tokens") {
		t.Errorf("a new build record still holds stage_tokens: %s", value)
	}
	old := strings.Replace(value, `{`, `{"stage_tokens":{"1":"sha256:abc","2":"sha256:def"},`, 1)
	if _, err := cli.Put(t.Context(), key, old); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetBuild(t.Context(), "acme", "app", made.Number)
	if err != nil {
		t.Fatalf("a record holding stage_tokens no longer reads: %v", err)
	}
	if got.Status != pipeline.StatusRunning || got.Branch != "main" {
		t.Errorf("old record read as %+v", got)
	}
}
