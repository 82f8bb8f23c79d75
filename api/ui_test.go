package api

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/kontinuous/kontinuous/auth"
	"github.com/kontinuous/kontinuous/pipeline"
)

// refusingLogin answers every login as invalid input.
type refusingLogin struct{}

func (refusingLogin) Authorize(string) (string, error) {
	return "", pipeline.Invalid("redirect_uri", "refused")
}
func (refusingLogin) Complete(context.Context, string, string, string) (auth.LoginResult, error) {
	return auth.LoginResult{}, pipeline.Invalid("code", "is required")
}

// uiMarker stands in for the web UI: it answers which handler served.
var uiMarker = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html")
	_, _ = io.WriteString(w, "UI") // test handler
})

func TestHTMLGetsOutsideTheAPIReachTheUIAndEverythingElseKeepsItsMeaning(t *testing.T) {
	s, err := New(Config{Version: "test", Authenticator: refuseAll{}, UI: uiMarker,
		Resources: []Resource{NewLoginResources(LoginConfig{Login: refusingLogin{}}), NewForgeResources(nil)}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s)
	defer srv.Close()
	const html = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
	cases := []struct {
		method, path, accept string
		wantUI               bool
		status               int // when not the UI
	}{
		{"GET", "/", html, true, 0},
		{"GET", "/acme/demo", html, true, 0},
		{"GET", "/acme/demo/builds/3", html, true, 0},
		{"GET", "/acme/demo/builds/3/stages/2", html, true, 0},
		{"GET", "/auth/callback/github?code=c&state=s", html, true, 0},
		{"HEAD", "/acme/demo", html, true, 0},
		{"GET", "/-/assets/abc/app.js", "*/*", true, 0},
		// Not HTML: the API's JSON 404 stays.
		{"GET", "/acme/demo", "application/json", false, 404},
		{"GET", "/acme/demo", "", false, 404},
		{"GET", "/", "*/*", false, 404},
		// The API's own paths keep their meaning for a browser too.
		{"GET", "/api/v1/nothing", html, false, 404},
		{"GET", "/api/v1/forges", html, false, 200},
		{"GET", "/version", html, false, 200},
		{"GET", "/healthz", html, false, 200},
		{"GET", "/apidocs.json", html, false, 200},
		{"GET", "/login/github", html, false, 405},
		{"POST", "/acme/demo", html, false, 404},
		{"POST", "/login/github", html, false, 400}, // the alias: missing code and state
	}
	for _, c := range cases {
		t.Run(c.method+" "+c.path+" "+c.accept, func(t *testing.T) {
			req, _ := http.NewRequest(c.method, srv.URL+c.path, nil)
			if c.accept != "" {
				req.Header.Set("Accept", c.accept)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			gotUI := string(body) == "UI"
			if c.method == "HEAD" {
				gotUI = resp.Header.Get("Content-Type") == "text/html"
			}
			if gotUI != c.wantUI {
				t.Fatalf("UI served = %v, want %v (status %d, body %.80s)", gotUI, c.wantUI, resp.StatusCode, body)
			}
			if !c.wantUI {
				if resp.StatusCode != c.status {
					t.Fatalf("status %d, want %d: %.120s", resp.StatusCode, c.status, body)
				}
				if c.status >= 400 {
					var e Error
					if err := json.Unmarshal(body, &e); err != nil || e.Code != c.status {
						t.Fatalf("not the error shape: %s", body)
					}
				}
			}
		})
	}
}

func TestForgesListsEnabledForgesWithoutAToken(t *testing.T) {
	for _, c := range []struct {
		name   string
		forges []Forge
		want   string
	}{
		{"none", nil, `[]`},
		{"github and auth0", []Forge{{Name: "github", LoginURL: "/api/v1/login/github/authorize"}, {Name: "auth0", Issuer: "https://t.auth0.com/", Audience: "kontinuous"}},
			`[{"name":"github","login_url":"/api/v1/login/github/authorize"},{"name":"auth0","issuer":"https://t.auth0.com/","audience":"kontinuous"}]`},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, err := New(Config{Version: "test", Authenticator: refuseAll{}, Resources: []Resource{NewForgeResources(c.forges)}})
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewServer(s)
			defer srv.Close()
			resp, err := http.Get(srv.URL + "/api/v1/forges")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != 200 || string(body) != c.want+"\n" && string(body) != c.want {
				t.Fatalf("%d %s, want %s", resp.StatusCode, body, c.want)
			}
		})
	}
}
