package main

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/kontinuous/kontinuous/pipeline"
	githubscm "github.com/kontinuous/kontinuous/pipeline/forge/github"
)

// With GitHub, Bitbucket Cloud and Bitbucket Data Center all on, the
// registry hands each delivery to the forge that sent it: Cloud and Data
// Center both send X-Event-Key, told apart by X-Request-UUID/X-Hook-UUID
// (Cloud) and X-Request-Id (Data Center).
func TestForgesRouteEachDeliveryToItsForge(t *testing.T) {
	cfg := Config{
		URL:         "https://ci.example.com",
		Bitbucket:   BitbucketConfig{ClientID: "k", ClientSecret: "s", URL: "https://bitbucket.org", APIURL: "https://api.bitbucket.org/2.0"},
		BitbucketDC: BitbucketDCConfig{URL: "https://bitbucket.example.com", ClientID: "c", ClientSecret: "s", CloneUser: "ci", CloneToken: "t"},
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	gh, err := githubscm.New(githubscm.Config{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	bb, err := newBitbucket(cfg)
	if err != nil || bb == nil {
		t.Fatalf("bitbucket: %v", err)
	}
	dc, err := newBitbucketDCForge(cfg, log)
	if err != nil || dc == nil {
		t.Fatalf("bitbucket-dc: %v", err)
	}
	reg := pipeline.NewForges(gh, bb, dc)
	sig := "sha256=" + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	for _, c := range []struct {
		name    string
		headers map[string]string
		want    string
	}{
		{"github push", map[string]string{"X-GitHub-Event": "push", "X-GitHub-Delivery": "g1", "X-Hub-Signature-256": sig}, "github"},
		{"cloud push", map[string]string{"X-Event-Key": "repo:push", "X-Request-UUID": "u1", "X-Hook-UUID": "h1", "X-Hub-Signature": sig}, "bitbucket"},
		{"cloud pull request", map[string]string{"X-Event-Key": "pullrequest:created", "X-Request-UUID": "u2", "X-Hook-UUID": "h1", "X-Hub-Signature": sig}, "bitbucket"},
		{"data center push", map[string]string{"X-Event-Key": "repo:refs_changed", "X-Request-Id": "d1", "X-Hub-Signature": sig}, "bitbucket-dc"},
		{"data center pull request", map[string]string{"X-Event-Key": "pr:opened", "X-Request-Id": "d2", "X-Hub-Signature": sig}, "bitbucket-dc"},
		{"data center ping", map[string]string{"X-Event-Key": "diagnostics:ping", "X-Request-Id": "d3", "X-Hub-Signature": sig}, "bitbucket-dc"},
	} {
		r := httptest.NewRequest(http.MethodPost, "/api/v1/pipelines/o/r/builds", nil)
		for k, v := range c.headers {
			r.Header.Set(k, v)
		}
		f, req, ok, err := reg.Delivery(r)
		if !ok || err != nil || f.Name() != c.want || req.Forge != c.want {
			t.Errorf("%s: claimed %v by %q, err %v; want %s", c.name, ok, req.Forge, err, c.want)
		}
	}

	var names []string
	for _, f := range forges(cfg) {
		names = append(names, f.Name)
	}
	if len(names) != 2 || names[0] != "bitbucket" || names[1] != "bitbucket-dc" {
		t.Fatalf("GET /api/v1/forges lists %v", names)
	}
}
