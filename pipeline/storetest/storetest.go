// Package storetest is the contract test suite of pipeline.Store: every
// implementation (the etcd store, the in-memory store) runs the same
// checks, so that tests written against one hold for the other.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/kontinuous/kontinuous/pipeline"
)

// Run checks the store contract on fresh stores made by newStore (one per
// subtest; each must start empty).
func Run(t *testing.T, newStore func(t *testing.T) pipeline.Store) {
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, pipeline.Store)
	}{
		{"Users", users},
		{"PipelineCreateGetConflict", pipelineCreateGetConflict},
		{"PipelineUpdateKeepsIdentity", pipelineUpdateKeepsIdentity},
		{"BuildNumbersUniqueGapFreeConcurrent", buildNumbersConcurrent},
		{"BuildOfMissingPipeline", buildOfMissingPipeline},
		{"DuplicateDeliveryReturnsFirstBuild", duplicateDelivery},
		{"UpdateBuildKeepsIdentity", updateBuildKeepsIdentity},
		{"ListBuildsPagesNewestFirst", listBuildsPages},
		{"LatestBuildAndActiveBuilds", latestAndActive},
		{"NumbersNeverReused", numbersNeverReused},
		{"Secrets", secrets},
		{"WatchBuild", watchBuild},
		{"UnlinkUserRemovesBothLinksAndTheAccount", unlinkUser},
		{"UnlinkUserKeepsAnAccountLinkedToAThirdUser", unlinkUserThirdIdentity},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newStore(t)) })
	}
}

func wantErr(t *testing.T, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("error %v, want %v", err, target)
	}
}

// must(v, err)(t) is v, failing t on err.
func must[T any](v T, err error) func(*testing.T) T {
	return func(t *testing.T) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func newPipeline(t *testing.T, s pipeline.Store, owner, repo string) pipeline.Pipeline {
	t.Helper()
	return must(s.CreatePipeline(t.Context(), pipeline.Pipeline{Owner: owner, Repo: repo, Events: []string{"push"}}))(t)
}

func newBuild(t *testing.T, s pipeline.Store, b pipeline.Build) pipeline.Build {
	t.Helper()
	return must(s.CreateBuild(t.Context(), "acme", "app", b))(t)
}

func users(t *testing.T, s pipeline.Store) {
	ctx := t.Context()
	_, err := s.GetUser(ctx, "github|1")
	wantErr(t, err, pipeline.ErrNotFound)
	u := pipeline.User{ID: "github|1", Login: "alice", Token: pipeline.ForgeToken{AccessToken: "tok"}}
	if err := s.PutUser(ctx, u); err != nil {
		t.Fatal(err)
	}
	got := must(s.GetUser(ctx, "github|1"))(t)
	if got.Login != "alice" || got.Token.AccessToken != "tok" {
		t.Fatalf("got %+v", got)
	}
}

// unlinkUser: a store that links accounts (pipeline.LinkStore) unlinks
// them both ways and deletes the disconnected account with its tokens,
// leaving the signed-in user as it was; it refuses to unlink an account
// the link no longer points to.
func unlinkUser(t *testing.T, s pipeline.Store) {
	ls, ok := s.(pipeline.LinkStore)
	if !ok {
		t.Skip("the store does not link accounts")
	}
	ctx := t.Context()
	const gh, bb, bb2 = "github|1", "bitbucket|{0b3c}", "bitbucket|{77aa}"
	for _, id := range []string{gh, bb} {
		if err := s.PutUser(ctx, pipeline.User{ID: id, Login: "alice", Token: pipeline.ForgeToken{AccessToken: "at-" + id, RefreshToken: "rt"}}); err != nil {
			t.Fatal(err)
		}
	}
	_, err := ls.UnlinkUser(ctx, gh, "bitbucket", bb)
	wantErr(t, err, pipeline.ErrNotFound)
	if err := ls.LinkUsers(ctx, gh, bb); err != nil {
		t.Fatal(err)
	}
	// The link is to bb, not bb2 (as when it changed since it was read):
	// nothing is unlinked or deleted.
	_, err = ls.UnlinkUser(ctx, gh, "bitbucket", bb2)
	wantErr(t, err, pipeline.ErrConflict)
	if links := must(ls.LinkedUsers(ctx, gh))(t); links["bitbucket"] != bb {
		t.Fatalf("links of %s after a refused unlink: %v", gh, links)
	}
	must(s.GetUser(ctx, bb))(t)
	if deleted := must(ls.UnlinkUser(ctx, gh, "bitbucket", bb))(t); !deleted {
		t.Fatalf("unlinking %s's only link kept its user", bb)
	}
	for _, id := range []string{gh, bb} {
		if links := must(ls.LinkedUsers(ctx, id))(t); len(links) != 0 {
			t.Errorf("links of %s after unlink: %v", id, links)
		}
	}
	_, err = s.GetUser(ctx, bb)
	wantErr(t, err, pipeline.ErrNotFound)
	if u := must(s.GetUser(ctx, gh))(t); u.Token.AccessToken != "at-"+gh {
		t.Errorf("the signed-in user changed: %+v", u)
	}
	_, err = ls.UnlinkUser(ctx, gh, "bitbucket", bb)
	wantErr(t, err, pipeline.ErrNotFound)
	// Linked again, it unlinks from the other side as well.
	if err := ls.LinkUsers(ctx, gh, bb); err != nil {
		t.Fatal(err)
	}
	if deleted := must(ls.UnlinkUser(ctx, bb, "github", gh))(t); !deleted {
		t.Fatalf("unlinking %s's only link kept its user", gh)
	}
	if links := must(ls.LinkedUsers(ctx, gh))(t); len(links) != 0 {
		t.Errorf("links of %s after unlink from the other side: %v", gh, links)
	}
	_, err = s.GetUser(ctx, gh)
	wantErr(t, err, pipeline.ErrNotFound)
}

// unlinkUserThirdIdentity: a Bitbucket account linked to a GitHub user
// and to a Data Center user, unlinked from the GitHub user, stays linked
// to the Data Center user with its user and tokens (that connection
// keeps working, and no link dangles); unlinked from the last one, it is
// deleted.
func unlinkUserThirdIdentity(t *testing.T, s pipeline.Store) {
	ls, ok := s.(pipeline.LinkStore)
	if !ok {
		t.Skip("the store does not link accounts")
	}
	ctx := t.Context()
	const gh, bb, dc = "github|1", "bitbucket|{0b3c}", "bitbucket-dc|3"
	for _, id := range []string{gh, bb, dc} {
		if err := s.PutUser(ctx, pipeline.User{ID: id, Login: "alice", Token: pipeline.ForgeToken{AccessToken: "at-" + id, RefreshToken: "rt"}}); err != nil {
			t.Fatal(err)
		}
	}
	for _, other := range []string{gh, dc} {
		if err := ls.LinkUsers(ctx, other, bb); err != nil {
			t.Fatal(err)
		}
	}
	if deleted := must(ls.UnlinkUser(ctx, gh, "bitbucket", bb))(t); deleted {
		t.Fatalf("unlinking %s from %s deleted it, though %s still links it", bb, gh, dc)
	}
	if u, err := s.GetUser(ctx, bb); err != nil || u.Token.AccessToken != "at-"+bb {
		t.Fatalf("%s's user after unlinking it from %s: %+v, %v", bb, gh, u, err)
	}
	if links := must(ls.LinkedUsers(ctx, gh))(t); len(links) != 0 {
		t.Errorf("links of %s after unlink: %v", gh, links)
	}
	if links := must(ls.LinkedUsers(ctx, bb))(t); len(links) != 1 || links["bitbucket-dc"] != dc {
		t.Errorf("links of %s after unlinking %s: %v, want only bitbucket-dc: %s", bb, gh, links, dc)
	}
	if links := must(ls.LinkedUsers(ctx, dc))(t); len(links) != 1 || links["bitbucket"] != bb {
		t.Errorf("links of %s after unlinking %s: %v, want bitbucket: %s", dc, gh, links, bb)
	}
	// Its last link removed, the account is deleted.
	if deleted := must(ls.UnlinkUser(ctx, dc, "bitbucket", bb))(t); !deleted {
		t.Fatalf("unlinking %s's last link kept its user", bb)
	}
	_, err := s.GetUser(ctx, bb)
	wantErr(t, err, pipeline.ErrNotFound)
	for _, id := range []string{gh, bb, dc} {
		if links := must(ls.LinkedUsers(ctx, id))(t); len(links) != 0 {
			t.Errorf("links of %s after both unlinks: %v", id, links)
		}
	}
	for _, id := range []string{gh, dc} {
		must(s.GetUser(ctx, id))(t)
	}
}

func pipelineCreateGetConflict(t *testing.T, s pipeline.Store) {
	ctx := t.Context()
	_, err := s.GetPipeline(ctx, "acme", "app")
	wantErr(t, err, pipeline.ErrNotFound)
	p := newPipeline(t, s, "Acme", "App")
	if p.ID == "" || p.Created == 0 {
		t.Fatalf("created without ID or Created: %+v", p)
	}
	_, err = s.CreatePipeline(ctx, pipeline.Pipeline{Owner: "acme", Repo: "app"})
	wantErr(t, err, pipeline.ErrConflict) // owner/repo are case-insensitive
	got := must(s.GetPipeline(ctx, "acme", "APP"))(t)
	if got.ID != p.ID || got.Owner != "Acme" || got.Repo != "App" || got.LatestBuild != nil {
		t.Fatalf("got %+v, want %+v (display case kept)", got, p)
	}
	list := must(s.ListPipelines(ctx))(t)
	if len(list) != 1 || list[0].ID != p.ID {
		t.Fatalf("list %+v", list)
	}
	if err := s.DeletePipeline(ctx, "acme", "app"); err != nil {
		t.Fatal(err)
	}
	_, err = s.GetPipeline(ctx, "acme", "app")
	wantErr(t, err, pipeline.ErrNotFound)
	wantErr(t, s.DeletePipeline(ctx, "acme", "app"), pipeline.ErrNotFound)
}

func pipelineUpdateKeepsIdentity(t *testing.T, s pipeline.Store) {
	ctx := t.Context()
	p := newPipeline(t, s, "acme", "app")
	got := must(s.UpdatePipeline(ctx, "acme", "app", func(p *pipeline.Pipeline) error {
		p.ID, p.Login = "other", "bob"
		return nil
	}))(t)
	if got.ID != p.ID || got.Owner != "acme" || got.Login != "bob" {
		t.Fatalf("update: %+v", got)
	}
	if read := must(s.GetPipeline(ctx, "acme", "app"))(t); read.ID != p.ID || read.Login != "bob" {
		t.Fatalf("read back: %+v", read)
	}
	_, err := s.UpdatePipeline(ctx, "acme", "app", func(p *pipeline.Pipeline) error { p.Owner = "evil"; return nil })
	wantErr(t, err, pipeline.ErrInvalid)
	boom := errors.New("boom")
	if _, err := s.UpdatePipeline(ctx, "acme", "app", func(*pipeline.Pipeline) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("fn's error: %v", err)
	}
	_, err = s.UpdatePipeline(ctx, "acme", "nope", func(*pipeline.Pipeline) error { return nil })
	wantErr(t, err, pipeline.ErrNotFound)
}

func buildNumbersConcurrent(t *testing.T, s pipeline.Store) {
	newPipeline(t, s, "acme", "app")
	const n = 40
	var wg sync.WaitGroup
	nums := make(chan int, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b, err := s.CreateBuild(context.Background(), "acme", "app", pipeline.Build{Status: pipeline.StatusPending})
			if err != nil {
				t.Error(err)
				return
			}
			if b.ID == "" || b.Created == 0 || b.Owner != "acme" {
				t.Errorf("created build %+v", b)
			}
			nums <- b.Number
		}()
	}
	wg.Wait()
	close(nums)
	seen := map[int]bool{}
	for num := range nums {
		if seen[num] || num < 1 || num > n {
			t.Fatalf("number %d duplicated or out of 1..%d", num, n)
		}
		seen[num] = true
	}
	if len(seen) != n {
		t.Fatalf("%d numbers, want %d", len(seen), n)
	}
}

func buildOfMissingPipeline(t *testing.T, s pipeline.Store) {
	ctx := t.Context()
	_, err := s.CreateBuild(ctx, "acme", "app", pipeline.Build{})
	wantErr(t, err, pipeline.ErrNotFound)
	_, err = s.ListBuilds(ctx, "acme", "app", 10, 0)
	wantErr(t, err, pipeline.ErrNotFound)
	_, err = s.GetBuild(ctx, "acme", "app", 1)
	wantErr(t, err, pipeline.ErrNotFound)
}

func duplicateDelivery(t *testing.T, s pipeline.Store) {
	ctx := t.Context()
	newPipeline(t, s, "acme", "app")
	first := newBuild(t, s, pipeline.Build{DeliveryID: "d-1", Commit: "abc"})
	again, err := s.CreateBuild(ctx, "acme", "app", pipeline.Build{DeliveryID: "d-1", Commit: "abc"})
	wantErr(t, err, pipeline.ErrConflict)
	if again.Number != first.Number || again.ID != first.ID {
		t.Fatalf("redelivery got build %d (%s), want %d (%s)", again.Number, again.ID, first.Number, first.ID)
	}
	if next := newBuild(t, s, pipeline.Build{DeliveryID: "d-2"}); next.Number != first.Number+1 {
		t.Fatalf("next delivery got number %d, want %d (no number spent on the duplicate)", next.Number, first.Number+1)
	}
}

func updateBuildKeepsIdentity(t *testing.T, s pipeline.Store) {
	ctx := t.Context()
	newPipeline(t, s, "acme", "app")
	b := newBuild(t, s, pipeline.Build{Status: pipeline.StatusPending, DeliveryID: "d", Spec: []byte("stages: []"),
		Stages: []pipeline.Stage{{Name: "build", Params: map[string]any{"command": []any{"make"}}}}})
	got := must(s.UpdateBuild(ctx, "acme", "app", b.Number, func(x *pipeline.Build) error {
		x.ID, x.Number, x.Owner, x.DeliveryID = "x", 99, "evil", "other"
		x.Status = pipeline.StatusRunning
		x.Stages[0].Params["command"].([]any)[0] = "changed"
		return nil
	}))(t)
	if got.ID != b.ID || got.Number != b.Number || got.Owner != "acme" || got.DeliveryID != "d" || got.Status != pipeline.StatusRunning {
		t.Fatalf("updated %+v", got)
	}
	read := must(s.GetBuild(ctx, "acme", "app", b.Number))(t)
	if read.Status != pipeline.StatusRunning || string(read.Spec) != "stages: []" || read.Stages[0].Params["command"].([]any)[0] != "changed" {
		t.Fatalf("read back %+v", read)
	}
	// A caller's copy is its own.
	read.Stages[0].Name = "mutated"
	if again := must(s.GetBuild(ctx, "acme", "app", b.Number))(t); again.Stages[0].Name != "build" {
		t.Fatal("a returned build shares memory with the store")
	}
	_, err := s.UpdateBuild(ctx, "acme", "app", 42, func(*pipeline.Build) error { return nil })
	wantErr(t, err, pipeline.ErrNotFound)
}

func listBuildsPages(t *testing.T, s pipeline.Store) {
	ctx := t.Context()
	newPipeline(t, s, "acme", "app")
	if l := must(s.ListBuilds(ctx, "acme", "app", 10, 0))(t); len(l) != 0 {
		t.Fatalf("empty pipeline lists %d builds", len(l))
	}
	for i := range 7 {
		newBuild(t, s, pipeline.Build{Commit: fmt.Sprint(i), Spec: []byte("x")})
	}
	page := must(s.ListBuilds(ctx, "acme", "app", 3, 0))(t)
	if numbers(page) != "7,6,5" {
		t.Fatalf("first page %s", numbers(page))
	}
	for _, b := range page {
		if b.Revision == 0 || b.Spec != nil {
			t.Fatalf("listed build %d: Revision %d, Spec %q (want a revision, no spec)", b.Number, b.Revision, b.Spec)
		}
	}
	if got := numbers(must(s.ListBuilds(ctx, "acme", "app", 3, 5))(t)); got != "4,3,2" {
		t.Fatalf("page before 5: %s", got)
	}
	if got := numbers(must(s.ListBuilds(ctx, "acme", "app", 3, 2))(t)); got != "1" {
		t.Fatalf("page before 2: %s", got)
	}
	if got := numbers(must(s.ListBuilds(ctx, "acme", "app", 0, 0))(t)); got != "7,6,5,4,3,2,1" {
		t.Fatalf("default page: %s", got)
	}
	// A new version has a new revision.
	before := page[0].Revision
	must(s.UpdateBuild(ctx, "acme", "app", 7, func(b *pipeline.Build) error { b.Commit = "new"; return nil }))(t)
	if after := must(s.ListBuilds(ctx, "acme", "app", 1, 0))(t)[0].Revision; after == before {
		t.Fatalf("revision %d unchanged by an update", after)
	}
}

func numbers(bs []pipeline.Build) string {
	s := ""
	for i, b := range bs {
		if i > 0 {
			s += ","
		}
		s += fmt.Sprint(b.Number)
	}
	return s
}

func latestAndActive(t *testing.T, s pipeline.Store) {
	ctx := t.Context()
	newPipeline(t, s, "acme", "app")
	newBuild(t, s, pipeline.Build{Status: pipeline.StatusSuccess})
	run := newBuild(t, s, pipeline.Build{Status: pipeline.StatusRunning, Commit: "c2"})
	p := must(s.GetPipeline(ctx, "acme", "app"))(t)
	if p.LatestBuild == nil || p.LatestBuild.Number != run.Number || p.LatestBuild.Commit != "c2" {
		t.Fatalf("latest build %+v", p.LatestBuild)
	}
	active := must(s.ActiveBuilds(ctx))(t)
	if len(active) != 1 || active[0].Number != run.Number {
		t.Fatalf("active %s, want %d", numbers(active), run.Number)
	}
	must(s.UpdateBuild(ctx, "acme", "app", run.Number, func(b *pipeline.Build) error { b.Status = pipeline.StatusFail; return nil }))(t)
	if active := must(s.ActiveBuilds(ctx))(t); len(active) != 0 {
		t.Fatalf("active after the build ended: %s", numbers(active))
	}
}

func numbersNeverReused(t *testing.T, s pipeline.Store) {
	ctx := t.Context()
	newPipeline(t, s, "acme", "app")
	newBuild(t, s, pipeline.Build{})
	two := newBuild(t, s, pipeline.Build{})
	if err := s.DeleteBuild(ctx, "acme", "app", two.Number); err != nil {
		t.Fatal(err)
	}
	_, err := s.GetBuild(ctx, "acme", "app", two.Number)
	wantErr(t, err, pipeline.ErrNotFound)
	wantErr(t, s.DeleteBuild(ctx, "acme", "app", two.Number), pipeline.ErrNotFound)
	if b := newBuild(t, s, pipeline.Build{}); b.Number != 3 {
		t.Fatalf("after deleting 2: number %d, want 3", b.Number)
	}
	if err := s.DeletePipeline(ctx, "acme", "app"); err != nil {
		t.Fatal(err)
	}
	newPipeline(t, s, "acme", "app")
	if b := newBuild(t, s, pipeline.Build{}); b.Number != 4 {
		t.Fatalf("pipeline re-created: number %d, want 4 (numbering continues)", b.Number)
	}
}

func secrets(t *testing.T, s pipeline.Store) {
	ctx := t.Context()
	newPipeline(t, s, "acme", "app")
	for _, name := range []string{"b", "a"} {
		if err := s.PutSecret(ctx, "acme", "app", pipeline.SecretSet{Name: name, Data: map[string]string{"k2": "v", "k1": name}}); err != nil {
			t.Fatal(err)
		}
	}
	got := must(s.GetSecret(ctx, "acme", "app", "a"))(t)
	if got.Data["k1"] != "a" || fmt.Sprint(got.Keys) != "[k1 k2]" {
		t.Fatalf("secret %+v", got)
	}
	list := must(s.ListSecrets(ctx, "acme", "app"))(t)
	if len(list) != 2 || list[0].Name != "a" || list[1].Data["k1"] != "b" {
		t.Fatalf("list %+v", list)
	}
	if p := must(s.GetPipeline(ctx, "acme", "app"))(t); fmt.Sprint(p.Secrets) != "[a b]" {
		t.Fatalf("pipeline's secret names %v", p.Secrets)
	}
	if err := s.DeleteSecret(ctx, "acme", "app", "a"); err != nil {
		t.Fatal(err)
	}
	_, err := s.GetSecret(ctx, "acme", "app", "a")
	wantErr(t, err, pipeline.ErrNotFound)
	if p := must(s.GetPipeline(ctx, "acme", "app"))(t); fmt.Sprint(p.Secrets) != "[b]" {
		t.Fatalf("pipeline's secret names after delete %v", p.Secrets)
	}
}

func watchBuild(t *testing.T, s pipeline.Store) {
	ctx := t.Context()
	newPipeline(t, s, "acme", "app")
	b := newBuild(t, s, pipeline.Build{Status: pipeline.StatusPending})
	seen := make(chan pipeline.Status, 16)
	done := make(chan error, 1)
	go func() {
		done <- s.WatchBuild(ctx, "acme", "app", b.Number, func(b pipeline.Build) bool {
			seen <- b.Status
			return b.Status != pipeline.StatusSuccess
		})
	}()
	next := func() pipeline.Status {
		select {
		case st := <-seen:
			return st
		case <-time.After(30 * time.Second):
			t.Fatal("no version seen in 30s")
			return ""
		}
	}
	if st := next(); st != pipeline.StatusPending {
		t.Fatalf("first version %s", st)
	}
	for _, st := range []pipeline.Status{pipeline.StatusRunning, pipeline.StatusSuccess} {
		must(s.UpdateBuild(ctx, "acme", "app", b.Number, func(b *pipeline.Build) error { b.Status = st; return nil }))(t)
		for got := next(); got != st; got = next() {
			if got != pipeline.StatusPending && got != pipeline.StatusRunning {
				t.Fatalf("saw %s waiting for %s", got, st)
			}
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("watch ended with %v after fn said stop", err)
	}
	// Deletion ends a watch with ErrNotFound.
	go func() {
		done <- s.WatchBuild(ctx, "acme", "app", b.Number, func(pipeline.Build) bool { seen <- ""; return true })
	}()
	next()
	if err := s.DeleteBuild(ctx, "acme", "app", b.Number); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		wantErr(t, err, pipeline.ErrNotFound)
	case <-time.After(30 * time.Second):
		t.Fatal("watch of a deleted build did not end in 30s")
	}
	_, err := s.GetBuild(ctx, "acme", "app", b.Number)
	wantErr(t, err, pipeline.ErrNotFound)
}
