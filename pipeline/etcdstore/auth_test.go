package etcdstore_test

import (
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/etcdstore"
)

func TestUseOnceRefusesSecondUse(t *testing.T) {
	s := newStore(t)
	exp := time.Now().Add(10 * time.Minute)
	if err := s.UseOnce(t.Context(), "ks1.state-a", exp); err != nil {
		t.Fatal(err)
	}
	wantErr(t, s.UseOnce(t.Context(), "ks1.state-a", exp), pipeline.ErrConflict)
	if err := s.UseOnce(t.Context(), "ks1.state-b", exp); err != nil {
		t.Errorf("another id: %v", err)
	}
	// A second instance shares the record.
	other := newStoreWith(t, sharedClient(t), newOpts(prefixOf(t)))
	wantErr(t, other.UseOnce(t.Context(), "ks1.state-b", exp), pipeline.ErrConflict)
}

func TestUseOnceForgetsIDWhenItExpires(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	if err := s.UseOnce(t.Context(), "short", time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	// etcd's lease expiry (minimum TTL about 2s) removes the record.
	eventually(t, patience, "id usable again after expiry", func() bool {
		return s.UseOnce(t.Context(), "short", time.Now().Add(time.Minute)) == nil
	})
}

func TestRevokeIsSeenByAnotherInstanceThroughItsWatch(t *testing.T) {
	cli := sharedClient(t)
	a := newStoreWith(t, cli, newOpts(prefixOf(t)))
	b := newStoreWith(t, cli, newOpts(prefixOf(t)))
	if err := b.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if b.Revoked("jti-1") {
		t.Fatal("jti-1 revoked before Revoke")
	}
	if err := a.Revoke(t.Context(), "jti-1", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if !a.Revoked("jti-1") {
		t.Error("revoking instance does not see its own revocation at once")
	}
	eventually(t, patience, "second instance sees the revocation", func() bool { return b.Revoked("jti-1") })
	if b.Revoked("jti-2") {
		t.Error("an unrelated jti is reported revoked")
	}

	// A third instance started later loads it at Start.
	c := newStoreWith(t, cli, newOpts(prefixOf(t)))
	if err := c.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if !c.Revoked("jti-1") {
		t.Error("instance started after the revocation does not load it")
	}
}

func TestRevocationLapsesAfterTokenExpiry(t *testing.T) {
	t.Parallel()
	cli := sharedClient(t)
	a := newStoreWith(t, cli, newOpts(prefixOf(t)))
	b := newStoreWith(t, cli, newOpts(prefixOf(t)))
	if err := b.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	// Kept for two minutes of leeway past expiry: this one lapses in ~2s.
	exp := time.Now().Add(-2*time.Minute + 2*time.Second)
	if err := a.Revoke(t.Context(), "lapsing", exp); err != nil {
		t.Fatal(err)
	}
	eventually(t, patience, "second instance sees the revocation", func() bool { return b.Revoked("lapsing") })
	eventually(t, patience, "revocation lapses", func() bool { return !a.Revoked("lapsing") && !b.Revoked("lapsing") })
	// Revoking a token long expired stores nothing and is harmless.
	if err := a.Revoke(t.Context(), "old", time.Now().Add(-time.Hour)); err != nil {
		t.Errorf("Revoke of an expired token: %v", err)
	}
}

// storeGoroutines counts the goroutines running a store's watches (the
// revocation watch and the read cache).
func storeGoroutines() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "etcdstore.(*Store).watchRevoked") || strings.Contains(g, "etcdstore.(*Cached).runReadCache") {
			count++
		}
	}
	return count
}

// Not parallel: it counts the store goroutines of the whole process (the
// stores of tests before it were closed by their clean-ups).
func TestStoreCloseStopsWatchAndIsIdempotent(t *testing.T) {
	base := storeGoroutines()
	prefix := prefixOf(t)
	s := etcdstore.NewCached(etcdstore.New(sharedClient(t), testBox(t), etcdstore.Options{Prefix: prefix, OpTimeout: patience}), etcdstore.CacheOptions{})
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(t.Context()); err != nil {
		t.Errorf("second Start: %v", err)
	}
	if got := storeGoroutines(); got != base+2 {
		t.Fatalf("after Start: %d store goroutines, want %d (one revocation watch, one read cache)", got, base+2)
	}
	// Watching: another store's revocation arrives.
	other := newStoreWith(t, sharedClient(t), newOpts(prefix))
	if err := other.Revoke(t.Context(), "before-close", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	eventually(t, patience, "the store sees a revocation while watching", func() bool { return s.Revoked("before-close") })
	running := storeGoroutines() // s's and other's

	closed := make(chan struct{})
	go func() {
		s.Close()
		s.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(patience):
		t.Fatal("Close did not return")
	}
	// Close waits for its goroutines: none is left.
	if got := storeGoroutines(); got != running-2 {
		t.Fatalf("after Close: %d store goroutines, want %d (the other store's)", got, running-2)
	}
	// And nothing arrives any more: a revocation that a third, watching
	// store has seen never reaches the closed one.
	if err := other.Revoke(t.Context(), "after-close", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	witness := newStoreWith(t, sharedClient(t), newOpts(prefix))
	eventually(t, patience, "a watching store sees the later revocation", func() bool { return witness.Revoked("after-close") })
	if s.Revoked("after-close") {
		t.Fatal("a closed store still applies revocations from its watch")
	}
}
