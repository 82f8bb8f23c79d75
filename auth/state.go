package auth

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/kontinuous/kontinuous/pipeline"
)

// StatePrefix starts every OAuth state this server issues. States without
// it are client-managed (the web UI checks its own) and passed through.
const StatePrefix = "ks1."

// DefaultStateTTL is how long a server-issued state stays usable.
const DefaultStateTTL = 10 * time.Minute

// maxStateLen bounds the states we parse.
const maxStateLen = 4096

// IsServerState reports whether state was issued by this server (by its
// prefix; whether it is genuine is for States.Check to say).
func IsServerState(state string) bool { return strings.HasPrefix(state, StatePrefix) }

// StatesConfig configures NewStates.
type StatesConfig struct {
	// Secret is the decoded AUTH_SECRET; the state key is derived from it.
	Secret []byte
	// Once records used states so each works once (required).
	Once OnceStore
	// TTL is a state's lifetime (default DefaultStateTTL).
	TTL time.Duration
}

// States issues and checks OAuth state values: "ks1." + base64url(payload)
// + "." + base64url(HMAC-SHA256(key, "ks1." + payload)), where the key is
// derived from the shared secret for this purpose only and the payload
// holds a random nonce, the expiry and the redirect_uri of the login.
type States struct {
	key   []byte
	once  OnceStore
	ttl   time.Duration
	forge string
}

// ForForge returns States whose states are bound to the named forge: a
// state issued for one forge's login is refused by another's (each forge's
// login takes its own). They share the key, the OnceStore and the TTL.
func (s *States) ForForge(name string) *States {
	c := *s
	c.forge = name
	return &c
}

// statePayload is the signed content of a state.
type statePayload struct {
	Nonce    string `json:"n"`
	Expires  int64  `json:"e"`
	Redirect string `json:"r,omitempty"`
	// Link is the signed-in user who started connecting this forge to
	// their account ("" for a sign-in).
	Link string `json:"l,omitempty"`
}

// NewStates checks cfg and returns a States.
func NewStates(cfg StatesConfig) (*States, error) {
	if cfg.Once == nil {
		return nil, errors.New("auth: states need a OnceStore")
	}
	k, err := deriveKey(cfg.Secret, infoState)
	if err != nil {
		return nil, err
	}
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultStateTTL
	}
	return &States{key: k, once: cfg.Once, ttl: cfg.TTL}, nil
}

// New returns a fresh state bound to redirectURI, valid for the TTL.
func (s *States) New(redirectURI string) (string, error) {
	return s.NewLink(redirectURI, "")
}

// NewLink returns a fresh state bound to redirectURI that connects the
// forge to the signed-in user userID (see Login.CompleteLink); "" is a
// sign-in state, as New.
func (s *States) NewLink(redirectURI, userID string) (string, error) {
	p, err := json.Marshal(statePayload{
		Nonce:    randomID(),
		Expires:  time.Now().Add(s.ttl).Unix(),
		Redirect: redirectURI,
		Link:     userID,
	})
	if err != nil {
		return "", fmt.Errorf("auth: encode state: %w", err)
	}
	signed := StatePrefix + base64.RawURLEncoding.EncodeToString(p)
	state := signed + "." + base64.RawURLEncoding.EncodeToString(s.mac(signed))
	if len(state) > maxStateLen {
		return "", pipeline.Invalid("redirect_uri", "is too long")
	}
	return state, nil
}

func (s *States) mac(signed string) []byte {
	m := hmac.New(sha256.New, s.key)
	if s.forge != "" {
		m.Write([]byte("forge=" + s.forge + "\x00"))
	}
	m.Write([]byte(signed))
	return m.Sum(nil)
}

// Check verifies a server-issued state (IsServerState) and spends it: the
// MAC must match, it must not have expired, redirectURI (when not empty)
// must be the one the login started with, and it must not have been used
// before. It returns the login's redirect_uri. Every refusal wraps
// pipeline.ErrUnauthorized; a failing OnceStore is returned as is
// (typically ErrUnavailable).
func (s *States) Check(ctx context.Context, state, redirectURI string) (string, error) {
	r, _, err := s.CheckLink(ctx, state, redirectURI)
	return r, err
}

// CheckLink is Check that also returns the user the state links to (""
// for a sign-in state).
func (s *States) CheckLink(ctx context.Context, state, redirectURI string) (redirect, link string, err error) {
	if !IsServerState(state) || len(state) > maxStateLen {
		return "", "", unauthorized("invalid state")
	}
	i := strings.LastIndexByte(state, '.')
	if i < len(StatePrefix) {
		return "", "", unauthorized("invalid state")
	}
	signed, sig := state[:i], state[i+1:]
	got, err := base64.RawURLEncoding.Strict().DecodeString(sig)
	if err != nil || !hmac.Equal(got, s.mac(signed)) {
		return "", "", unauthorized("invalid state")
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(signed[len(StatePrefix):])
	if err != nil {
		return "", "", unauthorized("invalid state")
	}
	var p statePayload
	if err := json.Unmarshal(b, &p); err != nil || p.Nonce == "" {
		return "", "", unauthorized("invalid state")
	}
	exp := time.Unix(p.Expires, 0)
	now := time.Now()
	if !now.Before(exp) {
		return "", "", unauthorized("state expired; start the login again")
	}
	if exp.After(now.Add(s.ttl + MaxLeeway)) {
		return "", "", unauthorized("invalid state")
	}
	if redirectURI != "" && redirectURI != p.Redirect {
		return "", "", unauthorized("redirect_uri does not match the one the login started with")
	}
	if err := s.once.UseOnce(ctx, "oauth-state/"+p.Nonce, exp); err != nil {
		if errors.Is(err, pipeline.ErrConflict) {
			return "", "", unauthorized("state already used; start the login again")
		}
		return "", "", fmt.Errorf("auth: record state use: %w", err)
	}
	return p.Redirect, p.Link, nil
}
