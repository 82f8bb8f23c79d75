package etcdstore_test

import (
	"crypto/sha256"
	"encoding/hex"
	"sync"
	"testing"
	"time"

	"github.com/kontinuous/kontinuous/pipeline"
)

func h(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func TestOAuth1RequestTokenIsTakenOnceUnderConcurrency(t *testing.T) {
	s := newStore(t)
	ctx := t.Context()
	req := pipeline.OAuth1Request{TokenHash: h("rt"), ConsumerKey: "bb", Callback: "https://bb.example.com/cb", Expires: time.Now().Add(10 * time.Minute).UnixNano()}
	if err := s.CreateOAuth1Request(ctx, req); err != nil {
		t.Fatal(err)
	}
	wantErr(t, s.CreateOAuth1Request(ctx, req), pipeline.ErrConflict)
	got, err := s.UpdateOAuth1Request(ctx, req.TokenHash, func(r *pipeline.OAuth1Request) error {
		r.UserID, r.VerifierHash = "github|1003", h("v")
		return nil
	})
	if err != nil || got.UserID != "github|1003" {
		t.Fatalf("%+v %v", got, err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	won := 0
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if r, err := s.TakeOAuth1Request(ctx, req.TokenHash); err == nil && r.VerifierHash == h("v") {
				mu.Lock()
				won++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if won != 1 {
		t.Fatalf("%d takers got the request token, want 1", won)
	}
	_, err = s.GetOAuth1Request(ctx, req.TokenHash)
	wantErr(t, err, pipeline.ErrNotFound)
}

func TestOAuth1GrantsAreListedPerUserAndDeletedWithBothKeys(t *testing.T) {
	s := newStore(t)
	ctx := t.Context()
	for i, g := range []pipeline.OAuth1Grant{
		{TokenHash: h("a1"), ConsumerKey: "bb", UserID: "github|1", Login: "a", Created: 1},
		{TokenHash: h("a2"), ConsumerKey: "other", UserID: "github|1", Login: "a", Created: 2},
		{TokenHash: h("b1"), ConsumerKey: "bb", UserID: "github|2", Login: "b", Created: 3},
	} {
		if err := s.PutOAuth1Grant(ctx, g); err != nil {
			t.Fatal(i, err)
		}
	}
	gs, err := s.ListOAuth1Grants(ctx, "github|1")
	if err != nil || len(gs) != 2 {
		t.Fatalf("%+v %v", gs, err)
	}
	n, err := s.DeleteOAuth1Grants(ctx, "github|1", func(g pipeline.OAuth1Grant) bool { return g.ConsumerKey == "bb" })
	if err != nil || n != 1 {
		t.Fatalf("deleted %d: %v", n, err)
	}
	_, err = s.GetOAuth1Grant(ctx, h("a1"))
	wantErr(t, err, pipeline.ErrNotFound)
	if _, err := s.GetOAuth1Grant(ctx, h("b1")); err != nil {
		t.Fatalf("another user's grant: %v", err)
	}
	// Every user's grants of a consumer (the operator removed it).
	n, err = s.DeleteOAuth1Grants(ctx, "", func(g pipeline.OAuth1Grant) bool { return g.ConsumerKey == "other" })
	if err != nil || n != 1 {
		t.Fatalf("pruned %d: %v", n, err)
	}
	gs, err = s.ListOAuth1Grants(ctx, "github|1")
	if err != nil || len(gs) != 0 {
		t.Fatalf("left %+v %v", gs, err)
	}
}
