package auth

import (
	"encoding/json"

	"github.com/golang-jwt/jwt/v5"
)

// userClaims are the claims of a user token. Every field is typed: a token
// whose user_id is a number or whose identities is not a list fails to
// decode and is refused as malformed, never panics.
type userClaims struct {
	jwt.RegisteredClaims
	// UserID is the legacy identity claim ("<forge>|<numeric id>").
	UserID string `json:"user_id,omitempty"`
	// Name is the user's login (tokens of this server and jwt-gen) or
	// full name (Auth0).
	Name string `json:"name,omitempty"`
	// Nickname is the GitHub login in Auth0 tokens.
	Nickname string `json:"nickname,omitempty"`
	// Identities are the linked accounts (Auth0 rules, jwt-gen); the first
	// GitHub one may carry the user's GitHub token.
	Identities []identityClaim `json:"identities,omitempty"`
	// Typ is the token type: "" (legacy) or "user" for user tokens.
	Typ string `json:"typ,omitempty"`
}

// identityClaim is one entry of the identities claim. Fields other than
// these (Auth0's user_id may be a number) are kept raw and ignored.
type identityClaim struct {
	Provider    string          `json:"provider,omitempty"`
	AccessToken string          `json:"access_token,omitempty"`
	UserID      json.RawMessage `json:"user_id,omitempty"`
	Connection  string          `json:"connection,omitempty"`
	IsSocial    bool            `json:"isSocial,omitempty"`
}
