package auth

import (
	"crypto/rsa"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/kontinuous/kontinuous/pipeline"
)

func TestRememberedTokenIsStillRefusedOnceRevokedHereOrElsewhere(t *testing.T) {
	store := &memRevocations{m: map[string]time.Time{}}
	v, err := NewVerifier(t.Context(), VerifierConfig{Secret: testSecret, Revocations: store})
	if err != nil {
		t.Fatal(err)
	}
	iss, err := NewIssuer(IssuerConfig{Secret: testSecret, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	a, _, _ := iss.Issue(pipeline.User{ID: "github|1", Login: "a"})
	b, _, _ := iss.Issue(pipeline.User{ID: "github|1", Login: "a"})
	var ids []Identity
	for _, tok := range []string{a, b, a, b} { // the second round is answered from the cache
		id, err := v.Verify(t.Context(), tok)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if ids[0] != ids[2] || ids[1] != ids[3] || ids[0].TokenID == ids[1].TokenID {
		t.Fatalf("remembered identities differ from the verified ones: %v", ids)
	}
	if _, _, ok := v.cache.get(a, time.Now()); !ok {
		t.Fatal("an accepted token was not remembered")
	}
	// Revoked through this verifier (logout here).
	if err := v.Revoke(t.Context(), ids[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(t.Context(), a); pipeline.PublicMessage(err) != "token revoked" {
		t.Errorf("remembered token revoked here: %v, want token revoked", err)
	}
	// Revoked on another server: only the shared store knows.
	store.m[ids[1].TokenID] = ids[1].Expires
	if _, err := v.Verify(t.Context(), b); pipeline.PublicMessage(err) != "token revoked" {
		t.Errorf("remembered token revoked elsewhere: %v, want token revoked", err)
	}
}

func TestRememberedTokenIsNeverAcceptedPastItsExp(t *testing.T) {
	var c tokenCache
	now := time.Now()
	id := Identity{UserID: "github|1", Expires: now.Add(10 * time.Second)}
	c.put("tok", id, "", now)
	if _, _, ok := c.get("tok", now.Add(9*time.Second)); !ok {
		t.Fatal("not remembered before exp")
	}
	if _, _, ok := c.get("tok", id.Expires); ok {
		t.Error("remembered at exp")
	}
	// A long-lived token is remembered for tokenCacheTTL at most.
	long := Identity{UserID: "github|1", Expires: now.Add(24 * time.Hour)}
	c.put("long", long, "", now)
	if _, _, ok := c.get("long", now.Add(tokenCacheTTL)); ok {
		t.Error("remembered past tokenCacheTTL")
	}
	// An expired one is not remembered at all.
	c.put("old", Identity{UserID: "github|1", Expires: now.Add(-time.Second)}, "", now)
	if _, _, ok := c.get("old", now); ok {
		t.Error("expired token remembered")
	}
	for k := range c.m {
		if strings.Contains(string(k[:]), "tok") {
			t.Error("the cache keeps the token itself, not its hash")
		}
	}
}

func TestTokenCacheStaysBounded(t *testing.T) {
	var c tokenCache
	now := time.Now()
	id := Identity{UserID: "github|1", Expires: now.Add(time.Hour)}
	for i := range 3 * tokenCacheSize {
		c.put("tok-"+itoa(int64(i)), id, "", now)
		if len(c.m) > tokenCacheSize {
			t.Fatalf("%d tokens remembered, bound %d", len(c.m), tokenCacheSize)
		}
	}
	if _, _, ok := c.get("tok-"+itoa(3*tokenCacheSize-1), now); !ok {
		t.Error("the newest token is not remembered")
	}
}

func TestRefusedTokenIsNotRemembered(t *testing.T) {
	v, err := NewVerifier(t.Context(), VerifierConfig{Secret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	bad := sign(t, jwt.SigningMethodHS256, []byte("another-secret-another-secret-xx"), nil, legacyClaims("github|1", "", time.Now().Add(time.Hour)))
	for range 2 {
		if _, err := v.Verify(t.Context(), bad); !errors.Is(err, pipeline.ErrUnauthorized) {
			t.Fatalf("Verify = %v, want ErrUnauthorized", err)
		}
	}
	if len(v.cache.m) != 0 {
		t.Errorf("%d refused tokens remembered", len(v.cache.m))
	}
}

func TestRememberedAuth0TokenIsRefusedOnceItsKeyLeavesTheJWKS(t *testing.T) {
	s := newAuth0Setup(t, nil)
	k0, k1 := testRSAKey(t, 0), testRSAKey(t, 1)
	old := sign(t, jwt.SigningMethodRS256, k0, map[string]any{"kid": "k0"}, s.rsClaims("github|1"))
	for range 2 {
		if _, err := s.v.Verify(t.Context(), old); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, ok := s.v.cache.get(old, time.Now()); !ok {
		t.Fatal("an accepted Auth0 token was not remembered")
	}
	s.jwks.setKeys([]string{"k1"}, []*rsa.PrivateKey{k1})
	// A token naming k1 makes the verifier fetch the new set (k0 gone).
	if _, err := s.v.Verify(t.Context(), sign(t, jwt.SigningMethodRS256, k1, map[string]any{"kid": "k1"}, s.rsClaims("github|1"))); err != nil {
		t.Fatal(err)
	}
	if _, err := s.v.Verify(t.Context(), old); !errors.Is(err, pipeline.ErrUnauthorized) {
		t.Fatalf("remembered k0 token after k0 left the JWKS = %v, want ErrUnauthorized", err)
	}
}
