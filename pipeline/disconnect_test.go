package pipeline_test

import (
	"errors"
	"strings"
	"sync"
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

// A create running as alice's linked account while she disconnects it
// fails, and leaves nothing: no pipeline owned by the removed account, its
// user not stored again, no webhook or deploy key on the forge. Both ways
// round (GitHub session with Bitbucket linked, and the reverse: a GitHub
// token has no refresh token, which a create used to write back), with
// the Disconnect held just before it unlinks (after its pipeline check
// found none, holding the account's lock: the create must not store its
// pipeline meanwhile) or run to its end while the create is under way.
func TestACreateAsALinkedAccountFailsWhenItIsDisconnectedMeanwhile(t *testing.T) {
	for _, tc := range []struct {
		name     string
		bbToGH   bool // a Bitbucket session creating on GitHub
		complete bool // the Disconnect runs to its end, not held
	}{
		{"GitHub session, Bitbucket linked, Disconnect held", false, false},
		{"GitHub session, Bitbucket linked, Disconnect done", false, true},
		{"Bitbucket session, GitHub linked, Disconnect held", true, false},
		{"Bitbucket session, GitHub linked, Disconnect done", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newLinkWorld(t)
			ctx := t.Context()
			session, forge, account := w.github, "bitbucket", w.bbUser.ID
			left := func() (int, int) { return len(w.repo.Hooks()), len(w.repo.DeployKeys()) }
			if tc.bbToGH {
				session = pipeline.Caller{UserID: w.bbUser.ID, Login: "alice", Token: w.bbUser.Token}
				forge, account = "github", w.github.UserID
				left = func() (int, int) { return len(w.gh.Hooks("acme", "app")), len(w.gh.DeployKeys("acme", "app")) }
			}
			unlinking, release := make(chan struct{}), make(chan struct{})
			createWaits := make(chan struct{})
			if !tc.complete {
				w.store.beforeUnlink = func() {
					close(unlinking)
					<-release
				}
				var once sync.Once
				w.store.beforeLock = func(id string) {
					select {
					case <-unlinking: // Disconnect took its lock before: this is the create's
					default:
						return
					}
					if id == account {
						once.Do(func() { close(createWaits) })
					}
				}
			}
			disconnected := make(chan error, 1)
			// The create has resolved alice's linked account when it first
			// reads the pipeline: the Disconnect runs then.
			w.store.onFirstGetPipeline = func() {
				if tc.complete {
					disconnected <- w.svc.Disconnect(ctx, session.UserID, forge)
					return
				}
				go func() { disconnected <- w.svc.Disconnect(ctx, session.UserID, forge) }()
				<-unlinking
			}
			created := make(chan error, 1)
			go func() {
				_, err := w.svc.CreatePipeline(ctx, session, pipeline.NewPipeline{Owner: "acme", Repo: "app", Events: []string{"push"}, Forge: forge})
				created <- err
			}()
			timeout := time.After(30 * time.Second) // only a hung test waits this long
			if !tc.complete {
				select {
				case <-createWaits: // for the lock the Disconnect holds
				case err := <-created:
					t.Errorf("the create ended (%v) while the Disconnect was between its pipeline check and its unlink", err)
					created <- err
				case <-timeout:
					t.Fatal("the create neither waited for the lock nor ended")
				}
				close(release)
			}
			select {
			case err := <-disconnected:
				if err != nil {
					t.Fatalf("Disconnect: %v", err)
				}
			case <-timeout:
				t.Fatal("Disconnect hung")
			}
			var createErr error
			select {
			case createErr = <-created:
			case <-timeout:
				t.Fatal("the create hung")
			}
			if _, err := w.store.GetUser(ctx, account); !errors.Is(err, pipeline.ErrNotFound) {
				t.Errorf("the disconnected account's user: %v", err)
			}
			if p, err := w.store.Store.GetPipeline(ctx, "acme", "app"); err == nil {
				t.Errorf("a pipeline is stored, owned by %s (the removed account: %v)", p.OwnerUserID, p.OwnerUserID == account)
			}
			if !errors.Is(createErr, pipeline.ErrConflict) || !strings.Contains(pipeline.PublicMessage(createErr), forge+" connection was removed while the pipeline was created") {
				t.Errorf("the create: %v, want a conflict saying the connection was removed", createErr)
			}
			if hooks, keys := left(); hooks != 0 || keys != 0 {
				t.Errorf("left on %s: %d hooks, %d deploy keys", forge, hooks, keys)
			}
		})
	}
}
