package auth

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"

	"github.com/kontinuous/kontinuous/pipeline"
)

// UserWriter stores users (pipeline.Store satisfies it). Defined here, where
// it is consumed, so the login needs nothing else of the store.
type UserWriter interface {
	PutUser(ctx context.Context, u pipeline.User) error
}

// UserReader reads stored users (pipeline.Store satisfies it).
type UserReader interface {
	GetUser(ctx context.Context, id string) (pipeline.User, error)
}

// ForgeUsers says whose a forge token is (pipeline.SCM satisfies it).
type ForgeUsers interface {
	User(ctx context.Context, tok pipeline.ForgeToken) (pipeline.ForgeUser, error)
}

// LoginConfig configures NewLogin. Every field but AllowRedirect is required.
type LoginConfig struct {
	// OAuth is the forge's OAuth login; its Name prefixes user ids.
	OAuth  pipeline.ForgeOAuth
	Users  UserWriter
	Forge  ForgeUsers
	Issuer *Issuer
	States *States
	// AllowRedirect, when set, must approve every redirect_uri a login
	// starts with (the forge checks it against its OAuth app as well).
	AllowRedirect func(redirectURI string) bool
}

// LoginResult is the reply of a completed login (docs/api.md, Login).
type LoginResult struct {
	JWT      string `json:"jwt"`
	UserID   string `json:"user_id"`
	UserName string `json:"user_name"`
}

// Login runs a forge's web login: a server-issued state, the code
// exchange, the user look-up, storing the user with their forge token and
// issuing a Kontinuous token.
type Login struct {
	cfg LoginConfig
}

// NewLogin checks cfg and returns a Login.
func NewLogin(cfg LoginConfig) (*Login, error) {
	if cfg.OAuth == nil || cfg.Users == nil || cfg.Forge == nil || cfg.Issuer == nil || cfg.States == nil {
		return nil, errors.New("auth: login needs OAuth, Users, Forge, Issuer and States")
	}
	return &Login{cfg: cfg}, nil
}

// maxParamLen bounds code, state and redirect_uri.
const maxParamLen = 2048

// Authorize starts a login: it returns the forge's authorize URL with a
// fresh server-issued state bound to redirectURI (which may be empty: the
// forge then uses the OAuth app's callback URL).
func (l *Login) Authorize(redirectURI string) (string, error) {
	if err := l.checkRedirect(redirectURI); err != nil {
		return "", err
	}
	// Fail before minting a state when the OAuth app is not configured.
	if err := l.cfg.OAuth.OAuthConfigured(); err != nil {
		return "", err
	}
	state, err := l.cfg.States.New(redirectURI)
	if err != nil {
		return "", err
	}
	return l.cfg.OAuth.AuthorizeURL(state, redirectURI)
}

func (l *Login) checkRedirect(redirectURI string) error {
	if redirectURI == "" {
		return nil
	}
	u, err := url.Parse(redirectURI)
	if err != nil || len(redirectURI) > maxParamLen || (u.Scheme != "https" && u.Scheme != "http") ||
		u.Host == "" || u.User != nil || u.Fragment != "" {
		return pipeline.Invalid("redirect_uri", "must be an absolute http(s) URL without user info or fragment")
	}
	if l.cfg.AllowRedirect != nil && !l.cfg.AllowRedirect(redirectURI) {
		return pipeline.Invalid("redirect_uri", "is not an allowed redirect for this server")
	}
	return nil
}

// Complete finishes a login with the forge's code and the state. Missing
// code or state is ErrInvalid (400). A state starting with "ks1." must be
// genuine, unexpired and unused (else ErrUnauthorized); any other state is
// client-managed and passed through to the forge. A bad or spent code is
// ErrUnauthorized; the forge failing or misconfigured is ErrUpstream.
func (l *Login) Complete(ctx context.Context, code, state, redirectURI string) (LoginResult, error) {
	switch {
	case code == "":
		return LoginResult{}, pipeline.Invalid("code", "is required")
	case state == "":
		return LoginResult{}, pipeline.Invalid("state", "is required")
	case len(code) > maxParamLen:
		return LoginResult{}, pipeline.Invalid("code", "is too long")
	case len(state) > maxParamLen:
		return LoginResult{}, pipeline.Invalid("state", "is too long")
	}
	if err := l.checkRedirect(redirectURI); err != nil {
		return LoginResult{}, err
	}
	if err := l.cfg.OAuth.OAuthConfigured(); err != nil {
		return LoginResult{}, err
	}
	if IsServerState(state) {
		bound, err := l.cfg.States.Check(ctx, state, redirectURI)
		if err != nil {
			return LoginResult{}, err
		}
		redirectURI = bound
	}
	tok, err := l.cfg.OAuth.Exchange(ctx, code, state, redirectURI)
	if err != nil {
		return LoginResult{}, err
	}
	fu, err := l.cfg.Forge.User(ctx, tok)
	if err != nil {
		if errors.Is(err, pipeline.ErrUnauthorized) {
			// The forge refusing the token it just issued is its fault.
			return LoginResult{}, fmt.Errorf("%w (%v)", pipeline.Errorf(pipeline.ErrUpstream, "%s refused the token it issued", l.cfg.OAuth.Name()), err)
		}
		return LoginResult{}, fmt.Errorf("auth: look up the %s user: %w", l.cfg.OAuth.Name(), err)
	}
	if (fu.ID <= 0 && fu.UID == "") || fu.Login == "" {
		return LoginResult{}, pipeline.Errorf(pipeline.ErrUpstream, "%s returned no user id or login", l.cfg.OAuth.Name())
	}
	// A forge whose ids are not numbers (Bitbucket's {uuid}) gives UID.
	id := strconv.FormatInt(fu.ID, 10)
	if fu.UID != "" {
		id = fu.UID
	}
	u := pipeline.User{
		ID:      l.cfg.OAuth.Name() + "|" + id,
		Login:   fu.Login,
		Token:   tok,
		Updated: pipeline.Now(),
	}
	if err := l.cfg.Users.PutUser(ctx, u); err != nil {
		return LoginResult{}, fmt.Errorf("auth: store user %s: %w", u.ID, err)
	}
	jwt, _, err := l.cfg.Issuer.Issue(u)
	if err != nil {
		return LoginResult{}, err
	}
	return LoginResult{JWT: jwt, UserID: u.ID, UserName: u.Login}, nil
}

// GitHubToken returns the GitHub token to act for id: the one its JWT
// carried (identities[0].access_token) if any, else the one stored at the
// user's last GitHub login. Neither: ErrUnauthorized, "log in again".
func GitHubToken(ctx context.Context, id Identity, users UserReader) (pipeline.ForgeToken, error) {
	if id.GitHubToken != "" {
		return pipeline.ForgeToken{AccessToken: id.GitHubToken}, nil
	}
	u, err := users.GetUser(ctx, id.UserID)
	switch {
	case errors.Is(err, pipeline.ErrNotFound):
		return pipeline.ForgeToken{}, pipeline.Errorf(pipeline.ErrUnauthorized, "no GitHub token for this user; log in again")
	case err != nil:
		return pipeline.ForgeToken{}, fmt.Errorf("auth: read user %s: %w", id.UserID, err)
	case !u.Token.Valid():
		return pipeline.ForgeToken{}, pipeline.Errorf(pipeline.ErrUnauthorized, "no GitHub token for this user; log in again")
	}
	return u.Token, nil
}
