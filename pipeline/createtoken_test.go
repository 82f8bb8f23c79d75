package pipeline_test

import (
	"testing"

	"github.com/kontinuous/kontinuous/pipeline"
)

// A pipeline created while another request (or server) refreshes the
// creator's Bitbucket token keeps the rotated pair stored: the create
// read the pair before the refresh, and writing that copy back would
// store a spent refresh token (Bitbucket refuses it with invalid_grant
// and the connection shows "expired"). Both ways a Bitbucket pipeline is
// created: signed in with Bitbucket, and from a GitHub session with
// Bitbucket linked.
func TestCreatePipelineKeepsTheTokenPairARefreshRotatedMeanwhile(t *testing.T) {
	for _, tc := range []struct {
		name   string
		linked bool
	}{
		{"signed in with Bitbucket", false},
		{"Bitbucket linked to a GitHub session", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newLinkWorld(t)
			ctx := t.Context()
			// The caller as the request resolved them, before the refresh.
			c := pipeline.Caller{UserID: w.bbUser.ID, Login: "alice", Token: w.bbUser.Token}
			req := pipeline.NewPipeline{Owner: "acme", Repo: "app", Events: []string{"push"}}
			if tc.linked {
				c, req.Forge = w.github, "bitbucket"
			}
			var rotated pipeline.ForgeToken
			w.store.onFirstGetPipeline = func() {
				// A concurrent refresh, as FreshToken does it elsewhere:
				// the forge rotates the pair and the new one is stored.
				cur, err := w.store.GetUser(ctx, w.bbUser.ID)
				if err != nil {
					t.Error(err)
					return
				}
				if rotated, err = w.bbf.Refresh(ctx, cur.Token); err != nil {
					t.Error(err)
					return
				}
				cur.Token = rotated
				if err := w.store.PutUser(ctx, cur); err != nil {
					t.Error(err)
				}
			}
			p, err := w.svc.CreatePipeline(ctx, c, req)
			if err != nil {
				t.Fatal(err)
			}
			if p.OwnerUserID != w.bbUser.ID || rotated.RefreshToken == "" {
				t.Fatalf("pipeline owned by %s; the refresh ran: %v", p.OwnerUserID, rotated.RefreshToken != "")
			}
			got, err := w.store.GetUser(ctx, w.bbUser.ID)
			if err != nil {
				t.Fatal(err)
			}
			if got.Token.RefreshToken != rotated.RefreshToken || got.Token.AccessToken != rotated.AccessToken {
				t.Fatalf("after the create the store holds the pair the request read (%v), not the rotated one",
					got.Token.RefreshToken == w.bbUser.Token.RefreshToken)
			}
			// The stored pair still refreshes.
			if _, err := w.bbf.Refresh(ctx, got.Token); err != nil {
				t.Fatalf("refreshing the stored pair: %v", err)
			}
		})
	}
}

// A token the request brought (a JWT's identities[0].access_token) is
// still stored at create: the pipeline's builds use the owner's stored
// token.
func TestCreatePipelineStoresTheTokenTheRequestBrought(t *testing.T) {
	w := newLinkWorld(t)
	ctx := t.Context()
	c := w.github
	c.Token = pipeline.ForgeToken{AccessToken: "tok-alice-from-jwt"}
	w.gh.AddUser("alice", 1001, "tok-alice-from-jwt")
	if _, err := w.svc.CreatePipeline(ctx, c, pipeline.NewPipeline{Owner: "acme", Repo: "app", Events: []string{"push"}}); err != nil {
		t.Fatal(err)
	}
	got, err := w.store.GetUser(ctx, c.UserID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Token.AccessToken != "tok-alice-from-jwt" {
		t.Fatalf("stored token %q, want the one the request brought", got.Token.AccessToken)
	}
}
