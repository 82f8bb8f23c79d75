package auth

import (
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strings"

	"github.com/kontinuous/kontinuous/pipeline"
)

// MinSecretLen is the shortest decoded AUTH_SECRET accepted, in bytes.
const MinSecretLen = 32

// IssuerName is the iss claim of tokens this server (and scripts/jwt-gen) mints.
const IssuerName = "kontinuous"

// HKDF labels: each purpose other than user tokens gets its own key derived
// from the shared secret, so a token minted for one purpose can never verify
// as another (RFC 8725 §3.12, cross-JWT confusion).
const (
	infoState = "kontinuous oauth-state v1"
)

// Claim "typ" values. User tokens issued by this server carry typ "user";
// legacy user tokens (Auth0 rules, older jwt-gen) have none. Every other
// token the server mints carries its own typ and is refused as a user token.
const typUser = "user"

// DecodeSecret decodes an AUTH_SECRET given in base64 (standard or URL
// alphabet, padding optional) and checks that it holds at least
// MinSecretLen bytes. Its errors never include the secret.
func DecodeSecret(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, pipeline.Invalid("auth-secret", "is empty")
	}
	raw := strings.TrimRight(s, "=")
	var (
		b   []byte
		err error
	)
	if strings.ContainsAny(raw, "-_") {
		b, err = base64.RawURLEncoding.DecodeString(raw)
	} else {
		b, err = base64.RawStdEncoding.DecodeString(raw)
	}
	if err != nil {
		return nil, pipeline.Invalid("auth-secret", "is not base64 (standard or URL alphabet)")
	}
	if len(b) < MinSecretLen {
		return nil, pipeline.Invalid("auth-secret", "decodes to %d bytes; need at least %d (e.g. `openssl rand -base64 48`)", len(b), MinSecretLen)
	}
	return b, nil
}

// checkSecret validates a decoded secret given to a constructor.
func checkSecret(secret []byte) error {
	if len(secret) < MinSecretLen {
		return fmt.Errorf("auth: secret is %d bytes, need at least %d", len(secret), MinSecretLen)
	}
	return nil
}

// deriveKey derives the 32-byte key for one purpose from the shared secret.
func deriveKey(secret []byte, info string) ([]byte, error) {
	if err := checkSecret(secret); err != nil {
		return nil, err
	}
	k, err := hkdf.Key(sha256.New, secret, nil, info, 32)
	if err != nil {
		return nil, fmt.Errorf("auth: derive key: %w", err)
	}
	return k, nil
}

// randomID returns 128 random bits, base64url without padding.
func randomID() string {
	var b [16]byte
	// crypto/rand.Read never returns an error (it panics if the system
	// random source fails).
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}
