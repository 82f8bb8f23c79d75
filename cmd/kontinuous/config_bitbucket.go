package main

import (
	"github.com/kontinuous/kontinuous/pipeline/forge/bitbucket"
)

// BitbucketConfig holds the Bitbucket Cloud settings. The
// forge is enabled when the consumer key and secret are both set.
type BitbucketConfig struct {
	// ClientID and ClientSecret are the OAuth consumer's key and secret.
	ClientID, ClientSecret string
	// URL is the web base (/site/oauth2/...), APIURL the REST base.
	URL, APIURL string
}

// Enabled reports whether the Bitbucket forge is on.
func (b BitbucketConfig) Enabled() bool { return b.ClientID != "" && b.ClientSecret != "" }

// bitbucketSettings are the Bitbucket Cloud rows of the settings table.
var bitbucketSettings = []setting{
	{flag: "bitbucket-client-id", env: []string{"BITBUCKET_CLIENT_ID"}, help: "Bitbucket Cloud OAuth consumer key (enables Bitbucket with --bitbucket-client-secret)",
		load: text(func(c *Config) *string { return &c.Bitbucket.ClientID })},
	{flag: "bitbucket-client-secret", env: []string{"BITBUCKET_CLIENT_SECRET"}, help: "Bitbucket Cloud OAuth consumer secret",
		load: text(func(c *Config) *string { return &c.Bitbucket.ClientSecret })},
	{check: together("bitbucket-client-id", "bitbucket-client-secret", func(c *Config) (string, string) { return c.Bitbucket.ClientID, c.Bitbucket.ClientSecret })},
	{flag: "bitbucket-url", env: []string{"BITBUCKET_URL"}, def: "https://bitbucket.org", help: "Bitbucket web base: /site/oauth2/authorize and /site/oauth2/access_token",
		load: baseURL(func(c *Config) *string { return &c.Bitbucket.URL })},
	{flag: "bitbucket-api-url", env: []string{"BITBUCKET_API_URL"}, def: "https://api.bitbucket.org/2.0", help: "Bitbucket REST base",
		load: baseURL(func(c *Config) *string { return &c.Bitbucket.APIURL })},
}

// newBitbucket returns the Bitbucket forge, nil when it is not enabled.
func newBitbucket(cfg Config) (*bitbucket.Forge, error) {
	if !cfg.Bitbucket.Enabled() {
		return nil, nil
	}
	return bitbucket.New(bitbucket.Config{
		ClientID: cfg.Bitbucket.ClientID, ClientSecret: cfg.Bitbucket.ClientSecret,
		WebURL: cfg.Bitbucket.URL, APIURL: cfg.Bitbucket.APIURL,
	})
}
