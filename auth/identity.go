package auth

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/kontinuous/kontinuous/pipeline"
)

// Token sources an Identity can come from.
const (
	// SourceSecret: an HS256 token signed with the shared AUTH_SECRET
	// (issued by this server, by scripts/jwt-gen or by legacy Auth0 rules).
	SourceSecret = "secret"
	// SourceAuth0: an RS256 token signed by a key of the Auth0 tenant's JWKS.
	SourceAuth0 = "auth0"
)

// Identity is the authenticated caller of one request. It travels with the
// request (see WithIdentity); the Verifier remembers the identities of
// recently accepted tokens (in memory, by token hash) and nothing else
// keeps them.
type Identity struct {
	// UserID is "<forge>|<numeric id>" (from user_id, else sub).
	UserID string
	// Login is the user name shown to people (nickname or name claim).
	Login string
	// GitHubToken is identities[0].access_token when the token carries one
	// (tokens from scripts/jwt-gen or Auth0 rules); empty otherwise. It is a
	// secret: String, GoString and LogValue never show it.
	GitHubToken string
	// TokenID is the token's jti ("" when it has none and cannot be revoked).
	TokenID string
	// Expires is the token's exp.
	Expires time.Time
	// Source is SourceSecret or SourceAuth0.
	Source string
}

// String describes the identity without its GitHub token.
func (id Identity) String() string {
	return fmt.Sprintf("%s (%s, via %s)", id.UserID, id.Login, id.Source)
}

// GoString is String, so that %#v cannot print the GitHub token either.
func (id Identity) GoString() string { return "auth.Identity{" + id.String() + "}" }

// LogValue logs the identity without its GitHub token.
func (id Identity) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("user_id", id.UserID),
		slog.String("login", id.Login),
		slog.String("source", id.Source),
		slog.Bool("github_token", id.GitHubToken != ""),
	)
}

type identityKey struct{}

// WithIdentity returns a copy of ctx carrying id.
func WithIdentity(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, identityKey{}, id)
}

// FromContext returns the identity WithIdentity put in ctx, or an error
// wrapping pipeline.ErrUnauthorized when there is none (a route that forgot
// authentication fails closed).
func FromContext(ctx context.Context) (Identity, error) {
	id, ok := ctx.Value(identityKey{}).(Identity)
	if !ok || id.UserID == "" {
		return Identity{}, pipeline.Errorf(pipeline.ErrUnauthorized, "authentication required")
	}
	return id, nil
}
