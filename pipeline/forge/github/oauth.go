package github

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"golang.org/x/oauth2"

	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/forge/forgeutil"
)

// Scope is the scope Kontinuous asks for.
const Scope = "user,repo,admin:repo_hook"

// OAuthConfig configures NewOAuth.
type OAuthConfig struct {
	// ClientID and ClientSecret of the GitHub OAuth app. When either is
	// empty, GitHub login answers ErrNotImplemented.
	ClientID     string
	ClientSecret string
	// WebURL is GitHub's web base (--github-url, default
	// https://github.com; a GitHub Enterprise host works the same).
	WebURL string
	// HTTPClient talks to GitHub (default: a client with a 15 s timeout).
	HTTPClient *http.Client
}

// OAuth is the server side of GitHub's OAuth web flow.
type OAuth struct {
	cfg    oauth2.Config
	client *http.Client
}

// NewOAuth checks cfg and returns an OAuth whose endpoints are
// {WebURL}/login/oauth/authorize and {WebURL}/login/oauth/access_token.
// The client secret is sent in the POST body of the exchange, never in a
// URL or an Authorization header.
func NewOAuth(cfg OAuthConfig) (*OAuth, error) {
	if cfg.WebURL == "" {
		cfg.WebURL = "https://github.com"
	}
	u, err := url.Parse(cfg.WebURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, pipeline.Invalid("github-url", "must be an absolute http(s) URL")
	}
	base := strings.TrimSuffix(cfg.WebURL, "/")
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 15 * time.Second}
	}
	return &OAuth{
		cfg: oauth2.Config{
			ClientID:     cfg.ClientID,
			ClientSecret: cfg.ClientSecret,
			Endpoint: oauth2.Endpoint{
				AuthURL:   base + "/login/oauth/authorize",
				TokenURL:  base + "/login/oauth/access_token",
				AuthStyle: oauth2.AuthStyleInParams,
			},
			// One comma-separated element, as the contract spells the URL.
			Scopes: []string{Scope},
		},
		client: cfg.HTTPClient,
	}, nil
}

// configured is nil when the OAuth app is set.
func (g *OAuth) configured() error {
	if g.cfg.ClientID == "" || g.cfg.ClientSecret == "" {
		return pipeline.Errorf(pipeline.ErrNotImplemented, "GitHub login is not configured on this server (set GITHUB_CLIENT_ID and GITHUB_CLIENT_SECRET)")
	}
	return nil
}

// AuthorizeURL is where to send the browser: GitHub's authorize page with
// client_id, redirect_uri (when not empty), scope and state.
func (g *OAuth) AuthorizeURL(state, redirectURI string) (string, error) {
	if err := g.configured(); err != nil {
		return "", err
	}
	var opts []oauth2.AuthCodeOption
	if redirectURI != "" {
		opts = append(opts, oauth2.SetAuthURLParam("redirect_uri", redirectURI))
	}
	return g.cfg.AuthCodeURL(state, opts...), nil
}

// codesRefused are GitHub's answers that mean the code (not the server) is
// at fault: the caller gets a 401.
var codesRefused = map[string]bool{
	"bad_verification_code": true,
	"redirect_uri_mismatch": true,
	"unverified_user_email": true,
	"access_denied":         true,
	"invalid_grant":         true,
	"expired_token":         true,
}

// Exchange trades code for the user's GitHub token. GitHub's error replies
// (which come with HTTP 200) are failures: a bad, spent or expired code is
// ErrUnauthorized; wrong client credentials, other errors, 5xx and network
// failures are ErrUpstream. No error includes the code or the secret.
func (g *OAuth) Exchange(ctx context.Context, code, state, redirectURI string) (pipeline.ForgeToken, error) {
	if err := g.configured(); err != nil {
		return pipeline.ForgeToken{}, err
	}
	var opts []oauth2.AuthCodeOption
	if redirectURI != "" {
		opts = append(opts, oauth2.SetAuthURLParam("redirect_uri", redirectURI))
	}
	if state != "" {
		opts = append(opts, oauth2.SetAuthURLParam("state", state))
	}
	tok, err := forgeutil.Exchange(ctx, &g.cfg, g.client, code, opts...)
	if err != nil {
		return pipeline.ForgeToken{}, g.exchangeError(ctx, err)
	}
	return tok, nil
}

// exchangeError maps an oauth2 error to a domain error whose text holds
// only what is safe to log: GitHub's error code, the HTTP status or the
// transport failure (the token URL carries no secret).
func (g *OAuth) exchangeError(ctx context.Context, err error) error {
	tf := forgeutil.TokenFailureOf(ctx, err)
	switch {
	case tf.Canceled != nil:
		return fmt.Errorf("auth: GitHub code exchange: %w", tf.Canceled)
	case !tf.Answered:
		return fmt.Errorf("%w (%s)", pipeline.Errorf(pipeline.ErrUpstream, "cannot exchange the code with GitHub at %s", g.cfg.Endpoint.TokenURL), tf.Detail)
	case codesRefused[tf.Code]:
		return pipeline.Errorf(pipeline.ErrUnauthorized, "GitHub refused the code (%s); start the login again", tf.Code)
	case tf.Code == "incorrect_client_credentials":
		return pipeline.Errorf(pipeline.ErrUpstream, "GitHub refused this server's OAuth client credentials (incorrect_client_credentials); check GITHUB_CLIENT_ID and GITHUB_CLIENT_SECRET")
	case tf.Code != "":
		return pipeline.Errorf(pipeline.ErrUpstream, "GitHub refused the code exchange (%s)", tf.Code)
	}
	return tf.StatusError("GitHub")
}
