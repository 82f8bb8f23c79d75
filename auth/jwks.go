package auth

import (
	"context"
	"crypto/rsa"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/time/rate"
)

// JWKS fetching limits.
const (
	jwksHTTPTimeout = 10 * time.Second
	// jwksWaitMax bounds how long a request may wait for an unknown-kid
	// refresh (the rate limiter's turn plus the fetch). A request whose
	// turn is further away fails at once instead of queueing.
	jwksWaitMax = 5 * time.Second
	// minRSABits is the smallest RSA modulus accepted (RFC 7518 §3.3).
	minRSABits = 2048
)

// jwks holds the Auth0 tenant's signing keys, fetched from the one
// configured URL only: cached, refreshed periodically, and refreshed on an
// unknown kid at most once per JWKSUnknownKIDInterval.
type jwks struct {
	storage jwkset.Storage
}

func newJWKS(ctx context.Context, cfg VerifierConfig) (*jwks, error) {
	client := cfg.HTTPClient
	if client == nil {
		client = &http.Client{Timeout: jwksHTTPTimeout}
	}
	refresh := cfg.JWKSRefresh
	if refresh <= 0 {
		refresh = time.Hour
	}
	every := cfg.JWKSUnknownKIDInterval
	if every <= 0 {
		every = time.Minute
	}
	log := cfg.Logger
	kf, err := keyfunc.NewDefaultOverrideCtx(ctx, []string{cfg.JWKSURL}, keyfunc.Override{
		Client:            client,
		HTTPTimeout:       jwksHTTPTimeout,
		RefreshInterval:   refresh,
		RefreshUnknownKID: rate.NewLimiter(rate.Every(every), 1),
		RateLimitWaitMax:  jwksWaitMax,
		RefreshErrorHandlerFunc: func(u string) func(context.Context, error) {
			return func(ctx context.Context, err error) {
				log.WarnContext(ctx, "auth: cannot fetch the Auth0 JWKS", "url", u, "error", err)
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("auth: Auth0 JWKS: %w", err)
	}
	return &jwks{storage: kf.Storage()}, nil
}

// keyfunc returns the RSA public key named kid. It refuses keys that are
// not RSA (an "oct" key in the set must never turn RS256 into HMAC), that
// are declared for another algorithm or use, or that are too short.
func (k *jwks) keyfunc(ctx context.Context, kid string) jwt.Keyfunc {
	return func(*jwt.Token) (any, error) {
		if kid == "" {
			return nil, errors.New("RS256 token has no kid")
		}
		jwk, err := k.storage.KeyRead(ctx, kid)
		if err != nil {
			return nil, fmt.Errorf("kid not in the Auth0 JWKS: %w", err)
		}
		m := jwk.Marshal()
		if m.ALG != "" && m.ALG != jwkset.AlgRS256 {
			return nil, fmt.Errorf("JWKS key is for %s, not RS256", m.ALG)
		}
		if m.USE != "" && m.USE != jwkset.UseSig {
			return nil, fmt.Errorf("JWKS key use is %q, not sig", m.USE)
		}
		var pub *rsa.PublicKey
		switch key := jwk.Key().(type) {
		case *rsa.PublicKey:
			pub = key
		case *rsa.PrivateKey:
			pub = &key.PublicKey
		default:
			return nil, fmt.Errorf("JWKS key is a %T, not an RSA key", key)
		}
		if pub.N.BitLen() < minRSABits {
			return nil, fmt.Errorf("JWKS key has %d bits, need %d", pub.N.BitLen(), minRSABits)
		}
		return pub, nil
	}
}
