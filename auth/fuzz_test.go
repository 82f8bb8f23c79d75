package auth

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/kontinuous/kontinuous/pipeline"
)

// fuzzSecret is the shared secret of FuzzVerify's verifier; seeds signed
// with it are in testdata/fuzz/FuzzVerify (they expire in 2100).
var fuzzSecret = []byte("fuzz-secret-fuzz-secret-fuzz-sec")

// signedWith reports whether raw's signature is HS256 of its first two
// segments under secret: the only tokens the verifier may accept when
// Auth0 is off.
func signedWith(raw string, secret []byte) bool {
	i := strings.LastIndexByte(raw, '.')
	if i < 0 {
		return false
	}
	sig, err := base64.RawURLEncoding.DecodeString(raw[i+1:])
	if err != nil {
		return false
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(raw[:i]))
	return hmac.Equal(sig, mac.Sum(nil))
}

// FuzzVerify: whatever the bytes, Verify never panics, refuses with an
// error wrapping ErrUnauthorized, and accepts only HS256 tokens signed
// with the shared secret that name a user.
func FuzzVerify(f *testing.F) {
	sign := func(secret []byte, claims jwt.MapClaims) string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(secret)
		if err != nil {
			f.Fatal(err)
		}
		return s
	}
	exp := time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC).Unix()
	f.Add(sign(fuzzSecret, jwt.MapClaims{"user_id": "github|1", "exp": exp}))
	f.Add(sign(fuzzSecret, jwt.MapClaims{"sub": "github|2", "exp": exp, "jti": "j1", "identities": []any{map[string]any{"provider": "github", "access_token": "t"}}}))
	f.Add(sign([]byte("another-secret-another-secret-an"), jwt.MapClaims{"user_id": "github|1", "exp": exp}))
	f.Add("eyJhbGciOiJub25lIn0.eyJ1c2VyX2lkIjoiZ2l0aHVifDEiLCJleHAiOjQxMDI0NDQ4MDB9.")
	f.Add("a.b.c")
	f.Add("")
	v, err := NewVerifier(context.Background(), VerifierConfig{Secret: fuzzSecret, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		id, err := v.Verify(context.Background(), raw)
		if err != nil {
			if !errors.Is(err, pipeline.ErrUnauthorized) {
				t.Fatalf("refusal %v does not wrap ErrUnauthorized", err)
			}
			if len(raw) >= 16 && strings.Contains(err.Error(), raw) {
				t.Fatalf("refusal %q repeats the token", err)
			}
			return
		}
		if !signedWith(raw, fuzzSecret) {
			t.Fatalf("accepted a token not signed with the secret: %q", raw)
		}
		if h, _, _ := strings.Cut(raw, "."); !strings.Contains(decodeSeg(h), `"HS256"`) {
			t.Fatalf("accepted a token whose header is not HS256: %q", decodeSeg(h))
		}
		if id.UserID == "" || id.Source != SourceSecret {
			t.Fatalf("accepted token gives identity %+v", id)
		}
	})
}

func decodeSeg(s string) string {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return ""
	}
	return string(b)
}
