package main

import (
	"log/slog"
	"strings"

	"github.com/kontinuous/kontinuous/pipeline/forge/bitbucketdc"
)

// bitbucketDCSettings are the Bitbucket Data Center rows of the settings
// table.
var bitbucketDCSettings = []setting{
	{flag: "bitbucket-dc-url", env: []string{"BITBUCKET_DC_URL"}, help: "Bitbucket Data Center base URL, e.g. https://bitbucket.example.com (the forge is on when this, the client id and the secret are set)",
		load: func(c *Config, v string) error {
			if c.BitbucketDC.URL = strings.TrimSuffix(v, "/"); c.BitbucketDC.URL != "" {
				return checkURL(c.BitbucketDC.URL, false)
			}
			return nil
		}},
	{flag: "bitbucket-dc-client-id", env: []string{"BITBUCKET_DC_CLIENT_ID"}, help: "client id of the incoming OAuth 2.0 application link in Bitbucket Data Center",
		load: text(func(c *Config) *string { return &c.BitbucketDC.ClientID })},
	{flag: "bitbucket-dc-client-secret", env: []string{"BITBUCKET_DC_CLIENT_SECRET"}, help: "client secret of that application link",
		load: text(func(c *Config) *string { return &c.BitbucketDC.ClientSecret })},
	{check: together("bitbucket-dc-client-id", "bitbucket-dc-client-secret", func(c *Config) (string, string) { return c.BitbucketDC.ClientID, c.BitbucketDC.ClientSecret })},
	{check: func(c *Config) error {
		if c.BitbucketDC.ClientID != "" && c.BitbucketDC.URL == "" {
			return problemf("bitbucket-dc-url", "required when --bitbucket-dc-client-id is set")
		}
		return nil
	}},
	{flag: "bitbucket-dc-clone-user", env: []string{"BITBUCKET_DC_CLONE_USER"}, help: "service account stages clone Bitbucket Data Center repositories as (OAuth tokens cannot clone on Data Center)",
		load: text(func(c *Config) *string { return &c.BitbucketDC.CloneUser })},
	{flag: "bitbucket-dc-clone-token", env: []string{"BITBUCKET_DC_CLONE_TOKEN"}, help: "that service account's HTTP access token (read access to the repositories)",
		load: text(func(c *Config) *string { return &c.BitbucketDC.CloneToken })},
	{check: together("bitbucket-dc-clone-user", "bitbucket-dc-clone-token", func(c *Config) (string, string) { return c.BitbucketDC.CloneUser, c.BitbucketDC.CloneToken })},
}

// BitbucketDCConfig is the Bitbucket Data Center forge's settings.
type BitbucketDCConfig struct {
	URL, ClientID, ClientSecret string
	CloneUser, CloneToken       string
}

// Enabled: the base URL and the OAuth client are set.
func (b BitbucketDCConfig) Enabled() bool {
	return b.URL != "" && b.ClientID != "" && b.ClientSecret != ""
}

// newBitbucketDCForge returns the Data Center forge, nil when it is off.
func newBitbucketDCForge(cfg Config, log *slog.Logger) (*bitbucketdc.Forge, error) {
	b := cfg.BitbucketDC
	if !b.Enabled() {
		return nil, nil
	}
	if b.CloneUser == "" {
		log.Warn("Bitbucket Data Center builds cannot clone: set --bitbucket-dc-clone-user and --bitbucket-dc-clone-token (BITBUCKET_DC_CLONE_USER, BITBUCKET_DC_CLONE_TOKEN)")
	}
	return bitbucketdc.New(bitbucketdc.Config{
		URL: b.URL, ClientID: b.ClientID, ClientSecret: b.ClientSecret,
		RedirectURL: strings.TrimSuffix(cfg.URL, "/") + "/auth/callback/" + bitbucketdc.Name,
		CloneUser:   b.CloneUser, CloneToken: b.CloneToken, PermissionTTL: cfg.PermissionTTL, Logger: log,
	})
}
