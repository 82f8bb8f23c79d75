package main

import "github.com/kontinuous/kontinuous/api"

// forges lists what GET /api/v1/forges shows: each forge whose OAuth
// client is configured, then Auth0 when it is on.
func forges(cfg Config) []api.Forge {
	var out []api.Forge
	if cfg.GitHubClientID != "" {
		out = append(out, api.Forge{Name: "github", LoginURL: "/api/v1/login/github/authorize"})
	}
	if cfg.Bitbucket.Enabled() {
		out = append(out, api.Forge{Name: "bitbucket", LoginURL: "/api/v1/login/bitbucket/authorize"})
	}
	if cfg.BitbucketDC.Enabled() {
		out = append(out, api.Forge{Name: "bitbucket-dc", LoginURL: "/api/v1/login/bitbucket-dc/authorize"})
	}
	if cfg.Auth0Issuer != "" {
		out = append(out, api.Forge{Name: "auth0", Issuer: cfg.Auth0Issuer, Audience: cfg.Auth0Audience})
	}
	return out
}
