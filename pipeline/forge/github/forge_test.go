package github_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/kontinuous/kontinuous/pipeline"
	githubscm "github.com/kontinuous/kontinuous/pipeline/forge/github"
)

func TestDeliveryClaimsOnlyGitHubRequestsAndChecksHeaderShapes(t *testing.T) {
	scm, err := githubscm.New(githubscm.Config{})
	if err != nil {
		t.Fatal(err)
	}
	good := "sha256=" + strings.Repeat("ab", 32)
	cases := []struct {
		name    string
		headers map[string]string
		ok      bool
		wantErr error
	}{
		{"no event header: not GitHub's", map[string]string{"X-Hub-Signature-256": good, "X-GitHub-Delivery": "d1"}, false, nil},
		{"well formed", map[string]string{"X-GitHub-Event": "push", "X-Hub-Signature-256": good, "X-GitHub-Delivery": "d1"}, true, nil},
		{"unsigned", map[string]string{"X-GitHub-Event": "push", "X-GitHub-Delivery": "d1"}, true, pipeline.ErrUnauthorized},
		{"sha1 signature", map[string]string{"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha1=" + strings.Repeat("ab", 20), "X-GitHub-Delivery": "d1"}, true, pipeline.ErrUnauthorized},
		{"not hex", map[string]string{"X-GitHub-Event": "push", "X-Hub-Signature-256": "sha256=" + strings.Repeat("zz", 32), "X-GitHub-Delivery": "d1"}, true, pipeline.ErrUnauthorized},
		{"no delivery id", map[string]string{"X-GitHub-Event": "push", "X-Hub-Signature-256": good, "X-GitHub-Delivery": "  "}, true, pipeline.ErrInvalid},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/api/v1/pipelines/a/b/builds", strings.NewReader("{}"))
			for k, v := range tc.headers {
				r.Header.Set(k, v)
			}
			req, ok, err := scm.Delivery(r)
			if ok != tc.ok || !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Fatalf("Delivery = %+v, %v, %v; want ok %v, err %v", req, ok, err, tc.ok, tc.wantErr)
			}
			if ok && err == nil && (req.Event != "push" || req.Delivery != "d1" || req.Signature != good || req.Body != nil) {
				t.Errorf("request = %+v", req)
			}
			// The body is left unread for the caller.
			if n, _ := r.Body.Read(make([]byte, 2)); n != 2 {
				t.Error("Delivery read the body")
			}
		})
	}
}

func TestGitHubNameRulesCloneUserAndRefreshWithoutOAuth(t *testing.T) {
	scm, err := githubscm.New(githubscm.Config{})
	if err != nil {
		t.Fatal(err)
	}
	for _, ok := range [][2]string{{"acme", "demo"}, {"a-b", "x.y_z"}} {
		if err := scm.ValidateRepoName(ok[0], ok[1]); err != nil {
			t.Errorf("%v: %v", ok, err)
		}
	}
	for _, bad := range [][2]string{{"a_b", "demo"}, {"-a", "demo"}, {strings.Repeat("a", 40), "demo"}, {"acme", ".."}, {"acme", "a/b"}} {
		if err := scm.ValidateRepoName(bad[0], bad[1]); !errors.Is(err, pipeline.ErrInvalid) {
			t.Errorf("%v: %v, want ErrInvalid", bad, err)
		}
	}
	if u, p := scm.CloneCredentials(pipeline.ForgeToken{AccessToken: "gho_x"}); u != "x-access-token" || p != "gho_x" {
		t.Errorf("CloneCredentials = %q, %q", u, p)
	}
	if scm.Name() != "github" {
		t.Errorf("Name = %q", scm.Name())
	}
	for name, call := range map[string]func() error{
		"AuthorizeURL": func() error { _, err := scm.AuthorizeURL("s", ""); return err },
		"Exchange":     func() error { _, err := scm.Exchange(t.Context(), "c", "s", ""); return err },
		"Refresh":      func() error { _, err := scm.Refresh(t.Context(), pipeline.ForgeToken{RefreshToken: "r"}); return err },
	} {
		if err := call(); !errors.Is(err, pipeline.ErrNotImplemented) {
			t.Errorf("%s without an OAuth app = %v, want ErrNotImplemented", name, err)
		}
	}
	oauth, err := githubscm.NewOAuth(githubscm.OAuthConfig{ClientID: "id", ClientSecret: "secret"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := oauth.Refresh(t.Context(), pipeline.ForgeToken{AccessToken: "a"}); !errors.Is(err, pipeline.ErrUnauthorized) {
		t.Errorf("Refresh without a refresh token = %v, want ErrUnauthorized", err)
	}
}
