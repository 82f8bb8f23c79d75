package auth

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"log/slog"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/kontinuous/kontinuous/pipeline"
)

const testAudience = "https://kontinuous.example/api"

// auth0Setup is a verifier with Auth0 on, against a stand-in tenant whose
// JWKS holds key 0 as "k0".
type auth0Setup struct {
	v     *Verifier
	jwks  *jwksServer
	decoy *decoy
}

func newAuth0Setup(t *testing.T, rev RevocationStore) auth0Setup {
	t.Helper()
	js := newJWKSServer(t)
	js.setKeys([]string{"k0"}, []*rsa.PrivateKey{testRSAKey(t, 0)})
	v, err := NewVerifier(t.Context(), VerifierConfig{
		Secret:        testSecret,
		Auth0Issuer:   js.issuer(),
		Auth0Audience: testAudience,
		Revocations:   rev,
		Logger:        slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatalf("NewVerifier: %v", err)
	}
	return auth0Setup{v: v, jwks: js, decoy: newDecoy(t)}
}

func (s auth0Setup) rsClaims(sub string) jwt.MapClaims {
	now := time.Now()
	return jwt.MapClaims{
		"iss": s.jwks.issuer(), "sub": sub, "aud": []any{testAudience, "https://tenant.auth0.com/userinfo"},
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(), "nickname": "octocat",
	}
}

// with returns a copy of c with k set (nil deletes it).
func with(c jwt.MapClaims, kv ...any) jwt.MapClaims {
	out := jwt.MapClaims{}
	for k, v := range c {
		out[k] = v
	}
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(out, kv[i].(string))
		} else {
			out[kv[i].(string)] = kv[i+1]
		}
	}
	return out
}

func TestVerifyAcceptsOnlyWellFormedTokensFromConfiguredKeys(t *testing.T) {
	s := newAuth0Setup(t, nil)
	now := time.Now()
	hour := now.Add(time.Hour)
	k0 := testRSAKey(t, 0)
	attacker := testRSAKey(t, 2)
	kid0 := map[string]any{"kid": "k0"}
	legacy := legacyClaims("github|1001", "gho_legacy", hour)
	rs := s.rsClaims("github|1001")
	pubDER, err := x509.MarshalPKIXPublicKey(&k0.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	otherSecret := []byte("ffffffffffffffffffffffffffffffff")
	issuer, err := NewIssuer(IssuerConfig{Secret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	issued, _, err := issuer.Issue(pipeline.User{ID: "github|7", Login: "hubot"})
	if err != nil {
		t.Fatal(err)
	}
	attackerJWK := rsaJWK("evil", &attacker.PublicKey)

	tests := []struct {
		name   string
		token  string
		want   Identity // checked when reason == ""
		reason string   // expected public message of the refusal
	}{
		{name: "legacy HS256 with user_id and identities",
			token: sign(t, jwt.SigningMethodHS256, testSecret, nil, legacy),
			want:  Identity{UserID: "github|1001", Login: "octocat", GitHubToken: "gho_legacy", Source: SourceSecret}},
		{name: "HS256 with sub only",
			token: sign(t, jwt.SigningMethodHS256, testSecret, nil, jwt.MapClaims{"sub": "github|5", "exp": hour.Unix()}),
			want:  Identity{UserID: "github|5", Source: SourceSecret}},
		{name: "HS256 issued by this server",
			token: issued,
			want:  Identity{UserID: "github|7", Login: "hubot", Source: SourceSecret}},
		{name: "HS256 whose first identity is not GitHub carries no GitHub token",
			token: sign(t, jwt.SigningMethodHS256, testSecret, nil, with(legacy, "identities", []any{map[string]any{"provider": "bitbucket", "access_token": "x"}})),
			want:  Identity{UserID: "github|1001", Login: "octocat", Source: SourceSecret}},
		{name: "RS256 from the Auth0 JWKS",
			token: sign(t, jwt.SigningMethodRS256, k0, kid0, rs),
			want:  Identity{UserID: "github|1001", Login: "octocat", Source: SourceAuth0}},
		{name: "RS256 with aud a single string",
			token: sign(t, jwt.SigningMethodRS256, k0, kid0, with(rs, "aud", testAudience)),
			want:  Identity{UserID: "github|1001", Login: "octocat", Source: SourceAuth0}},
		{name: "RS256 with header typ at+jwt",
			token: sign(t, jwt.SigningMethodRS256, k0, map[string]any{"kid": "k0", "typ": "at+jwt"}, rs),
			want:  Identity{UserID: "github|1001", Login: "octocat", Source: SourceAuth0}},
		{name: "expired a little, within leeway",
			token: sign(t, jwt.SigningMethodHS256, testSecret, nil, with(legacy, "exp", now.Add(-10*time.Second).Unix())),
			want:  Identity{UserID: "github|1001", Login: "octocat", GitHubToken: "gho_legacy", Source: SourceSecret}},
		{name: "nbf a little ahead, within leeway",
			token: sign(t, jwt.SigningMethodHS256, testSecret, nil, with(legacy, "nbf", now.Add(10*time.Second).Unix())),
			want:  Identity{UserID: "github|1001", Login: "octocat", GitHubToken: "gho_legacy", Source: SourceSecret}},

		{name: "wrong secret", reason: "invalid token",
			token: sign(t, jwt.SigningMethodHS256, otherSecret, nil, legacy)},
		{name: "alg none", reason: "token algorithm not accepted",
			token: sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, nil, legacy)},
		{name: "alg NONE spelled otherwise", reason: "token algorithm not accepted",
			token: rawToken(t, `{"alg":"None","typ":"JWT"}`, `{"user_id":"github|1","exp":`+itoa(hour.Unix())+`}`, testSecret)},
		{name: "HS/RS confusion: HS256 keyed with the RSA public key", reason: "invalid token",
			token: sign(t, jwt.SigningMethodHS256, pubPEM, kid0, rs)},
		{name: "HS/RS confusion: HS256 keyed with the DER public key", reason: "invalid token",
			token: sign(t, jwt.SigningMethodHS256, pubDER, kid0, rs)},
		{name: "HS384 with the shared secret", reason: "token algorithm not accepted",
			token: sign(t, jwt.SigningMethodHS384, testSecret, nil, legacy)},
		{name: "HS512 with the shared secret", reason: "token algorithm not accepted",
			token: sign(t, jwt.SigningMethodHS512, testSecret, nil, legacy)},
		{name: "RS512 with a JWKS key", reason: "token algorithm not accepted",
			token: sign(t, jwt.SigningMethodRS512, k0, kid0, rs)},
		{name: "PS256 with a JWKS key", reason: "token algorithm not accepted",
			token: sign(t, jwt.SigningMethodPS256, k0, kid0, rs)},
		{name: "expired", reason: "token expired",
			token: sign(t, jwt.SigningMethodHS256, testSecret, nil, with(legacy, "exp", now.Add(-2*time.Minute).Unix()))},
		{name: "RS256 expired", reason: "token expired",
			token: sign(t, jwt.SigningMethodRS256, k0, kid0, with(rs, "exp", now.Add(-2*time.Minute).Unix()))},
		{name: "no exp", reason: "token lacks a required claim",
			token: sign(t, jwt.SigningMethodHS256, testSecret, nil, with(legacy, "exp", nil))},
		{name: "nbf in the future beyond leeway", reason: "token not valid yet",
			token: sign(t, jwt.SigningMethodHS256, testSecret, nil, with(legacy, "nbf", now.Add(5*time.Minute).Unix()))},
		{name: "iat in the future beyond leeway", reason: "token not valid yet",
			token: sign(t, jwt.SigningMethodHS256, testSecret, nil, with(legacy, "iat", now.Add(5*time.Minute).Unix()))},
		{name: "RS256 wrong iss", reason: "invalid token",
			token: sign(t, jwt.SigningMethodRS256, k0, kid0, with(rs, "iss", "https://evil.auth0.com/"))},
		{name: "RS256 iss without its trailing slash", reason: "invalid token",
			token: sign(t, jwt.SigningMethodRS256, k0, kid0, with(rs, "iss", strings.TrimSuffix(s.jwks.issuer(), "/")))},
		{name: "RS256 no iss", reason: "token lacks a required claim",
			token: sign(t, jwt.SigningMethodRS256, k0, kid0, with(rs, "iss", nil))},
		{name: "RS256 wrong aud", reason: "invalid token",
			token: sign(t, jwt.SigningMethodRS256, k0, kid0, with(rs, "aud", []any{"https://other.example/api"}))},
		{name: "RS256 no aud", reason: "token lacks a required claim",
			token: sign(t, jwt.SigningMethodRS256, k0, kid0, with(rs, "aud", nil))},
		{name: "RS256 unknown kid", reason: "invalid token",
			token: sign(t, jwt.SigningMethodRS256, attacker, map[string]any{"kid": "nope"}, rs)},
		{name: "RS256 known kid, another key", reason: "invalid token",
			token: sign(t, jwt.SigningMethodRS256, attacker, kid0, rs)},
		{name: "RS256 without kid", reason: "invalid token",
			token: sign(t, jwt.SigningMethodRS256, k0, nil, rs)},
		{name: "RS256 kid not a string", reason: "malformed token",
			token: sign(t, jwt.SigningMethodRS256, k0, map[string]any{"kid": 7}, rs)},
		{name: "jku pointing elsewhere", reason: "malformed token",
			token: sign(t, jwt.SigningMethodRS256, attacker, map[string]any{"kid": "evil", "jku": s.decoy.URL + "/jwks.json"}, rs)},
		{name: "x5u pointing elsewhere", reason: "malformed token",
			token: sign(t, jwt.SigningMethodRS256, attacker, map[string]any{"kid": "evil", "x5u": s.decoy.URL + "/cert.pem"}, rs)},
		{name: "embedded jwk", reason: "malformed token",
			token: sign(t, jwt.SigningMethodRS256, attacker, map[string]any{"kid": "evil", "jwk": attackerJWK}, rs)},
		{name: "embedded x5c", reason: "malformed token",
			token: sign(t, jwt.SigningMethodRS256, attacker, map[string]any{"kid": "evil", "x5c": []string{"MIIB"}}, rs)},
		{name: "crit header", reason: "malformed token",
			token: sign(t, jwt.SigningMethodHS256, testSecret, map[string]any{"crit": []string{"exp"}}, legacy)},
		{name: "typ stage claim signed with the shared secret", reason: "not a user token",
			token: sign(t, jwt.SigningMethodHS256, testSecret, nil, with(legacy, "typ", "stage"))},
		{name: "header typ of a stage token", reason: "malformed token",
			token: sign(t, jwt.SigningMethodHS256, testSecret, map[string]any{"typ": "kontinuous-stage+jwt"}, legacy)},
		{name: "no user", reason: "token names no user",
			token: sign(t, jwt.SigningMethodHS256, testSecret, nil, jwt.MapClaims{"exp": hour.Unix(), "name": "x"})},
		{name: "user_id is a number", reason: "malformed token",
			token: sign(t, jwt.SigningMethodHS256, testSecret, nil, with(legacy, "user_id", 1001))},
		{name: "identities is not a list", reason: "malformed token",
			token: sign(t, jwt.SigningMethodHS256, testSecret, nil, with(legacy, "identities", map[string]any{"access_token": "x"}))},
		{name: "identities holds a string", reason: "malformed token",
			token: sign(t, jwt.SigningMethodHS256, testSecret, nil, with(legacy, "identities", []any{"x"}))},
		{name: "access_token is a number", reason: "malformed token",
			token: sign(t, jwt.SigningMethodHS256, testSecret, nil, with(legacy, "identities", []any{map[string]any{"access_token": 5}}))},
		{name: "exp is a string", reason: "malformed token",
			token: sign(t, jwt.SigningMethodHS256, testSecret, nil, with(legacy, "exp", "tomorrow"))},
		{name: "aud is a number", reason: "malformed token",
			token: sign(t, jwt.SigningMethodRS256, k0, kid0, with(rs, "aud", 42))},
		{name: "claims are a list", reason: "malformed token",
			token: rawToken(t, `{"alg":"HS256"}`, `[1,2]`, testSecret)},
		{name: "user id with control characters", reason: "malformed token",
			token: sign(t, jwt.SigningMethodHS256, testSecret, nil, with(legacy, "user_id", "github|1\n2"))},
		{name: "user id with a slash", reason: "malformed token",
			token: sign(t, jwt.SigningMethodHS256, testSecret, nil, with(legacy, "user_id", "../../etc"))},
		{name: "empty", reason: "missing token", token: ""},
		{name: "two segments", reason: "malformed token", token: "abc.def"},
		{name: "header not base64", reason: "malformed token", token: "!!.e30.sig"},
		{name: "header not JSON", reason: "malformed token", token: base64.RawURLEncoding.EncodeToString([]byte("nope")) + ".e30.sig"},
		{name: "oversized", reason: "token too large", token: strings.Repeat("a", maxTokenLen+1)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.v.Verify(t.Context(), tc.token)
			if tc.reason != "" {
				if !errors.Is(err, pipeline.ErrUnauthorized) {
					t.Fatalf("Verify = %v, %v; want ErrUnauthorized (%s)", got, err, tc.reason)
				}
				if msg := pipeline.PublicMessage(err); msg != tc.reason {
					t.Errorf("reason = %q, want %q (error %v)", msg, tc.reason, err)
				}
				if tc.token != "" && strings.Contains(err.Error(), tc.token) {
					t.Errorf("error text contains the token")
				}
				return
			}
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if got.UserID != tc.want.UserID || got.Login != tc.want.Login || got.GitHubToken != tc.want.GitHubToken || got.Source != tc.want.Source {
				t.Errorf("identity = %+v (token %t), want %+v (token %t)", got, got.GitHubToken != "", tc.want, tc.want.GitHubToken != "")
			}
			if got.Expires.IsZero() {
				t.Errorf("Expires not set")
			}
		})
	}
	if n := s.decoy.hits.Load(); n != 0 {
		t.Errorf("the decoy key server received %d requests; key URLs in tokens must never be fetched", n)
	}
}

func itoa(n int64) string { return big.NewInt(n).String() }

func TestVerifyRefusesRS256WhenAuth0IsOff(t *testing.T) {
	v, err := NewVerifier(t.Context(), VerifierConfig{Secret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	tok := sign(t, jwt.SigningMethodRS256, testRSAKey(t, 0), map[string]any{"kid": "k0"},
		jwt.MapClaims{"sub": "github|1", "exp": time.Now().Add(time.Hour).Unix()})
	if _, err := v.Verify(t.Context(), tok); !errors.Is(err, pipeline.ErrUnauthorized) {
		t.Fatalf("Verify = %v, want ErrUnauthorized", err)
	}
}

func TestVerifyRefusesJWKSKeysThatAreNotRSASigningKeys(t *testing.T) {
	s := newAuth0Setup(t, nil)
	k1 := testRSAKey(t, 1)
	// An "oct" key in the set must never let an HS256 or RS256 token through.
	s.jwks.addRaw(map[string]string{"kty": "oct", "kid": "oct", "k": base64.RawURLEncoding.EncodeToString(testSecret)})
	enc := rsaJWK("enc", &k1.PublicKey)
	enc["use"] = "enc"
	s.jwks.addRaw(enc)
	ps := rsaJWK("ps", &k1.PublicKey)
	ps["alg"] = "PS256"
	s.jwks.addRaw(ps)
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	s.jwks.addRaw(rsaJWK("small", &small.PublicKey))
	// Force the verifier to see the new set.
	v, err := NewVerifier(t.Context(), VerifierConfig{Secret: testSecret, Auth0Issuer: s.jwks.issuer(), Auth0Audience: testAudience})
	if err != nil {
		t.Fatal(err)
	}
	claims := s.rsClaims("github|1")
	for _, tc := range []struct {
		kid string
		key *rsa.PrivateKey
	}{{"enc", k1}, {"ps", k1}, {"small", small}} {
		t.Run(tc.kid, func(t *testing.T) {
			tok := sign(t, jwt.SigningMethodRS256, tc.key, map[string]any{"kid": tc.kid}, claims)
			if _, err := v.Verify(t.Context(), tok); !errors.Is(err, pipeline.ErrUnauthorized) {
				t.Fatalf("Verify = %v, want ErrUnauthorized", err)
			}
		})
	}
	t.Run("oct", func(t *testing.T) {
		tok := sign(t, jwt.SigningMethodHS256, []byte("another secret, not the shared one"), map[string]any{"kid": "oct"}, claims)
		if _, err := v.Verify(t.Context(), tok); !errors.Is(err, pipeline.ErrUnauthorized) {
			t.Fatalf("Verify = %v, want ErrUnauthorized", err)
		}
	})
}

func TestJWKSRotationAcceptsNewKeyAfterRefreshAndRefusesRemovedKey(t *testing.T) {
	s := newAuth0Setup(t, nil)
	k0, k1 := testRSAKey(t, 0), testRSAKey(t, 1)
	claims := s.rsClaims("github|1")
	old := sign(t, jwt.SigningMethodRS256, k0, map[string]any{"kid": "k0"}, claims)
	rotated := sign(t, jwt.SigningMethodRS256, k1, map[string]any{"kid": "k1"}, claims)

	if _, err := s.v.Verify(t.Context(), old); err != nil {
		t.Fatalf("before rotation, k0 token: %v", err)
	}
	if n := s.jwks.fetches.Load(); n != 1 {
		t.Fatalf("fetches after start = %d, want 1 (cached)", n)
	}
	// The tenant rotates: k1 appears, k0 is removed.
	s.jwks.setKeys([]string{"k1"}, []*rsa.PrivateKey{k1})
	if _, err := s.v.Verify(t.Context(), rotated); err != nil {
		t.Fatalf("after rotation, k1 token: %v", err)
	}
	if n := s.jwks.fetches.Load(); n != 2 {
		t.Fatalf("fetches after unknown kid = %d, want 2", n)
	}
	if _, err := s.v.Verify(t.Context(), old); !errors.Is(err, pipeline.ErrUnauthorized) {
		t.Fatalf("after rotation, k0 token = %v, want ErrUnauthorized", err)
	}
	// Unknown kids do not make the server hammer the tenant: the refresh is
	// rate-limited and refused requests do not wait for it.
	for i := range 20 {
		tok := sign(t, jwt.SigningMethodRS256, k1, map[string]any{"kid": "random-" + itoa(int64(i))}, claims)
		if _, err := s.v.Verify(t.Context(), tok); !errors.Is(err, pipeline.ErrUnauthorized) {
			t.Fatalf("unknown kid: %v", err)
		}
	}
	if n := s.jwks.fetches.Load(); n != 2 {
		t.Errorf("fetches after a flood of unknown kids = %d, want still 2", n)
	}
}

// memRevocations is a RevocationStore kept in memory, as the etcd store's
// Revoked is (the etcd store itself is tested in pipeline/etcdstore).
type memRevocations struct{ m map[string]time.Time }

func (r *memRevocations) Revoke(_ context.Context, jti string, exp time.Time) error {
	r.m[jti] = exp
	return nil
}
func (r *memRevocations) Revoked(jti string) bool { _, ok := r.m[jti]; return ok }

func TestRevokedTokenIsRefusedAndOthersStillWork(t *testing.T) {
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
	id, err := v.Verify(t.Context(), a)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Revoke(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	if _, ok := store.m[id.TokenID]; !ok {
		t.Errorf("revocation not recorded in the store")
	}
	if _, err := v.Verify(t.Context(), a); pipeline.PublicMessage(err) != "token revoked" {
		t.Errorf("revoked token: %v, want token revoked", err)
	}
	if _, err := v.Verify(t.Context(), b); err != nil {
		t.Errorf("another token of the same user: %v", err)
	}
	legacy := sign(t, jwt.SigningMethodHS256, testSecret, nil, legacyClaims("github|1", "", time.Now().Add(time.Hour)))
	lid, err := v.Verify(t.Context(), legacy)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Revoke(t.Context(), lid); !errors.Is(err, pipeline.ErrInvalid) {
		t.Errorf("revoking a token without jti = %v, want ErrInvalid", err)
	}
}

func TestNewVerifierRefusesBadConfiguration(t *testing.T) {
	tests := []struct {
		name string
		cfg  VerifierConfig
	}{
		{"short secret", VerifierConfig{Secret: []byte("short")}},
		{"leeway above a minute", VerifierConfig{Secret: testSecret, Leeway: 2 * time.Minute}},
		{"auth0 without audience", VerifierConfig{Secret: testSecret, Auth0Issuer: "https://t.auth0.com/"}},
		{"auth0 over plain http", VerifierConfig{Secret: testSecret, Auth0Issuer: "http://t.auth0.com/", Auth0Audience: "a"}},
		{"jwks over plain http", VerifierConfig{Secret: testSecret, Auth0Issuer: "https://t.auth0.com/", Auth0Audience: "a", JWKSURL: "http://evil.example/jwks.json"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewVerifier(t.Context(), tc.cfg); err == nil {
				t.Fatal("NewVerifier accepted it")
			}
		})
	}
}
