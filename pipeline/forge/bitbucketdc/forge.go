// Package bitbucketdc is Bitbucket Data Center (and Server 7.21+) as a
// pipeline.Forge: login through an incoming OAuth 2.0 application link
// with PKCE, repositories, permissions, files, webhooks and build statuses
// through the REST API (/rest/api/latest), and clones over HTTPS with a
// configured service account's HTTP access token (Data Center does not
// accept OAuth tokens for git). The forge's name, and the prefix of its
// users' ids, is "bitbucket-dc"; a repository's owner is its project key
// and its name the repository slug. Errors wrap the pipeline sentinels and
// never carry a token, code or secret.
package bitbucketdc

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"golang.org/x/oauth2"

	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/forge/forgeutil"
)

// Name is the forge's name and its users' id prefix.
const Name = "bitbucket-dc"

// Scope is what Kontinuous asks for: webhooks need REPO_ADMIN.
const Scope = "REPO_ADMIN"

// Data Center's webhook headers.
const (
	HeaderEvent     = "X-Event-Key"
	HeaderDelivery  = "X-Request-Id"
	HeaderSignature = "X-Hub-Signature"
)

// Config configures New.
type Config struct {
	// URL is the Data Center base URL, e.g. https://bitbucket.example.com
	// (--bitbucket-dc-url).
	URL string
	// ClientID and ClientSecret of the incoming OAuth 2.0 application
	// link; when either is empty, login answers ErrNotImplemented.
	ClientID, ClientSecret string
	// RedirectURL is the link's redirect URL, used when a login gives none
	// ({public url}/auth/callback/bitbucket-dc).
	RedirectURL string
	// CloneUser and CloneToken are the service account and its HTTP
	// access token (read on the repositories) with which executors clone.
	CloneUser, CloneToken string
	// HTTPClient makes the calls (default: a client with a 30 s timeout).
	HTTPClient *http.Client
	// PermissionTTL is how long a permission look-up is reused (default 30 s).
	PermissionTTL time.Duration
	// Logger receives diagnostics (default: discarded).
	Logger *slog.Logger
}

// Forge is Bitbucket Data Center as pipeline.Forge. It is safe for
// concurrent use.
type Forge struct {
	cfg   Config
	base  string
	api   string
	hc    *http.Client
	oauth oauth2.Config
	log   *slog.Logger
	perms *forgeutil.PermCache
}

var _ pipeline.Forge = (*Forge)(nil)
var _ pipeline.RepoAccessor = (*Forge)(nil)

// New checks cfg and returns the forge.
func New(cfg Config) (*Forge, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil {
		return nil, pipeline.Invalid("bitbucket-dc-url", "must be an absolute http(s) URL without credentials")
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	if cfg.PermissionTTL <= 0 {
		cfg.PermissionTTL = 30 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	base := strings.TrimSuffix(cfg.URL, "/")
	return &Forge{
		cfg: cfg, base: base, api: base + "/rest/api/latest", hc: cfg.HTTPClient, log: log,
		perms: forgeutil.NewPermCache(cfg.PermissionTTL, 0, nil),
		oauth: oauth2.Config{
			ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret, RedirectURL: cfg.RedirectURL,
			Endpoint: oauth2.Endpoint{
				AuthURL:   base + "/rest/oauth2/latest/authorize",
				TokenURL:  base + "/rest/oauth2/latest/token",
				AuthStyle: oauth2.AuthStyleInParams,
			},
			Scopes: []string{Scope},
		},
	}, nil
}

// Name implements pipeline.Forge.
func (f *Forge) Name() string { return Name }

// dcEvents are the event keys only Data Center sends (Bitbucket Cloud
// also uses X-Event-Key, with other names and X-Request-UUID).
var dcEvents = map[string]bool{
	"repo:refs_changed": true, "repo:modified": true, "repo:forked": true, "repo:comment:added": true,
	"diagnostics:ping": true, "mirror:repo_synchronized": true,
}

// Delivery implements pipeline.Forge: a request is Data Center's when its
// X-Event-Key is one of Data Center's events (pr:*, repo:refs_changed,
// diagnostics:ping, ...) or it carries X-Request-Id without Cloud's
// X-Request-UUID.
func (f *Forge) Delivery(r *http.Request) (pipeline.WebhookRequest, bool, error) {
	return hook.Read(r, dataCenter)
}

// dataCenter reports whether r, carrying event, is Data Center's.
func dataCenter(r *http.Request, event string) bool {
	if r.Header.Get("X-Request-UUID") != "" {
		return false
	}
	return dcEvents[event] || strings.HasPrefix(event, "pr:") || r.Header.Get(HeaderDelivery) != ""
}

// hook is Data Center's webhook headers.
var hook = forgeutil.Hook{
	Event:     pipeline.WebhookHeader{Name: HeaderEvent, Description: "Bitbucket Data Center event key (repo:refs_changed, pr:opened, pr:from_ref_updated)"},
	Delivery:  pipeline.WebhookHeader{Name: HeaderDelivery, Description: "Bitbucket Data Center delivery id"},
	Signature: pipeline.WebhookHeader{Name: HeaderSignature, Description: "sha256=<hex HMAC-SHA256 of the body with the webhook secret> (Bitbucket Data Center)"},
}

// WebhookHeaders implements pipeline.Forge.
func (f *Forge) WebhookHeaders() []pipeline.WebhookHeader { return hook.Headers() }

// Data Center's name rules: a project key starts with a letter and holds
// letters, digits and underscores (up to 128); a slug holds letters,
// digits, '.', '-' and '_' (up to 128).
var names = forgeutil.NameRules{
	Owner:     regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]{0,127}$`),
	Repo:      regexp.MustCompile(`^[A-Za-z0-9._-]{1,128}$`),
	OwnerWhat: "Bitbucket Data Center project key", RepoWhat: "Bitbucket Data Center repository slug",
}

// ValidateRepoName implements pipeline.Forge.
func (f *Forge) ValidateRepoName(owner, repo string) error {
	return names.Validate(owner, repo)
}

// CloneCredentials implements pipeline.Forge: Data Center does not let
// OAuth tokens clone, so executors clone as the configured service
// account with its HTTP access token, whoever's tok it is.
func (f *Forge) CloneCredentials(pipeline.ForgeToken) (string, string) {
	return f.cfg.CloneUser, f.cfg.CloneToken
}

// OAuthConfigured implements pipeline.ForgeOAuth.
func (f *Forge) OAuthConfigured() error {
	if f.cfg.ClientID == "" || f.cfg.ClientSecret == "" {
		return pipeline.Errorf(pipeline.ErrNotImplemented, "Bitbucket Data Center login is not configured on this server (set BITBUCKET_DC_URL, BITBUCKET_DC_CLIENT_ID and BITBUCKET_DC_CLIENT_SECRET)")
	}
	return nil
}

// verifier is the login's PKCE code verifier, derived from its state with
// a key only this server holds (the client secret): the state is signed
// and single use, so the verifier needs no storage of its own, and one
// who intercepts the code and the state cannot compute it.
func (f *Forge) verifier(state string) string {
	k := sha256.Sum256([]byte("kontinuous bitbucket-dc pkce\x00" + f.cfg.ClientSecret))
	m := hmac.New(sha256.New, k[:])
	m.Write([]byte(state))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func (f *Forge) redirect(redirectURI string) []oauth2.AuthCodeOption {
	if redirectURI == "" {
		return nil
	}
	return []oauth2.AuthCodeOption{oauth2.SetAuthURLParam("redirect_uri", redirectURI)}
}

// AuthorizeURL implements pipeline.ForgeOAuth: Data Center's authorize
// page with client_id, redirect_uri, scope, state and the S256 PKCE
// challenge.
func (f *Forge) AuthorizeURL(state, redirectURI string) (string, error) {
	if err := f.OAuthConfigured(); err != nil {
		return "", err
	}
	if state == "" {
		return "", pipeline.Invalid("state", "is required")
	}
	opts := append(f.redirect(redirectURI), oauth2.S256ChallengeOption(f.verifier(state)))
	return f.oauth.AuthCodeURL(state, opts...), nil
}

// Exchange implements pipeline.ForgeOAuth, sending the PKCE verifier.
func (f *Forge) Exchange(ctx context.Context, code, state, redirectURI string) (pipeline.ForgeToken, error) {
	if err := f.OAuthConfigured(); err != nil {
		return pipeline.ForgeToken{}, err
	}
	opts := append(f.redirect(redirectURI), oauth2.VerifierOption(f.verifier(state)))
	tok, err := forgeutil.Exchange(ctx, &f.oauth, f.hc, code, opts...)
	if err != nil {
		return pipeline.ForgeToken{}, f.oauthError(ctx, err)
	}
	return tok, nil
}

// Refresh implements pipeline.ForgeOAuth (Data Center rotates refresh
// tokens; access tokens live about an hour).
func (f *Forge) Refresh(ctx context.Context, tok pipeline.ForgeToken) (pipeline.ForgeToken, error) {
	if err := f.OAuthConfigured(); err != nil {
		return pipeline.ForgeToken{}, err
	}
	if tok.RefreshToken == "" {
		return pipeline.ForgeToken{}, pipeline.Errorf(pipeline.ErrUnauthorized, "the Bitbucket Data Center token cannot be refreshed; log in again through /api/v1/login/bitbucket-dc/authorize")
	}
	nt, err := forgeutil.Refresh(ctx, &f.oauth, f.hc, tok)
	if err != nil {
		return pipeline.ForgeToken{}, f.oauthError(ctx, err)
	}
	return nt, nil
}

// oauthError maps an oauth2 error to a domain error carrying only Data
// Center's error code or the HTTP status.
func (f *Forge) oauthError(ctx context.Context, err error) error {
	tf := forgeutil.TokenFailureOf(ctx, err)
	switch {
	case tf.Canceled != nil:
		return fmt.Errorf("bitbucketdc: token request: %w", tf.Canceled)
	case !tf.Answered:
		return pipeline.Errorf(pipeline.ErrUpstream, "cannot reach Bitbucket Data Center's token endpoint at %s", f.oauth.Endpoint.TokenURL)
	case tf.Code == "invalid_grant" || tf.Code == "access_denied":
		return pipeline.Errorf(pipeline.ErrUnauthorized, "Bitbucket Data Center refused the grant (%s); log in again through /api/v1/login/bitbucket-dc/authorize", tf.Code)
	case tf.Code == "invalid_client" || tf.Code == "unauthorized_client":
		return pipeline.Errorf(pipeline.ErrUpstream, "Bitbucket Data Center refused this server's OAuth client (%s); check BITBUCKET_DC_CLIENT_ID and BITBUCKET_DC_CLIENT_SECRET", tf.Code)
	case tf.Code != "":
		return pipeline.Errorf(pipeline.ErrUpstream, "Bitbucket Data Center refused the token request (%s)", tf.Code)
	}
	return tf.StatusError("Bitbucket Data Center")
}
