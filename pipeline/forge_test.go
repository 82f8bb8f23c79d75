package pipeline_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/kontinuous/kontinuous/pipeline"
)

// namedForge is a forge that claims requests carrying X-<name>-Event.
type namedForge struct {
	pipeline.Forge
	name      string
	refreshed int
}

func (f *namedForge) Name() string { return f.name }

func (f *namedForge) Delivery(r *http.Request) (pipeline.WebhookRequest, bool, error) {
	ev := r.Header.Get("X-" + f.name + "-Event")
	return pipeline.WebhookRequest{Event: ev}, ev != "", nil
}

func (f *namedForge) Refresh(_ context.Context, tok pipeline.ForgeToken) (pipeline.ForgeToken, error) {
	f.refreshed++
	if tok.RefreshToken == "bad" {
		return pipeline.ForgeToken{}, pipeline.Errorf(pipeline.ErrUnauthorized, "refused")
	}
	return pipeline.ForgeToken{AccessToken: "new", Expiry: time.Now().Add(time.Hour)}, nil
}

func TestForgesRegistryFindsForgesByNameUserAndDelivery(t *testing.T) {
	a, b := &namedForge{name: "alpha"}, &namedForge{name: "beta"}
	r := pipeline.NewForges(a, nil, b)
	if r.Default() != a || len(r.Names()) != 2 || r.Names()[1] != "beta" {
		t.Fatalf("default %v, names %v", r.Default(), r.Names())
	}
	if f, ok := r.ForUser("beta|42"); !ok || f != b {
		t.Errorf("ForUser(beta|42) = %v, %v", f, ok)
	}
	for _, id := range []string{"gamma|1", "42", ""} {
		if _, ok := r.ForUser(id); ok {
			t.Errorf("ForUser(%q) found a forge", id)
		}
	}
	req := httptest.NewRequest(http.MethodPost, "/x", nil)
	if _, _, ok, _ := r.Delivery(req); ok {
		t.Error("a request without a forge's header was claimed")
	}
	req.Header.Set("X-beta-Event", "push")
	f, wr, ok, err := r.Delivery(req)
	if !ok || err != nil || f != b || wr.Forge != "beta" || wr.Event != "push" {
		t.Errorf("Delivery = %v, %+v, %v, %v", f, wr, ok, err)
	}
	if pipeline.NewForges().Default() != nil {
		t.Error("an empty registry has a default")
	}
}

// users is an in-memory pipeline.UserStore.
type users map[string]pipeline.User

func (u users) GetUser(_ context.Context, id string) (pipeline.User, error) {
	if x, ok := u[id]; ok {
		return x, nil
	}
	return pipeline.User{}, pipeline.ErrNotFound
}

func (u users) PutUser(_ context.Context, x pipeline.User) error { u[x.ID] = x; return nil }

func TestFreshTokenRefreshesOnlyExpiringRefreshableTokensAndStoresThem(t *testing.T) {
	f := &namedForge{name: "alpha"}
	soon, later := time.Now().Add(10*time.Second), time.Now().Add(time.Hour)
	cases := []struct {
		name      string
		tok       pipeline.ForgeToken
		want      string
		refreshes int
		err       error
	}{
		{"no expiry (OAuth app token)", pipeline.ForgeToken{AccessToken: "old", RefreshToken: "r"}, "old", 0, nil},
		{"expires later", pipeline.ForgeToken{AccessToken: "old", RefreshToken: "r", Expiry: later}, "old", 0, nil},
		{"expiring without refresh token", pipeline.ForgeToken{AccessToken: "old", Expiry: soon}, "old", 0, nil},
		{"expiring", pipeline.ForgeToken{AccessToken: "old", RefreshToken: "r", Expiry: soon}, "new", 1, nil},
		{"refresh refused", pipeline.ForgeToken{AccessToken: "old", RefreshToken: "bad", Expiry: soon}, "", 1, pipeline.ErrUnauthorized},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f.refreshed = 0
			us := users{}
			u := pipeline.User{ID: "alpha|1", Login: "a", Token: tc.tok}
			us[u.ID] = u
			got, err := pipeline.FreshToken(t.Context(), f, us, u)
			if got.AccessToken != tc.want || !errors.Is(err, tc.err) || (tc.err == nil && err != nil) || f.refreshed != tc.refreshes {
				t.Fatalf("FreshToken = %q, %v after %d refreshes", got.AccessToken, err, f.refreshed)
			}
			stored := us[u.ID].Token
			if tc.want == "new" && (stored.AccessToken != "new" || stored.RefreshToken != "r") {
				t.Errorf("stored %+v, want the new token keeping the refresh token", stored)
			}
			if tc.err != nil {
				// A refused refresh marks the connection expired.
				tc.tok.Expired = true
			}
			if tc.want != "new" && stored != tc.tok {
				t.Errorf("stored token changed to %+v", stored)
			}
		})
	}
}
