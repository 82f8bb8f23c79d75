package github

import (
	"context"
	"net/http"
	"regexp"

	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/forge/forgeutil"
)

// What pipeline.Forge needs beyond the REST calls: GitHub's webhook
// headers, name rules, clone user and OAuth login.

// GitHub's webhook headers.
const (
	HeaderEvent     = "X-GitHub-Event"
	HeaderDelivery  = "X-GitHub-Delivery"
	HeaderSignature = "X-Hub-Signature-256"
)

// Delivery implements pipeline.Forge: a request is GitHub's when it
// carries X-GitHub-Event. The signature's shape (sha256= and 64 hex
// digits) and a delivery id are checked here, before the body is read.
func (s *SCM) Delivery(r *http.Request) (pipeline.WebhookRequest, bool, error) {
	return hook.Read(r, nil)
}

// hook is GitHub's webhook headers.
var hook = forgeutil.Hook{
	Event:     pipeline.WebhookHeader{Name: HeaderEvent, Description: "webhook event name"},
	Delivery:  pipeline.WebhookHeader{Name: HeaderDelivery, Description: "webhook delivery id"},
	Signature: pipeline.WebhookHeader{Name: HeaderSignature, Description: "sha256=<hex HMAC of the body with the webhook secret>"},
}

// WebhookHeaders implements pipeline.Forge.
func (s *SCM) WebhookHeaders() []pipeline.WebhookHeader { return hook.Headers() }

// GitHub's name rules: owner 1–39 of [A-Za-z0-9-], repo 1–100 of
// [A-Za-z0-9._-] and not "." or "..".
var names = forgeutil.NameRules{
	Owner:     regexp.MustCompile(`^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})$`),
	Repo:      regexp.MustCompile(`^[A-Za-z0-9._-]{1,100}$`),
	OwnerWhat: "GitHub owner name", RepoWhat: "GitHub repository name",
}

// ValidateRepoName checks owner and repo against GitHub's name rules.
func (s *SCM) ValidateRepoName(owner, repo string) error {
	return ValidateRepoName(owner, repo)
}

// ValidateRepoName checks owner and repo against GitHub's name rules.
func ValidateRepoName(owner, repo string) error {
	return names.Validate(owner, repo)
}

// CloneCredentials: GitHub takes any OAuth or installation token as the
// password of the user "x-access-token".
func (s *SCM) CloneCredentials(tok pipeline.ForgeToken) (string, string) {
	return "x-access-token", tok.AccessToken
}

// OAuthConfigured implements pipeline.ForgeOAuth.
func (s *SCM) OAuthConfigured() error {
	if s.oauth == nil {
		return (&OAuth{}).configured()
	}
	return s.oauth.configured()
}

// AuthorizeURL implements pipeline.ForgeOAuth.
func (s *SCM) AuthorizeURL(state, redirectURI string) (string, error) {
	if err := s.OAuthConfigured(); err != nil {
		return "", err
	}
	return s.oauth.AuthorizeURL(state, redirectURI)
}

// Exchange implements pipeline.ForgeOAuth.
func (s *SCM) Exchange(ctx context.Context, code, state, redirectURI string) (pipeline.ForgeToken, error) {
	if err := s.OAuthConfigured(); err != nil {
		return pipeline.ForgeToken{}, err
	}
	return s.oauth.Exchange(ctx, code, state, redirectURI)
}

// Refresh implements pipeline.ForgeOAuth: GitHub App user tokens expire
// and come with a refresh token; OAuth app tokens do not (ErrUnauthorized:
// nothing to refresh with).
func (s *SCM) Refresh(ctx context.Context, tok pipeline.ForgeToken) (pipeline.ForgeToken, error) {
	if err := s.OAuthConfigured(); err != nil {
		return pipeline.ForgeToken{}, err
	}
	return s.oauth.Refresh(ctx, tok)
}

// Refresh trades tok's refresh token at the token endpoint for a new
// token; errors are mapped as Exchange's are.
func (g *OAuth) Refresh(ctx context.Context, tok pipeline.ForgeToken) (pipeline.ForgeToken, error) {
	if err := g.configured(); err != nil {
		return pipeline.ForgeToken{}, err
	}
	if tok.RefreshToken == "" {
		return pipeline.ForgeToken{}, pipeline.Errorf(pipeline.ErrUnauthorized, "the GitHub token cannot be refreshed; log in again")
	}
	nt, err := forgeutil.Refresh(ctx, &g.cfg, g.client, tok)
	if err != nil {
		return pipeline.ForgeToken{}, g.exchangeError(ctx, err)
	}
	return nt, nil
}

var _ pipeline.ForgeOAuth = (*OAuth)(nil)

// Name is GitHub's identity prefix.
func (g *OAuth) Name() string { return "github" }

// OAuthConfigured implements pipeline.ForgeOAuth.
func (g *OAuth) OAuthConfigured() error { return g.configured() }
