package auth

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// BenchmarkVerifyJWT is the cost of authenticating one request with a
// shared-secret token like the ones scripts/jwt-gen mints: full is the
// complete check (a token seen for the first time), cached a token the
// verifier accepted before (the usual case: clients reuse their token).
func BenchmarkVerifyJWT(b *testing.B) {
	v, err := NewVerifier(context.Background(), VerifierConfig{Secret: fuzzSecret, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	raw, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"user_id": "github|1001", "name": "alice", "exp": time.Now().Add(time.Hour).Unix(), "iat": time.Now().Unix(),
		"identities": []any{map[string]any{"provider": "github", "access_token": "gho_0123456789abcdef"}},
	}).SignedString(fuzzSecret)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.Run("full", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := v.verify(ctx, raw); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cached", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := v.Verify(ctx, raw); err != nil {
				b.Fatal(err)
			}
		}
	})
}
