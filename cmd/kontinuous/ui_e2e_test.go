package main

import (
	"net/http"
	"strings"
	"testing"

	"github.com/kontinuous/kontinuous/pipeline"
)

func TestPipelineShowsTheCallersPermissions(t *testing.T) {
	w := newWorld(t)
	w.createPipeline()
	for _, c := range []struct {
		login string
		id    int
		want  pipeline.Access
	}{
		{"alice", 1001, pipeline.Access{Read: true, Push: true, Admin: true}},
		{"carol", 1003, pipeline.Access{Read: true, Push: true}},
		{"dave", 1004, pipeline.Access{Read: true}},
	} {
		r := w.do("GET", "/api/v1/pipelines/acme/app", token(t, c.login, c.id, "tok-"+c.login), nil)
		expect(t, r, http.StatusOK)
		var got struct {
			Owner       string          `json:"owner"`
			Permissions pipeline.Access `json:"permissions"`
		}
		r.json(t, &got)
		if got.Owner != "acme" || got.Permissions != c.want {
			t.Errorf("%s: %+v, want %+v", c.login, got, c.want)
		}
	}
	expect(t, w.do("GET", "/api/v1/pipelines/acme/app", token(t, "bob", 1002, "tok-bob"), nil), http.StatusNotFound)
}

func TestServerServesTheUIAndListsForges(t *testing.T) {
	w := newWorld(t, "--github-client-id", "ui-client", "--github-client-secret", "ui-secret")
	r := w.do("GET", "/api/v1/forges", "", nil)
	expect(t, r, http.StatusOK)
	if strings.TrimSpace(string(r.body)) != `[{"name":"github","login_url":"/api/v1/login/github/authorize"}]` {
		t.Fatalf("forges: %s", r.body)
	}
	for _, p := range []string{"/", "/acme/app/builds/3", "/auth/callback/github?code=x&state=y"} {
		r := w.do("GET", p, "", nil, "Accept", "text/html")
		if r.status != http.StatusOK || !strings.Contains(string(r.body), `type="module"`) ||
			!strings.Contains(r.header.Get("Content-Security-Policy"), "script-src 'self'") ||
			r.header.Get("X-Content-Type-Options") != "nosniff" || r.header.Get("Referrer-Policy") != "same-origin" {
			t.Errorf("GET %s: %d %v", p, r.status, r.header)
		}
	}
	// Not HTML: the API's 404 in the contract's shape.
	expect(t, w.do("GET", "/acme/app/builds/3", "", nil, "Accept", "application/json"), http.StatusNotFound)
}

func TestForgesListAuth0ForAPIClients(t *testing.T) {
	got := forges(Config{Auth0Issuer: "https://t.auth0.com/", Auth0Audience: "kontinuous"})
	if len(got) != 1 || got[0].Name != "auth0" || got[0].LoginURL != "" || got[0].Issuer != "https://t.auth0.com/" || got[0].Audience != "kontinuous" {
		t.Fatalf("%+v", got)
	}
	if got := forges(Config{}); len(got) != 0 {
		t.Fatalf("no forge configured: %+v", got)
	}
}
