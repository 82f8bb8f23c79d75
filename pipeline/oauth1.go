package pipeline

// OAuth1Request is a request token of the OAuth 1.0a provider (Bitbucket
// Data Center Application Links) between its issue and its exchange for
// an access token. Only hashes of the token and verifier are kept.
type OAuth1Request struct {
	// TokenHash is the hex SHA-256 of the request token (its key).
	TokenHash string `json:"token_hash"`
	// ConsumerKey is the consumer that asked for it.
	ConsumerKey string `json:"consumer_key"`
	// Callback is where the user's browser returns after the decision.
	Callback string `json:"callback"`
	// Expires is when it stops being usable (Unix nanoseconds).
	Expires int64 `json:"expires"`
	// UserID and Login are the user who allowed it ("" until then).
	UserID string `json:"user_id,omitempty"`
	Login  string `json:"login,omitempty"`
	// VerifierHash is the hex SHA-256 of the verifier given on allow.
	VerifierHash string `json:"verifier_hash,omitempty"`
}

// OAuth1Grant is an access token a user gave a consumer: it lets the
// consumer act as that user until the user or the operator revokes it.
type OAuth1Grant struct {
	// TokenHash is the hex SHA-256 of the access token (its key).
	TokenHash   string `json:"token_hash"`
	ConsumerKey string `json:"consumer_key"`
	UserID      string `json:"user_id"`
	Login       string `json:"login"`
	// Created is when the user allowed it (Unix nanoseconds).
	Created int64 `json:"created"`
}
