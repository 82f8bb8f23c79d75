package main

import (
	"strings"

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

func init() {
	settings = append(settings,
		setting{"bitbucket-client-id", []string{"BITBUCKET_CLIENT_ID"}, "", "Bitbucket Cloud OAuth consumer key (enables Bitbucket with --bitbucket-client-secret)"},
		setting{"bitbucket-client-secret", []string{"BITBUCKET_CLIENT_SECRET"}, "", "Bitbucket Cloud OAuth consumer secret"},
		setting{"bitbucket-url", []string{"BITBUCKET_URL"}, "https://bitbucket.org", "Bitbucket web base: /site/oauth2/authorize and /site/oauth2/access_token"},
		setting{"bitbucket-api-url", []string{"BITBUCKET_API_URL"}, "https://api.bitbucket.org/2.0", "Bitbucket REST base"},
	)
}

// loadBitbucket reads the BitbucketConfig settings.
func (c *Config) loadBitbucket(get func(string) string, bad func(name, format string, a ...any) error) error {
	b := &c.Bitbucket
	b.ClientID, b.ClientSecret = get("bitbucket-client-id"), get("bitbucket-client-secret")
	if (b.ClientID == "") != (b.ClientSecret == "") {
		return bad("bitbucket-client-id", "--bitbucket-client-id and --bitbucket-client-secret must be set together")
	}
	b.URL = strings.TrimSuffix(get("bitbucket-url"), "/")
	if err := checkURL(b.URL, false); err != nil {
		return bad("bitbucket-url", "%v", err)
	}
	b.APIURL = strings.TrimSuffix(get("bitbucket-api-url"), "/")
	if err := checkURL(b.APIURL, false); err != nil {
		return bad("bitbucket-api-url", "%v", err)
	}
	return nil
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
