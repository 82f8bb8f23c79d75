package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/kontinuous/kontinuous/api"
	"github.com/kontinuous/kontinuous/auth"
	"github.com/kontinuous/kontinuous/auth/oauth1"
	"github.com/kontinuous/kontinuous/pipeline/etcdstore"
)

// oauth1Settings is the OAuth 1.0a provider's row of the settings table.
var oauth1Settings = []setting{
	{flag: "oauth1-consumers", env: []string{"KONTINUOUS_OAUTH1_CONSUMERS"}, help: `JSON file of the OAuth 1.0a consumers (Bitbucket Data Center Application Links): [{"key", "name", "public_key" (PEM), "callback" (URL prefix)}]; empty = off. Removing a consumer (and restarting) revokes its tokens`,
		load: loadOAuth1},
}

// loadOAuth1 reads and checks the consumers file: every problem is
// reported, one line each.
func loadOAuth1(c *Config, path string) error {
	if path == "" {
		return nil
	}
	cs, err := oauth1.LoadConsumers(path)
	if err != nil {
		var lines []error
		for _, line := range strings.Split(err.Error(), "\n") {
			lines = append(lines, fmt.Errorf("%s: %s", path, line))
		}
		return errors.Join(lines...)
	}
	c.OAuth1Consumers = cs
	return nil
}

// newOAuth1 starts the OAuth 1.0a provider when consumers are configured
// (nil otherwise) and deletes the grants of consumers no longer listed.
func newOAuth1(ctx context.Context, cfg Config, store *etcdstore.Store, log *slog.Logger) (*oauth1.Provider, error) {
	if len(cfg.OAuth1Consumers) == 0 {
		return nil, nil
	}
	var _ auth.OnceStore = store
	p, err := oauth1.New(oauth1.Config{Consumers: cfg.OAuth1Consumers, PublicURL: cfg.URL, Store: store, Nonces: store})
	if err != nil {
		return nil, fmt.Errorf("setting --oauth1-consumers (KONTINUOUS_OAUTH1_CONSUMERS): %w", err)
	}
	n, err := p.Prune(ctx)
	if err != nil {
		return nil, fmt.Errorf("OAuth 1.0a: revoking the tokens of removed consumers: %w", err)
	}
	if n > 0 {
		log.Info("OAuth 1.0a: revoked the access tokens of consumers no longer in --oauth1-consumers", "tokens", n)
	}
	keys := make([]string, len(cfg.OAuth1Consumers))
	for i, c := range cfg.OAuth1Consumers {
		keys[i] = c.Key
	}
	log.Info("OAuth 1.0a provider on", "consumers", keys, "request_token_url", cfg.URL+"/oauth/1.0a/request-token")
	return p, nil
}

// oauth1Resources is the API's resources for p: with no provider the
// routes answer 501 (a nil *Provider must not become a non-nil interface).
func oauth1Resources(p *oauth1.Provider) *api.OAuth1Resources {
	if p == nil {
		return api.NewOAuth1Resources(nil)
	}
	return api.NewOAuth1Resources(p)
}
