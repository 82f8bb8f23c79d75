package bitbucket

import (
	"context"
	"fmt"
	"hash/fnv"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"golang.org/x/oauth2"

	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/forge/forgeutil"
)

// Name is the forge's name and its users' id prefix ("bitbucket|{uuid}").
const Name = "bitbucket"

// Bitbucket's webhook headers.
const (
	HeaderEvent     = "X-Event-Key"
	HeaderDelivery  = "X-Request-UUID"
	HeaderHook      = "X-Hook-UUID"
	HeaderSignature = "X-Hub-Signature"
)

// ReconnectPath is where a user whose connection expired signs in again.
const ReconnectPath = "/api/v1/login/bitbucket/authorize"

// Config configures New.
type Config struct {
	// ClientID and ClientSecret are the OAuth consumer's key and secret.
	// When either is empty, Bitbucket login answers ErrNotImplemented.
	ClientID     string
	ClientSecret string
	// WebURL is the web base (--bitbucket-url, default https://bitbucket.org):
	// /site/oauth2/authorize and /site/oauth2/access_token live there.
	WebURL string
	// APIURL is the REST base (--bitbucket-api-url, default
	// https://api.bitbucket.org/2.0).
	APIURL string
	// HTTPClient talks to Bitbucket (default: a 15 s timeout).
	HTTPClient *http.Client
}

// Forge is Bitbucket Cloud behind pipeline.Forge.
type Forge struct {
	cfg   oauth2.Config
	api   string
	http  *http.Client
	perms *forgeutil.PermCache
}

var _ pipeline.Forge = (*Forge)(nil)

// New checks cfg and returns the forge.
func New(cfg Config) (*Forge, error) {
	if cfg.WebURL == "" {
		cfg.WebURL = "https://bitbucket.org"
	}
	if cfg.APIURL == "" {
		cfg.APIURL = "https://api.bitbucket.org/2.0"
	}
	for field, v := range map[string]string{"bitbucket-url": cfg.WebURL, "bitbucket-api-url": cfg.APIURL} {
		u, err := url.Parse(v)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return nil, pipeline.Invalid(field, "must be an absolute http(s) URL")
		}
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 15 * time.Second}
	}
	web := strings.TrimSuffix(cfg.WebURL, "/")
	return &Forge{
		cfg: oauth2.Config{
			ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret,
			// Scopes are set on the consumer, not asked for.
			Endpoint: oauth2.Endpoint{
				AuthURL:   web + "/site/oauth2/authorize",
				TokenURL:  web + "/site/oauth2/access_token",
				AuthStyle: oauth2.AuthStyleInHeader,
			},
		},
		api:   strings.TrimSuffix(cfg.APIURL, "/"),
		http:  cfg.HTTPClient,
		perms: forgeutil.NewPermCache(forgeutil.PermissionTTL, 0, nil),
	}, nil
}

// Name implements pipeline.Forge.
func (f *Forge) Name() string { return Name }

func (f *Forge) client(tok pipeline.ForgeToken) *client {
	return &client{http: f.http, base: f.api, tok: tok.AccessToken}
}

// OAuthConfigured implements pipeline.ForgeOAuth.
func (f *Forge) OAuthConfigured() error {
	if f.cfg.ClientID == "" || f.cfg.ClientSecret == "" {
		return pipeline.Errorf(pipeline.ErrNotImplemented, "Bitbucket login is not configured on this server (set BITBUCKET_CLIENT_ID and BITBUCKET_CLIENT_SECRET)")
	}
	return nil
}

// AuthorizeURL implements pipeline.ForgeOAuth: the consumer's authorize
// page with client_id, response_type=code, state and redirect_uri (when
// not empty: Bitbucket requires it to start with the consumer's callback).
func (f *Forge) AuthorizeURL(state, redirectURI string) (string, error) {
	if err := f.OAuthConfigured(); err != nil {
		return "", err
	}
	var opts []oauth2.AuthCodeOption
	if redirectURI != "" {
		opts = append(opts, oauth2.SetAuthURLParam("redirect_uri", redirectURI))
	}
	return f.cfg.AuthCodeURL(state, opts...), nil
}

// Exchange implements pipeline.ForgeOAuth: the code is traded at
// /site/oauth2/access_token with the consumer as HTTP Basic.
func (f *Forge) Exchange(ctx context.Context, code, state, redirectURI string) (pipeline.ForgeToken, error) {
	if err := f.OAuthConfigured(); err != nil {
		return pipeline.ForgeToken{}, err
	}
	var opts []oauth2.AuthCodeOption
	if redirectURI != "" {
		opts = append(opts, oauth2.SetAuthURLParam("redirect_uri", redirectURI))
	}
	tok, err := forgeutil.Exchange(ctx, &f.cfg, f.http, code, opts...)
	if err != nil {
		return pipeline.ForgeToken{}, f.tokenError(ctx, err, "code")
	}
	return tok, nil
}

// Refresh implements pipeline.ForgeOAuth. Bitbucket rotates the refresh
// token on every use: the caller must store the returned pair before
// anything else uses the old one (it is invalid from now on). A refused
// refresh token (invalid_grant) is ErrUnauthorized saying to reconnect.
func (f *Forge) Refresh(ctx context.Context, tok pipeline.ForgeToken) (pipeline.ForgeToken, error) {
	if err := f.OAuthConfigured(); err != nil {
		return pipeline.ForgeToken{}, err
	}
	if tok.RefreshToken == "" {
		return pipeline.ForgeToken{}, pipeline.Errorf(pipeline.ErrUnauthorized, "the Bitbucket connection cannot be refreshed; reconnect through %s", ReconnectPath)
	}
	nt, err := forgeutil.Refresh(ctx, &f.cfg, f.http, tok)
	if err != nil {
		return pipeline.ForgeToken{}, f.tokenError(ctx, err, "refresh token")
	}
	return nt, nil
}

// tokenError maps an oauth2 failure to a domain error holding only what is
// safe to log (the OAuth error code or HTTP status; never a token).
func (f *Forge) tokenError(ctx context.Context, err error, what string) error {
	tf := forgeutil.TokenFailureOf(ctx, err)
	switch {
	case tf.Canceled != nil:
		return fmt.Errorf("bitbucket: token: %w", tf.Canceled)
	case !tf.Answered:
		return fmt.Errorf("%w (%s)", pipeline.Errorf(pipeline.ErrUpstream, "cannot reach Bitbucket's token endpoint at %s", f.cfg.Endpoint.TokenURL), tf.Detail)
	}
	switch tf.Code {
	case "invalid_grant", "access_denied", "invalid_request", "unauthorized_client":
		if what == "refresh token" {
			return pipeline.Errorf(pipeline.ErrUnauthorized, "Bitbucket refused the refresh token (%s): the connection expired; reconnect through %s", tf.Code, ReconnectPath)
		}
		return pipeline.Errorf(pipeline.ErrUnauthorized, "Bitbucket refused the code (%s); start the login again", tf.Code)
	case "invalid_client":
		return pipeline.Errorf(pipeline.ErrUpstream, "Bitbucket refused this server's OAuth consumer (invalid_client); check BITBUCKET_CLIENT_ID and BITBUCKET_CLIENT_SECRET")
	case "":
		return tf.StatusError("Bitbucket")
	}
	return pipeline.Errorf(pipeline.ErrUpstream, "Bitbucket refused the %s (%s)", what, tf.Code)
}

// Delivery implements pipeline.Forge: a request is Bitbucket Cloud's when
// it carries X-Event-Key and is not Bitbucket Data Center's (which also
// sends X-Event-Key: see dataCenter). X-Hub-Signature must be sha256= and
// 64 hex digits and X-Request-UUID present.
func (f *Forge) Delivery(r *http.Request) (pipeline.WebhookRequest, bool, error) {
	return hook.Read(r, func(r *http.Request, event string) bool { return !dataCenter(r, event) })
}

// dataCenter reports whether r is a Bitbucket Data Center delivery: Data
// Center sends X-Request-Id where Cloud sends X-Request-UUID and
// X-Hook-UUID, and names its events differently (repo:refs_changed,
// pr:*, diagnostics:ping).
func dataCenter(r *http.Request, event string) bool {
	if r.Header.Get(HeaderDelivery) != "" || r.Header.Get("X-Hook-UUID") != "" {
		return false
	}
	return r.Header.Get("X-Request-Id") != "" || event == "repo:refs_changed" ||
		strings.HasPrefix(event, "pr:") || strings.HasPrefix(event, "diagnostics:")
}

// hook is Bitbucket Cloud's webhook headers.
var hook = forgeutil.Hook{
	Event:     pipeline.WebhookHeader{Name: HeaderEvent, Description: "Bitbucket event key (repo:push, pullrequest:created, pullrequest:updated)"},
	Delivery:  pipeline.WebhookHeader{Name: HeaderDelivery, Description: "Bitbucket delivery id (deduplicated)"},
	Signature: pipeline.WebhookHeader{Name: HeaderSignature, Description: "sha256=<hex HMAC-SHA256 of the body with the webhook secret>"},
}

// WebhookHeaders implements pipeline.Forge.
func (f *Forge) WebhookHeaders() []pipeline.WebhookHeader { return hook.Headers() }

// Bitbucket's names: workspace slug 1–62 of [A-Za-z0-9_-]; repository
// slug 1–62 of [A-Za-z0-9._-], not "." or "..". Bitbucket lower-cases
// slugs; the pipeline key is case-folded anyway.
var names = forgeutil.NameRules{
	Owner:     regexp.MustCompile(`^[A-Za-z0-9_-]{1,62}$`),
	Repo:      regexp.MustCompile(`^[A-Za-z0-9._-]{1,62}$`),
	OwnerWhat: "Bitbucket workspace", RepoWhat: "Bitbucket repository slug",
}

// ValidateRepoName implements pipeline.Forge.
func (f *Forge) ValidateRepoName(owner, repo string) error {
	return names.Validate(owner, repo)
}

// CloneCredentials implements pipeline.Forge: Bitbucket takes an OAuth
// access token as the password of the user "x-token-auth".
func (f *Forge) CloneCredentials(tok pipeline.ForgeToken) (string, string) {
	return "x-token-auth", tok.AccessToken
}

// ID64 maps a Bitbucket uuid ("{…}") to the int64 the forge-neutral ports
// carry for repository, webhook and user ids: FNV-1a of the lower-cased
// uuid, never 0. It is stable, so a payload's repository.uuid maps to the
// id recorded at pipeline creation.
func ID64(uuid string) int64 {
	h := fnv.New64a()
	h.Write([]byte(strings.ToLower(uuid)))
	v := int64(h.Sum64() & (1<<63 - 1))
	if v == 0 {
		v = 1
	}
	return v
}
