package fakebitbucketdc_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/kontinuous/kontinuous/pipeline/pipelinetest/fakebitbucketdc"
)

func oauthCfg(s *fakebitbucketdc.Server, secret string) *oauth2.Config {
	return &oauth2.Config{
		ClientID: "cid", ClientSecret: secret, RedirectURL: "http://kontinuous.example/auth/callback/bitbucket-dc",
		Endpoint: oauth2.Endpoint{AuthURL: s.URL + "/rest/oauth2/latest/authorize", TokenURL: s.URL + "/rest/oauth2/latest/token", AuthStyle: oauth2.AuthStyleInParams},
	}
}

// authorize follows the authorize page's redirect and returns the code.
func authorize(t *testing.T, authURL string) string {
	t.Helper()
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(authURL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusFound || err != nil {
		t.Fatalf("authorize: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	return loc.Query().Get("code")
}

func TestOAuthPKCEIsVerifiedAndRefreshRotates(t *testing.T) {
	s := fakebitbucketdc.New(t)
	s.AddUser("alice")
	s.AddOAuthApp("cid", "sec")
	s.AuthorizeAs("alice")
	s.SetTokenTTL(30 * time.Minute)
	cfg := oauthCfg(s, "sec")
	ctx := context.Background()

	v := oauth2.GenerateVerifier()
	code := authorize(t, cfg.AuthCodeURL("st", oauth2.S256ChallengeOption(v)))
	if _, err := cfg.Exchange(ctx, code, oauth2.VerifierOption("wrong-verifier-wrong-verifier-wrong-verifier")); err == nil || !strings.Contains(err.Error(), "invalid_grant") {
		t.Fatalf("wrong verifier: %v", err)
	}
	code = authorize(t, cfg.AuthCodeURL("st", oauth2.S256ChallengeOption(v)))
	tok, err := cfg.Exchange(ctx, code, oauth2.VerifierOption(v))
	if err != nil {
		t.Fatal(err)
	}
	if time.Until(tok.Expiry) > 31*time.Minute || tok.RefreshToken == "" {
		t.Fatalf("token: expiry %v refresh %q", tok.Expiry, tok.RefreshToken)
	}
	if _, err := cfg.Exchange(ctx, code, oauth2.VerifierOption(v)); err == nil {
		t.Fatal("a code works twice")
	}
	// The whoami: X-AUSERNAME on any REST reply.
	req, _ := http.NewRequest(http.MethodGet, s.URL+"/rest/api/latest/application-properties", nil)
	tok.SetAuthHeader(req)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("X-AUSERNAME"); got != "alice" {
		t.Fatalf("X-AUSERNAME = %q", got)
	}
	old := *tok
	old.Expiry = time.Unix(1, 0)
	nt, err := cfg.TokenSource(ctx, &old).Token()
	if err != nil || nt.AccessToken == tok.AccessToken || nt.RefreshToken == tok.RefreshToken {
		t.Fatalf("refresh: %v", err)
	}
	if _, err := cfg.TokenSource(ctx, &old).Token(); err == nil {
		t.Fatal("a spent refresh token works")
	}
}

func TestReposPageAndFilterByPermission(t *testing.T) {
	s := fakebitbucketdc.New(t)
	s.AddUser("alice")
	for _, slug := range []string{"a", "b", "c"} {
		s.AddRepo("PRJ", slug)
	}
	s.Grant("alice", "PRJ", "a", fakebitbucketdc.RepoAdmin)
	s.Grant("alice", "PRJ", "b", fakebitbucketdc.RepoWrite)
	s.Grant("alice", "PRJ", "c", fakebitbucketdc.RepoRead)
	tok := s.IssueToken("alice", "cid")
	get := func(q string) map[string]any {
		req, _ := http.NewRequest(http.MethodGet, s.URL+"/rest/api/latest/repos?"+q, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	p := get("limit=2")
	if p["size"].(float64) != 2 || p["isLastPage"].(bool) || p["nextPageStart"].(float64) != 2 {
		t.Fatalf("first page: %v", p)
	}
	if p = get("limit=2&start=2"); p["size"].(float64) != 1 || !p["isLastPage"].(bool) {
		t.Fatalf("second page: %v", p)
	}
	if p = get("permission=REPO_WRITE"); p["size"].(float64) != 2 {
		t.Fatalf("REPO_WRITE: %v", p)
	}
	if p = get("permission=REPO_ADMIN"); p["size"].(float64) != 1 {
		t.Fatalf("REPO_ADMIN: %v", p)
	}
}

func TestGitTakesHTTPAccessTokensNotOAuthTokens(t *testing.T) {
	s := fakebitbucketdc.New(t)
	s.AddUser("ci")
	r := s.AddRepo("PRJ", "app")
	s.Grant("ci", "PRJ", "app", fakebitbucketdc.RepoRead)
	s.AddHTTPToken("ci", "httptok")
	oauthTok := s.IssueToken("ci", "cid")
	u, _ := url.Parse(r.CloneURL)
	clone := func(user, pass string) error {
		u.User = url.UserPassword(user, pass)
		cmd := exec.Command("git", "clone", "--quiet", u.String(), filepath.Join(t.TempDir(), "w"))
		cmd.Env = append(cmd.Environ(), "GIT_TERMINAL_PROMPT=0")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Logf("clone: %s", out)
		}
		return err
	}
	if err := clone("ci", "httptok"); err != nil {
		t.Fatal(err)
	}
	if err := clone("ci", oauthTok); err == nil {
		t.Fatal("an OAuth token clones")
	}
}

func TestDeliverSignsTheRawBody(t *testing.T) {
	s := fakebitbucketdc.New(t)
	s.AddUser("alice")
	r := s.AddRepo("PRJ", "app")
	s.Grant("alice", "PRJ", "app", fakebitbucketdc.RepoAdmin)
	got := make(chan http.Header, 1)
	var body []byte
	hook := http.NewServeMux()
	hook.HandleFunc("/", func(w http.ResponseWriter, req *http.Request) {
		body, _ = io.ReadAll(req.Body)
		got <- req.Header
	})
	srv := &http.Server{Handler: hook}
	ln := listen(t)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	tok := s.IssueToken("alice", "cid")
	req, _ := http.NewRequest(http.MethodPost, s.URL+"/rest/api/latest/projects/PRJ/repos/app/webhooks",
		strings.NewReader(`{"name":"k","url":"http://`+ln.Addr().String()+`/","events":["repo:refs_changed"],"active":true,"configuration":{"secret":"s3"}}`))
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("create hook: %v %v", err, resp)
	}
	payload := fakebitbucketdc.RefsChangedPayload(r, "alice", "main", strings.Repeat("0", 40), r.Head("main"), "UPDATE")
	if _, err := s.Deliver(context.Background(), "PRJ", "app", "repo:refs_changed", payload); err != nil {
		t.Fatal(err)
	}
	h := <-got
	if h.Get("X-Event-Key") != "repo:refs_changed" || h.Get("X-Request-Id") == "" || h.Get("X-Hub-Signature") != fakebitbucketdc.Sign("s3", body) {
		t.Fatalf("headers: %v", h)
	}
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}
