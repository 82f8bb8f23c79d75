package pipeline_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/kontinuous/kontinuous/pipeline"
)

// Disconnect removes a linked account with its tokens, and refuses what
// would leave the user without an identity or pipelines without a token.
func TestDisconnectRemovesTheLinkedAccountOnlyWhenNothingNeedsIt(t *testing.T) {
	w := newLinkWorld(t)
	ctx := t.Context()
	gh, bb := w.github.UserID, w.bbUser.ID
	for _, tc := range []struct {
		user, forge string
		want        error
		says        string
	}{
		{gh, "gitlab", pipeline.ErrNotFound, "not a forge"},
		{gh, "", pipeline.ErrNotFound, "not a forge"},
		{gh, "github", pipeline.ErrConflict, "signed in with github"},
		{bb, "bitbucket", pipeline.ErrConflict, "signed in with bitbucket"},
	} {
		err := w.svc.Disconnect(ctx, tc.user, tc.forge)
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("Disconnect(%s, %q) = %v, want %v saying %q", tc.user, tc.forge, err, tc.want, tc.says)
		}
	}
	if _, err := w.svc.CreatePipeline(ctx, w.github, pipeline.NewPipeline{Owner: "acme", Repo: "app", Events: []string{"push"}, Forge: "bitbucket"}); err != nil {
		t.Fatal(err)
	}
	err := w.svc.Disconnect(ctx, gh, "bitbucket")
	if !errors.Is(err, pipeline.ErrConflict) || !strings.Contains(err.Error(), "acme/app") {
		t.Fatalf("with a pipeline on Bitbucket: %v", err)
	}
	if _, err := w.store.GetUser(ctx, bb); err != nil {
		t.Fatalf("a refused disconnect removed the account: %v", err)
	}
	c, err := w.svc.Authorize(ctx, w.github, "acme", "app", pipeline.PermAdmin)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.svc.DeletePipeline(ctx, c, "acme", "app"); err != nil {
		t.Fatal(err)
	}
	if err := w.svc.Disconnect(ctx, gh, "bitbucket"); err != nil {
		t.Fatal(err)
	}
	if _, err := w.store.GetUser(ctx, bb); !errors.Is(err, pipeline.ErrNotFound) {
		t.Errorf("the account's user (tokens) after disconnect: %v", err)
	}
	if conns, err := pipeline.Connections(ctx, w.store, gh); err != nil || len(conns) != 1 || conns[0].Forge != "github" {
		t.Errorf("connections after disconnect: %+v, %v", conns, err)
	}
	if err := w.svc.Disconnect(ctx, gh, "bitbucket"); !errors.Is(err, pipeline.ErrNotFound) {
		t.Errorf("second disconnect: %v", err)
	}
}

// A refresh that read the user before its connection was removed, and
// gets the lock after, stores nothing: the removed tokens stay removed.
func TestFreshTokenOfARemovedConnectionStoresNothing(t *testing.T) {
	f := &namedForge{name: "alpha"}
	us := users{}
	u := pipeline.User{ID: "alpha|1", Login: "a", Token: pipeline.ForgeToken{AccessToken: "old", RefreshToken: "r", Expiry: time.Now().Add(10 * time.Second)}}
	_, err := pipeline.FreshToken(t.Context(), f, us, u)
	if !errors.Is(err, pipeline.ErrUnauthorized) || f.refreshed != 0 || len(us) != 0 {
		t.Fatalf("FreshToken = %v after %d refreshes; stored %v", err, f.refreshed, us)
	}
}
