package auth

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// testSecret is a 32-byte shared secret.
var testSecret = []byte("0123456789abcdef0123456789abcdef")

// rsaKeys are generated once per test binary (2048-bit generation is slow
// under -race).
var (
	rsaOnce sync.Once
	rsaKeys [3]*rsa.PrivateKey
)

func testRSAKey(t *testing.T, i int) *rsa.PrivateKey {
	t.Helper()
	rsaOnce.Do(func() {
		for k := range rsaKeys {
			key, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				panic(err)
			}
			rsaKeys[k] = key
		}
	})
	return rsaKeys[i]
}

// jwksServer stands in for an Auth0 tenant's /.well-known/jwks.json. Its
// key set can change while it runs; it counts the fetches.
type jwksServer struct {
	*httptest.Server
	mu      sync.Mutex
	keys    []map[string]string
	fetches atomic.Int64
}

func newJWKSServer(t *testing.T) *jwksServer {
	t.Helper()
	s := &jwksServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/.well-known/jwks.json" {
			http.NotFound(w, r)
			return
		}
		s.fetches.Add(1)
		s.mu.Lock()
		body, err := json.Marshal(map[string]any{"keys": s.keys})
		s.mu.Unlock()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body) // the client may have gone
	}))
	t.Cleanup(s.Close)
	return s
}

// issuer is the tenant's issuer URL (with the trailing slash Auth0 uses).
func (s *jwksServer) issuer() string { return s.URL + "/" }

// setKeys publishes the public halves of keys under kids.
func (s *jwksServer) setKeys(kids []string, keys []*rsa.PrivateKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys = nil
	for i, k := range keys {
		s.keys = append(s.keys, rsaJWK(kids[i], &k.PublicKey))
	}
}

// addRaw publishes an arbitrary JWK.
func (s *jwksServer) addRaw(jwk map[string]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys = append(s.keys, jwk)
}

func rsaJWK(kid string, pub *rsa.PublicKey) map[string]string {
	return map[string]string{
		"kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
		"n": base64.RawURLEncoding.EncodeToString(pub.N.Bytes()),
		"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(pub.E)).Bytes()),
	}
}

// decoy counts every request made to it: a key URL an attacker controls.
type decoy struct {
	*httptest.Server
	hits atomic.Int64
}

func newDecoy(t *testing.T) *decoy {
	t.Helper()
	d := &decoy{}
	d.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d.hits.Add(1)
		http.NotFound(w, r)
	}))
	t.Cleanup(d.Close)
	return d
}

// sign makes a compact JWT with method and key, extra header fields and
// claims, exactly as given.
func sign(t *testing.T, method jwt.SigningMethod, key any, header map[string]any, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, claims)
	for k, v := range header {
		if v == nil {
			delete(tok.Header, k)
		} else {
			tok.Header[k] = v
		}
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	return s
}

// rawToken assembles a token from literal header and claims JSON, signed
// HS256 with key: for claims jwt would refuse to encode.
func rawToken(t *testing.T, headerJSON, claimsJSON string, key []byte) string {
	t.Helper()
	enc := base64.RawURLEncoding
	signing := enc.EncodeToString([]byte(headerJSON)) + "." + enc.EncodeToString([]byte(claimsJSON))
	sig, err := jwt.SigningMethodHS256.Sign(signing, key)
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	return signing + "." + enc.EncodeToString(sig)
}

// legacyClaims are claims as jwt-gen and Auth0 rules make them.
func legacyClaims(userID, ghToken string, exp time.Time) jwt.MapClaims {
	return jwt.MapClaims{
		"user_id": userID,
		"name":    "octocat",
		"iat":     time.Now().Unix(),
		"exp":     exp.Unix(),
		"identities": []any{map[string]any{
			"provider": "github", "access_token": ghToken, "user_id": 1001, "connection": "github", "isSocial": true,
		}},
	}
}
