package auth_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-github/v60/github"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kontinuous/kontinuous/auth"
	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/etcdstore"
	githubscm "github.com/kontinuous/kontinuous/pipeline/forge/github"
	"github.com/kontinuous/kontinuous/pipeline/pipelinetest"
	"github.com/kontinuous/kontinuous/pipeline/pipelinetest/fakegithub"
	"github.com/kontinuous/kontinuous/pipeline/secretbox"
)

var secret = []byte("0123456789abcdef0123456789abcdef")

const (
	clientID     = "Iv1.kontinuous"
	clientSecret = "s3cr3t-client-value-0123456789"
	callback     = "https://ci.example/login/callback"
)

// githubUsers is a ForgeUsers on go-github (what pipeline/githubscm does),
// talking to the stand-in GitHub.
type githubUsers struct{ apiURL string }

func (g githubUsers) User(ctx context.Context, tok pipeline.ForgeToken) (pipeline.ForgeUser, error) {
	c := github.NewClient(nil).WithAuthToken(tok.AccessToken)
	base, err := url.Parse(g.apiURL)
	if err != nil {
		return pipeline.ForgeUser{}, err
	}
	c.BaseURL = base
	u, resp, err := c.Users.Get(ctx, "")
	if err != nil {
		if resp != nil && resp.StatusCode == http.StatusUnauthorized {
			return pipeline.ForgeUser{}, fmt.Errorf("github: get user: %w", pipeline.ErrUnauthorized)
		}
		return pipeline.ForgeUser{}, fmt.Errorf("github: get user: %w", pipeline.ErrUpstream)
	}
	return pipeline.ForgeUser{ID: u.GetID(), Login: u.GetLogin()}, nil
}

type loginEnv struct {
	gh       *fakegithub.Server
	store    *etcdstore.Store
	login    *auth.Login
	verifier *auth.Verifier
}

func newLoginEnv(t *testing.T, appSecret string) *loginEnv {
	t.Helper()
	return newLoginEnvOn(t, pipelinetest.StartEtcd(t), appSecret)
}

// newLoginEnvOn builds a login against a fresh stand-in GitHub and a store
// under its own key prefix of cli's etcd (subtests share one etcd).
func newLoginEnvOn(t *testing.T, cli *clientv3.Client, appSecret string) *loginEnv {
	t.Helper()
	gh := fakegithub.New(t)
	gh.AddOAuthApp(clientID, clientSecret)
	gh.AddUser("octocat", 1001, "gho_octocat_token")
	gh.AddUser("hubot", 1002, "gho_hubot_token")
	box, err := secretbox.New(secret)
	if err != nil {
		t.Fatal(err)
	}
	store := etcdstore.New(cli, box, etcdstore.Options{Prefix: "/" + strings.ReplaceAll(t.Name(), "/", "_") + "/"})
	if err := store.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(store.Close)
	oauth, err := githubscm.NewOAuth(githubscm.OAuthConfig{ClientID: clientID, ClientSecret: appSecret, WebURL: gh.URL})
	if err != nil {
		t.Fatal(err)
	}
	states, err := auth.NewStates(auth.StatesConfig{Secret: secret, Once: store})
	if err != nil {
		t.Fatal(err)
	}
	issuer, err := auth.NewIssuer(auth.IssuerConfig{Secret: secret, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	login, err := auth.NewLogin(auth.LoginConfig{OAuth: oauth, Users: store, Forge: githubUsers{gh.APIURL}, Issuer: issuer, States: states})
	if err != nil {
		t.Fatal(err)
	}
	v, err := auth.NewVerifier(t.Context(), auth.VerifierConfig{Secret: secret, Revocations: store})
	if err != nil {
		t.Fatal(err)
	}
	return &loginEnv{gh: gh, store: store, login: login, verifier: v}
}

// authorize runs the browser's part: Authorize, then GitHub's page (which
// approves as login) redirects back with code and state.
func (e *loginEnv) authorize(t *testing.T, login string) (code, state string) {
	t.Helper()
	u, err := e.login.Authorize(callback)
	if err != nil {
		t.Fatalf("Authorize: %v", err)
	}
	e.gh.AuthorizeAs(login)
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusFound || err != nil || !strings.HasPrefix(loc.String(), callback) {
		t.Fatalf("GitHub's authorize answered %d, Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	return loc.Query().Get("code"), loc.Query().Get("state")
}

// tokenRequests counts the code exchanges GitHub received.
func (e *loginEnv) tokenRequests() int {
	n := 0
	for _, r := range e.gh.Requests() {
		if r.Path == "/login/oauth/access_token" {
			n++
		}
	}
	return n
}

// assertNoSecretInURLs checks that neither the client secret nor the
// code ever travelled in a URL.
func (e *loginEnv) assertNoSecretInURLs(t *testing.T, codes ...string) {
	t.Helper()
	for _, r := range e.gh.Requests() {
		full := r.Path + "?" + r.Query
		if strings.Contains(full, clientSecret) || strings.Contains(full, url.QueryEscape(clientSecret)) {
			t.Errorf("client secret in the URL of %s %s", r.Method, r.Path)
		}
		for _, c := range codes {
			if c != "" && r.Path == "/login/oauth/access_token" && strings.Contains(full, c) {
				t.Errorf("code in the URL of the exchange")
			}
		}
	}
}

func TestAuthorizeRedirectsToGitHubWithAServerState(t *testing.T) {
	e := newLoginEnv(t, clientSecret)
	raw, err := e.login.Authorize(callback)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	if got := u.Scheme + "://" + u.Host + u.Path; got != e.gh.URL+"/login/oauth/authorize" {
		t.Errorf("authorize URL = %s", got)
	}
	q := u.Query()
	if q.Get("client_id") != clientID || q.Get("redirect_uri") != callback || q.Get("scope") != "user,repo,admin:repo_hook" {
		t.Errorf("query = %v", q)
	}
	if !strings.HasPrefix(q.Get("state"), "ks1.") {
		t.Errorf("state %q is not server-issued", q.Get("state"))
	}
	if strings.Contains(raw, clientSecret) {
		t.Errorf("authorize URL carries the client secret")
	}
	for _, bad := range []string{"javascript:alert(1)", "/relative", "https://user:pw@ci.example/cb", "https://ci.example/cb#frag"} {
		if _, err := e.login.Authorize(bad); !errors.Is(err, pipeline.ErrInvalid) {
			t.Errorf("Authorize(%q) = %v, want ErrInvalid", bad, err)
		}
	}
}

func TestGitHubLoginStoresUserAndIssuesToken(t *testing.T) {
	e := newLoginEnv(t, clientSecret)
	code, state := e.authorize(t, "octocat")
	res, err := e.login.Complete(t.Context(), code, state, "")
	if err != nil {
		t.Fatalf("Complete: %v", err)
	}
	if res.UserID != "github|1001" || res.UserName != "octocat" {
		t.Errorf("result = %+v", res)
	}
	if strings.Contains(res.JWT, "gho_") {
		t.Errorf("JWT carries the GitHub token")
	}
	id, err := e.verifier.Verify(t.Context(), res.JWT)
	if err != nil {
		t.Fatalf("issued JWT does not verify: %v", err)
	}
	if id.UserID != "github|1001" || id.GitHubToken != "" || id.TokenID == "" || time.Until(id.Expires) < 59*time.Minute {
		t.Errorf("identity = %+v (expires %s)", id, id.Expires)
	}
	u, err := e.store.GetUser(t.Context(), "github|1001")
	if err != nil {
		t.Fatal(err)
	}
	if u.Login != "octocat" || u.Token.AccessToken != "gho_octocat_token" {
		t.Errorf("stored user = %+v (token %q)", u, u.Token.AccessToken)
	}
	tok, err := auth.GitHubToken(t.Context(), id, e.store)
	if err != nil || tok.AccessToken != "gho_octocat_token" {
		t.Errorf("GitHubToken = %v, %v; want the stored token", tok.AccessToken != "", err)
	}
	e.assertNoSecretInURLs(t, code)
}

func TestGitHubLoginFailures(t *testing.T) {
	tests := []struct {
		name      string
		appSecret string
		run       func(t *testing.T, e *loginEnv) (code string, err error)
		want      error
		// exchanges is how many code exchanges GitHub should have seen.
		exchanges int
		// msg is part of the message the caller sees.
		msg string
	}{
		{name: "missing code", want: pipeline.ErrInvalid, run: func(t *testing.T, e *loginEnv) (string, error) {
			_, state := e.authorize(t, "octocat")
			_, err := e.login.Complete(t.Context(), "", state, "")
			return "", err
		}},
		{name: "missing state", want: pipeline.ErrInvalid, run: func(t *testing.T, e *loginEnv) (string, error) {
			code, _ := e.authorize(t, "octocat")
			_, err := e.login.Complete(t.Context(), code, "", "")
			return code, err
		}},
		{name: "bad code (GitHub answers 200 with an error)", want: pipeline.ErrUnauthorized, exchanges: 1, msg: "bad_verification_code", run: func(t *testing.T, e *loginEnv) (string, error) {
			_, state := e.authorize(t, "octocat")
			_, err := e.login.Complete(t.Context(), "0000deadbeef", state, "")
			return "0000deadbeef", err
		}},
		{name: "replayed code", want: pipeline.ErrUnauthorized, exchanges: 2, msg: "bad_verification_code", run: func(t *testing.T, e *loginEnv) (string, error) {
			code := e.gh.IssueCode("octocat", clientID)
			if _, err := e.login.Complete(t.Context(), code, "ui-state-1", ""); err != nil {
				t.Fatalf("first use: %v", err)
			}
			_, err := e.login.Complete(t.Context(), code, "ui-state-2", "")
			return code, err
		}},
		{name: "reused server state", want: pipeline.ErrUnauthorized, exchanges: 1, msg: "already used", run: func(t *testing.T, e *loginEnv) (string, error) {
			code, state := e.authorize(t, "octocat")
			if _, err := e.login.Complete(t.Context(), code, state, ""); err != nil {
				t.Fatalf("first use: %v", err)
			}
			code2 := e.gh.IssueCode("octocat", clientID)
			_, err := e.login.Complete(t.Context(), code2, state, "")
			return code2, err
		}},
		{name: "tampered server state", want: pipeline.ErrUnauthorized, run: func(t *testing.T, e *loginEnv) (string, error) {
			code, state := e.authorize(t, "octocat")
			i := len("ks1.") + 3
			c := byte('A')
			if state[i] == 'A' {
				c = 'B'
			}
			_, err := e.login.Complete(t.Context(), code, state[:i]+string(c)+state[i+1:], "")
			return code, err
		}},
		{name: "state bound to another redirect", want: pipeline.ErrUnauthorized, msg: "redirect_uri", run: func(t *testing.T, e *loginEnv) (string, error) {
			code, state := e.authorize(t, "octocat")
			_, err := e.login.Complete(t.Context(), code, state, "https://evil.example/cb")
			return code, err
		}},
		{name: "wrong client secret", appSecret: "not-the-secret", want: pipeline.ErrUpstream, exchanges: 1, msg: "incorrect_client_credentials", run: func(t *testing.T, e *loginEnv) (string, error) {
			code := e.gh.IssueCode("octocat", clientID)
			_, err := e.login.Complete(t.Context(), code, "ui-state", "")
			return code, err
		}},
		{name: "GitHub down", want: pipeline.ErrUpstream, exchanges: 1, run: func(t *testing.T, e *loginEnv) (string, error) {
			code := e.gh.IssueCode("octocat", clientID)
			e.gh.SetDown(true)
			_, err := e.login.Complete(t.Context(), code, "ui-state", "")
			return code, err
		}},
		{name: "GitHub drops the connection", want: pipeline.ErrUpstream, exchanges: 1, run: func(t *testing.T, e *loginEnv) (string, error) {
			code := e.gh.IssueCode("octocat", clientID)
			e.gh.SetDropConnections(true)
			_, err := e.login.Complete(t.Context(), code, "ui-state", "")
			return code, err
		}},
		{name: "GitHub unreachable", want: pipeline.ErrUpstream, run: func(t *testing.T, e *loginEnv) (string, error) {
			code := e.gh.IssueCode("octocat", clientID)
			e.gh.Close()
			_, err := e.login.Complete(t.Context(), code, "ui-state", "")
			return code, err
		}},
		{name: "GitHub's /user fails after the exchange", want: pipeline.ErrUpstream, exchanges: 1, run: func(t *testing.T, e *loginEnv) (string, error) {
			code := e.gh.IssueCode("octocat", clientID)
			e.gh.FailNext("GET", "/user", http.StatusInternalServerError, "")
			_, err := e.login.Complete(t.Context(), code, "ui-state", "")
			return code, err
		}},
	}
	cli := pipelinetest.StartEtcd(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			appSecret := tc.appSecret
			if appSecret == "" {
				appSecret = clientSecret
			}
			e := newLoginEnvOn(t, cli, appSecret)
			code, err := tc.run(t, e)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Complete = %v, want %v", err, tc.want)
			}
			if msg := pipeline.PublicMessage(err); !strings.Contains(msg, tc.msg) {
				t.Errorf("message %q does not say %q", msg, tc.msg)
			}
			for _, s := range []string{clientSecret, appSecret, code} {
				if s != "" && strings.Contains(err.Error(), s) {
					t.Errorf("error %q reveals a secret or the code", err)
				}
			}
			if tc.name != "GitHub unreachable" {
				if n := e.tokenRequests(); n != tc.exchanges {
					t.Errorf("GitHub saw %d code exchanges, want %d", n, tc.exchanges)
				}
				e.assertNoSecretInURLs(t, code)
			}
		})
	}
}

func TestClientManagedStatePassesThroughToGitHub(t *testing.T) {
	e := newLoginEnv(t, clientSecret)
	code := e.gh.IssueCode("hubot", clientID)
	res, err := e.login.Complete(t.Context(), code, "ember-ui-state-xyz", callback)
	if err != nil {
		t.Fatalf("Complete: %v", err)
	}
	if res.UserID != "github|1002" || res.UserName != "hubot" {
		t.Errorf("result = %+v", res)
	}
	if n := e.tokenRequests(); n != 1 {
		t.Errorf("GitHub saw %d exchanges, want 1", n)
	}
}

func TestGitHubLoginNotConfiguredSaysSo(t *testing.T) {
	oauth, err := githubscm.NewOAuth(githubscm.OAuthConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := oauth.AuthorizeURL("ks1.x", ""); !errors.Is(err, pipeline.ErrNotImplemented) {
		t.Errorf("AuthorizeURL = %v, want ErrNotImplemented", err)
	}
	if _, err := oauth.Exchange(t.Context(), "code", "state", ""); !errors.Is(err, pipeline.ErrNotImplemented) {
		t.Errorf("Exchange = %v, want ErrNotImplemented", err)
	}
}

func TestGitHubTokenPrefersTheTokensOwnThenTheStoredOne(t *testing.T) {
	e := newLoginEnv(t, clientSecret)
	if err := e.store.PutUser(t.Context(), pipeline.User{ID: "github|1", Login: "a", Token: pipeline.ForgeToken{AccessToken: "gho_stored"}}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		id   auth.Identity
		want string
		err  error
	}{
		{"token carried by the JWT", auth.Identity{UserID: "github|1", GitHubToken: "gho_jwt"}, "gho_jwt", nil},
		{"stored at login", auth.Identity{UserID: "github|1"}, "gho_stored", nil},
		{"neither", auth.Identity{UserID: "github|999"}, "", pipeline.ErrUnauthorized},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := auth.GitHubToken(t.Context(), tc.id, e.store)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("GitHubToken = %v, want %v", err, tc.err)
				}
				return
			}
			if err != nil || tok.AccessToken != tc.want {
				t.Fatalf("GitHubToken = %q, %v; want %q", tok.AccessToken, err, tc.want)
			}
		})
	}
}

func TestLogoutRevokesTheTokenThroughEtcd(t *testing.T) {
	e := newLoginEnv(t, clientSecret)
	code, state := e.authorize(t, "octocat")
	res, err := e.login.Complete(t.Context(), code, state, "")
	if err != nil {
		t.Fatal(err)
	}
	id, err := e.verifier.Verify(t.Context(), res.JWT)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.verifier.Revoke(t.Context(), id); err != nil {
		t.Fatal(err)
	}
	// Another server instance sharing the etcd cluster refuses it too.
	other, err := auth.NewVerifier(t.Context(), auth.VerifierConfig{Secret: secret, Revocations: e.store})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []*auth.Verifier{e.verifier, other} {
		if _, err := v.Verify(t.Context(), res.JWT); !errors.Is(err, pipeline.ErrUnauthorized) {
			t.Errorf("revoked token: %v, want ErrUnauthorized", err)
		}
	}
}
