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
	// Links, when set, lets a signed-in user connect this forge to their
	// account (AuthorizeLink, CompleteLink).
	Links pipeline.LinkStore
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
	res, err := l.complete(ctx, code, state, redirectURI, "", "")
	if err != nil {
		return LoginResult{}, err
	}
	r, ok := res.(LoginResult)
	if !ok {
		return LoginResult{}, unauthorized("this state connects " + l.cfg.OAuth.Name() + " to a signed-in user: finish it with that user's Bearer token")
	}
	return r, nil
}

// CompleteAs is Complete for a caller who presents their Bearer token
// (userID, login): a state minted by AuthorizeLink finishes connecting
// this forge to them (CompleteLink's rules; the reply is a LinkResult);
// any other state is a sign-in as Complete (a LoginResult).
func (l *Login) CompleteAs(ctx context.Context, code, state, redirectURI, userID, login string) (any, error) {
	return l.complete(ctx, code, state, redirectURI, userID, login)
}

func (l *Login) complete(ctx context.Context, code, state, redirectURI, userID, login string) (any, error) {
	switch {
	case code == "":
		return nil, pipeline.Invalid("code", "is required")
	case state == "":
		return nil, pipeline.Invalid("state", "is required")
	case len(code) > maxParamLen:
		return nil, pipeline.Invalid("code", "is too long")
	case len(state) > maxParamLen:
		return nil, pipeline.Invalid("state", "is too long")
	}
	if err := l.checkRedirect(redirectURI); err != nil {
		return nil, err
	}
	if err := l.cfg.OAuth.OAuthConfigured(); err != nil {
		return nil, err
	}
	if IsServerState(state) {
		bound, link, err := l.cfg.States.CheckLink(ctx, state, redirectURI)
		if err != nil {
			return nil, err
		}
		if link != "" {
			if userID == "" {
				return nil, unauthorized("this state connects " + l.cfg.OAuth.Name() + " to a signed-in user: finish it with that user's Bearer token")
			}
			return l.completeLink(ctx, code, state, bound, link, userID, login)
		}
		redirectURI = bound
	}
	u, err := l.forgeUser(ctx, code, state, redirectURI)
	if err != nil {
		return nil, err
	}
	if err := l.cfg.Users.PutUser(ctx, u); err != nil {
		return nil, fmt.Errorf("auth: store user %s: %w", u.ID, err)
	}
	jwt, _, err := l.cfg.Issuer.Issue(u)
	if err != nil {
		return nil, err
	}
	return LoginResult{JWT: jwt, UserID: u.ID, UserName: u.Login}, nil
}

// forgeUser exchanges the code and looks up whose token it is: the user
// to store, with the token.
func (l *Login) forgeUser(ctx context.Context, code, state, redirectURI string) (pipeline.User, error) {
	tok, err := l.cfg.OAuth.Exchange(ctx, code, state, redirectURI)
	if err != nil {
		return pipeline.User{}, err
	}
	fu, err := l.cfg.Forge.User(ctx, tok)
	if err != nil {
		if errors.Is(err, pipeline.ErrUnauthorized) {
			// The forge refusing the token it just issued is its fault.
			return pipeline.User{}, fmt.Errorf("%w (%v)", pipeline.Errorf(pipeline.ErrUpstream, "%s refused the token it issued", l.cfg.OAuth.Name()), err)
		}
		return pipeline.User{}, fmt.Errorf("auth: look up the %s user: %w", l.cfg.OAuth.Name(), err)
	}
	if (fu.ID <= 0 && fu.UID == "") || fu.Login == "" {
		return pipeline.User{}, pipeline.Errorf(pipeline.ErrUpstream, "%s returned no user id or login", l.cfg.OAuth.Name())
	}
	// A forge whose ids are not numbers (Bitbucket's {uuid}) gives UID.
	id := strconv.FormatInt(fu.ID, 10)
	if fu.UID != "" {
		id = fu.UID
	}
	return pipeline.User{
		ID:      l.cfg.OAuth.Name() + "|" + id,
		Login:   fu.Login,
		Token:   tok,
		Updated: pipeline.Now(),
	}, nil
}

// LinkResult is the reply of a completed connect: the signed-in user
// (whose identity and token do not change) and the account connected.
type LinkResult struct {
	UserID    string        `json:"user_id" description:"the signed-in user, unchanged"`
	UserName  string        `json:"user_name"`
	Connected LinkedAccount `json:"connected" description:"the forge account now connected to the user"`
}

// LinkedAccount is a forge account connected to a user.
type LinkedAccount struct {
	Forge  string `json:"forge"`
	UserID string `json:"user_id" description:"<forge>|<forge user id>"`
	Login  string `json:"login"`
	Status string `json:"status" description:"connected"`
}

// Name is the forge this login is for.
func (l *Login) Name() string { return l.cfg.OAuth.Name() }

// CanLink reports whether a user signed in with another forge may connect
// this one (the server keeps account links).
func (l *Login) CanLink() bool { return l.cfg.Links != nil }

// AuthorizeLink starts connecting this forge to the signed-in user userID:
// as Authorize, with a state that records userID (signed, single use).
func (l *Login) AuthorizeLink(redirectURI, userID string) (string, error) {
	if l.cfg.Links == nil {
		return "", pipeline.Errorf(pipeline.ErrNotImplemented, "connecting %s to an account is not available on this server", l.cfg.OAuth.Name())
	}
	if userID == "" || pipeline.ForgeName(userID) == l.cfg.OAuth.Name() {
		return "", pipeline.Invalid("Authorization", "connect %s from a session signed in with another forge", l.cfg.OAuth.Name())
	}
	if err := l.checkRedirect(redirectURI); err != nil {
		return "", err
	}
	if err := l.cfg.OAuth.OAuthConfigured(); err != nil {
		return "", err
	}
	state, err := l.cfg.States.NewLink(redirectURI, userID)
	if err != nil {
		return "", err
	}
	return l.cfg.OAuth.AuthorizeURL(state, redirectURI)
}

// completeLink finishes connecting this forge to the signed-in user
// (userID, login) with a state AuthorizeLink minted for link: it must be
// that same user (a state minted for another is ErrUnauthorized). It
// exchanges the code, stores the forge account's user with its token
// (encrypted, as a sign-in would) and links it to userID both ways. A
// forge account already linked to another user, or a user already linked
// to another account of this forge, is ErrConflict and nothing is
// stored. No JWT is issued: the caller's identity stays the one they
// signed in with.
func (l *Login) completeLink(ctx context.Context, code, state, redirectURI, link, userID, login string) (LinkResult, error) {
	if l.cfg.Links == nil {
		return LinkResult{}, pipeline.Errorf(pipeline.ErrNotImplemented, "connecting %s to an account is not available on this server", l.cfg.OAuth.Name())
	}
	if link != userID {
		return LinkResult{}, unauthorized("this state was not issued to connect an account for you; start again from /api/v1/login/" + l.cfg.OAuth.Name() + "/authorize with your token")
	}
	u, err := l.forgeUser(ctx, code, state, redirectURI)
	if err != nil {
		return LinkResult{}, err
	}
	if err := l.cfg.Links.LinkUsers(ctx, userID, u.ID); err != nil {
		if errors.Is(err, pipeline.ErrConflict) {
			return LinkResult{}, pipeline.Errorf(pipeline.ErrConflict, "the %s account %s is already linked to another Kontinuous user, or you are linked to another %s account", l.cfg.OAuth.Name(), u.Login, l.cfg.OAuth.Name())
		}
		return LinkResult{}, fmt.Errorf("auth: link %s: %w", l.cfg.OAuth.Name(), err)
	}
	if err := l.cfg.Users.PutUser(ctx, u); err != nil {
		return LinkResult{}, fmt.Errorf("auth: store user %s: %w", u.ID, err)
	}
	return LinkResult{UserID: userID, UserName: login,
		Connected: LinkedAccount{Forge: l.cfg.OAuth.Name(), UserID: u.ID, Login: u.Login, Status: pipeline.ConnectionStatus(u.Token)}}, nil
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
