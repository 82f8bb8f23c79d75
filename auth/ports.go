// Package auth verifies and issues tokens: user JWTs (HS256 with the shared
// secret, RS256 from an Auth0 tenant's JWKS), OAuth state, per-stage agent
// tokens; it carries the caller's identity on the request and exchanges
// GitHub OAuth codes.
package auth

import (
	"context"
	"time"
)

// OnceStore records single-use values (OAuth states) until they expire.
// The etcd store implements it with a lease.
type OnceStore interface {
	// UseOnce records id until expires; it returns an error wrapping
	// pipeline.ErrConflict if id was already recorded.
	UseOnce(ctx context.Context, id string, expires time.Time) error
}

// RevocationStore keeps revoked token ids until the tokens expire.
// Revoked must answer from memory (kept current by a watch), never with a
// round trip per request.
type RevocationStore interface {
	Revoke(ctx context.Context, jti string, expires time.Time) error
	Revoked(jti string) bool
}
