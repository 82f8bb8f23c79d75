package auth

import (
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/kontinuous/kontinuous/pipeline"
)

// DefaultTokenTTL is the lifetime of issued user tokens (--token-ttl).
const DefaultTokenTTL = 24 * time.Hour

// IssuerConfig configures NewIssuer.
type IssuerConfig struct {
	// Secret is the decoded AUTH_SECRET; user tokens are HS256 with it.
	Secret []byte
	// TTL is the tokens' lifetime (default DefaultTokenTTL).
	TTL time.Duration
}

// Issuer mints user tokens after a login.
type Issuer struct {
	secret []byte
	ttl    time.Duration
}

// NewIssuer checks cfg and returns an Issuer.
func NewIssuer(cfg IssuerConfig) (*Issuer, error) {
	if err := checkSecret(cfg.Secret); err != nil {
		return nil, err
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultTokenTTL
	}
	if cfg.TTL < time.Minute {
		return nil, fmt.Errorf("auth: token ttl %s is shorter than a minute", cfg.TTL)
	}
	return &Issuer{secret: append([]byte(nil), cfg.Secret...), ttl: cfg.TTL}, nil
}

// Issue returns an HS256 token for u: iss "kontinuous", sub and user_id
// u.ID, name u.Login, iat, exp (now + TTL), a random 128-bit jti and typ
// "user". It never carries u's forge token.
func (i *Issuer) Issue(u pipeline.User) (token string, expires time.Time, err error) {
	if u.ID == "" {
		return "", time.Time{}, errors.New("auth: issue: user has no id")
	}
	now := time.Now().Truncate(time.Second)
	expires = now.Add(i.ttl)
	claims := userClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    IssuerName,
			Subject:   u.ID,
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(expires),
			ID:        randomID(),
		},
		UserID: u.ID,
		Name:   u.Login,
		Typ:    typUser,
	}
	token, err = jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(i.secret)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("auth: sign token: %w", err)
	}
	return token, expires, nil
}
