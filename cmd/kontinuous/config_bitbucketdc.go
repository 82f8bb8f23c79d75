package main

import (
	"log/slog"
	"strings"

	"github.com/kontinuous/kontinuous/pipeline/forge/bitbucketdc"
)

func init() {
	settings = append(settings,
		setting{"bitbucket-dc-url", []string{"BITBUCKET_DC_URL"}, "", "Bitbucket Data Center base URL, e.g. https://bitbucket.example.com (the forge is on when this, the client id and the secret are set)"},
		setting{"bitbucket-dc-client-id", []string{"BITBUCKET_DC_CLIENT_ID"}, "", "client id of the incoming OAuth 2.0 application link in Bitbucket Data Center"},
		setting{"bitbucket-dc-client-secret", []string{"BITBUCKET_DC_CLIENT_SECRET"}, "", "client secret of that application link"},
		setting{"bitbucket-dc-clone-user", []string{"BITBUCKET_DC_CLONE_USER"}, "", "service account stages clone Bitbucket Data Center repositories as (OAuth tokens cannot clone on Data Center)"},
		setting{"bitbucket-dc-clone-token", []string{"BITBUCKET_DC_CLONE_TOKEN"}, "", "that service account's HTTP access token (read access to the repositories)"},
	)
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

// loadBitbucketDC reads the BitbucketDCConfig settings.
func (c *Config) loadBitbucketDC(get func(string) string, bad func(name, format string, a ...any) error) error {
	b := BitbucketDCConfig{
		URL: strings.TrimSuffix(get("bitbucket-dc-url"), "/"), ClientID: get("bitbucket-dc-client-id"), ClientSecret: get("bitbucket-dc-client-secret"),
		CloneUser: get("bitbucket-dc-clone-user"), CloneToken: get("bitbucket-dc-clone-token"),
	}
	if b.URL != "" {
		if err := checkURL(b.URL, false); err != nil {
			return bad("bitbucket-dc-url", "%v", err)
		}
	}
	if (b.ClientID == "") != (b.ClientSecret == "") {
		return bad("bitbucket-dc-client-id", "--bitbucket-dc-client-id and --bitbucket-dc-client-secret must be set together")
	}
	if b.ClientID != "" && b.URL == "" {
		return bad("bitbucket-dc-url", "required when --bitbucket-dc-client-id is set")
	}
	if (b.CloneUser == "") != (b.CloneToken == "") {
		return bad("bitbucket-dc-clone-user", "--bitbucket-dc-clone-user and --bitbucket-dc-clone-token must be set together")
	}
	c.BitbucketDC = b
	return nil
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
