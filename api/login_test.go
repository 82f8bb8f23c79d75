package api

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	restful "github.com/emicklei/go-restful/v3"
	"github.com/google/go-github/v60/github"
	"golang.org/x/time/rate"

	"github.com/kontinuous/kontinuous/auth"
	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/etcdstore"
	githubscm "github.com/kontinuous/kontinuous/pipeline/forge/github"
	"github.com/kontinuous/kontinuous/pipeline/pipelinetest"
	"github.com/kontinuous/kontinuous/pipeline/pipelinetest/fakegithub"
	"github.com/kontinuous/kontinuous/pipeline/secretbox"
)

var loginSecret = []byte("0123456789abcdef0123456789abcdef")

const (
	loginClientID     = "Iv1.kontinuous"
	loginClientSecret = "s3cr3t-client-value-0123456789"
	loginCallback     = "https://ci.example/login/callback"
)

// ghForge looks users up on the stand-in GitHub with go-github, as the
// githubscm adapter does.
type ghForge struct{ apiURL string }

func (g ghForge) User(ctx context.Context, tok pipeline.ForgeToken) (pipeline.ForgeUser, error) {
	c := github.NewClient(nil).WithAuthToken(tok.AccessToken)
	base, err := url.Parse(g.apiURL)
	if err != nil {
		return pipeline.ForgeUser{}, err
	}
	c.BaseURL = base
	u, _, err := c.Users.Get(ctx, "")
	if err != nil {
		return pipeline.ForgeUser{}, fmt.Errorf("github: get user: %w", pipeline.ErrUpstream)
	}
	return pipeline.ForgeUser{ID: u.GetID(), Login: u.GetLogin()}, nil
}

type loginServer struct {
	*Server
	gh    *fakegithub.Server
	store *etcdstore.Store
}

// newLoginServer assembles the API with the login and user resources on a
// real etcd and the stand-in GitHub. limiter may be nil (defaults).
func newLoginServer(t *testing.T, limiter *auth.Limiter, extra ...Resource) *loginServer {
	t.Helper()
	return newLoginServerConfig(t, LoginConfig{Limiter: limiter}, extra...)
}

// newLoginServerConfig is newLoginServer with more of the login resources'
// settings; cfg.Login is filled in.
func newLoginServerConfig(t *testing.T, cfg LoginConfig, extra ...Resource) *loginServer {
	t.Helper()
	return newLoginServerLinks(t, cfg, false, extra...)
}

// newLoginServerLinks is newLoginServerConfig; with links, the GitHub
// login can also be connected to a user signed in with another forge
// (cfg.Authenticator is set to the server's).
func newLoginServerLinks(t *testing.T, cfg LoginConfig, links bool, extra ...Resource) *loginServer {
	t.Helper()
	gh := fakegithub.New(t)
	gh.AddOAuthApp(loginClientID, loginClientSecret)
	gh.AddUser("octocat", 1001, "gho_octocat_token")
	box, err := secretbox.New(loginSecret)
	if err != nil {
		t.Fatal(err)
	}
	store := etcdstore.New(pipelinetest.StartEtcd(t), box, etcdstore.Options{})
	if err := store.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(store.Close)
	oauth, err := githubscm.NewOAuth(githubscm.OAuthConfig{ClientID: loginClientID, ClientSecret: loginClientSecret, WebURL: gh.URL})
	if err != nil {
		t.Fatal(err)
	}
	states, err := auth.NewStates(auth.StatesConfig{Secret: loginSecret, Once: store})
	if err != nil {
		t.Fatal(err)
	}
	issuer, err := auth.NewIssuer(auth.IssuerConfig{Secret: loginSecret})
	if err != nil {
		t.Fatal(err)
	}
	lc := auth.LoginConfig{OAuth: oauth, Users: store, Forge: ghForge{gh.APIURL}, Issuer: issuer, States: states}
	if links {
		lc.Links = store
	}
	login, err := auth.NewLogin(lc)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Login = login
	v, err := auth.NewVerifier(t.Context(), auth.VerifierConfig{Secret: loginSecret, Revocations: store})
	if err != nil {
		t.Fatal(err)
	}
	if links {
		cfg.Authenticator = v
	}
	resources := append([]Resource{
		NewLoginResources(cfg),
		NewUserResources(store, v),
	}, extra...)
	s, err := New(Config{Authenticator: v, Resources: resources, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return &loginServer{Server: s, gh: gh, store: store}
}

type reply struct {
	status int
	header http.Header
	body   string
}

// do serves one request from remote (an "ip:port").
func (s *loginServer) do(t *testing.T, method, target, token, remote string, body io.Reader, contentType string) reply {
	t.Helper()
	req := httptest.NewRequestWithContext(t.Context(), method, target, body)
	if remote != "" {
		req.RemoteAddr = remote
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	return reply{status: rec.Code, header: rec.Header(), body: rec.Body.String()}
}

// authorize starts a login through the API and lets GitHub approve it.
func (s *loginServer) authorize(t *testing.T) (code, state string) {
	t.Helper()
	r := s.do(t, http.MethodGet, "/api/v1/login/github/authorize?redirect_uri="+url.QueryEscape(loginCallback), "", "", nil, "")
	if r.status != http.StatusFound {
		t.Fatalf("authorize = %d %s", r.status, r.body)
	}
	s.gh.AuthorizeAs("octocat")
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Get(r.header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	return loc.Query().Get("code"), loc.Query().Get("state")
}

// errorBody checks the contract's error shape and returns the message.
func errorBody(t *testing.T, r reply, status int) string {
	t.Helper()
	if r.status != status {
		t.Fatalf("status = %d, want %d (body %s)", r.status, status, r.body)
	}
	var e struct {
		Code    *int
		Message *string
	}
	if err := json.Unmarshal([]byte(r.body), &e); err != nil || e.Code == nil || e.Message == nil || *e.Code != status {
		t.Fatalf("body %q is not {\"Code\":%d,\"Message\":...}", r.body, status)
	}
	return *e.Message
}

func TestLoginThroughTheAPIThenUserAndLogout(t *testing.T) {
	s := newLoginServer(t, nil)
	code, state := s.authorize(t)
	if !strings.HasPrefix(state, "ks1.") {
		t.Fatalf("state %q is not server-issued", state)
	}
	r := s.do(t, http.MethodPost, "/login/github?code="+code+"&state="+url.QueryEscape(state), "", "", nil, "")
	if r.status != http.StatusOK {
		t.Fatalf("POST /login/github = %d %s", r.status, r.body)
	}
	if r.header.Get("Cache-Control") != "no-store" {
		t.Errorf("Cache-Control = %q, want no-store", r.header.Get("Cache-Control"))
	}
	var res map[string]string
	if err := json.Unmarshal([]byte(r.body), &res); err != nil {
		t.Fatal(err)
	}
	if res["user_id"] != "github|1001" || res["user_name"] != "octocat" || res["jwt"] == "" || len(res) != 3 {
		t.Fatalf("login reply = %s", r.body)
	}
	jwt := res["jwt"]

	r = s.do(t, http.MethodGet, "/api/v1/user", jwt, "", nil, "")
	var me map[string]any
	if err := json.Unmarshal([]byte(r.body), &me); r.status != http.StatusOK || err != nil ||
		me["user_id"] != "github|1001" || me["user_name"] != "octocat" || len(me) != 3 ||
		!strings.Contains(r.body, `"connections":[{"forge":"github","login":"octocat","status":"connected"}]`) {
		t.Fatalf("GET /api/v1/user = %d %s", r.status, r.body)
	}
	r = s.do(t, http.MethodPost, "/api/v1/logout", jwt, "", nil, "")
	if r.status != http.StatusNoContent {
		t.Fatalf("logout = %d %s", r.status, r.body)
	}
	r = s.do(t, http.MethodGet, "/api/v1/user", jwt, "", nil, "")
	if msg := errorBody(t, r, http.StatusUnauthorized); msg != "token revoked" {
		t.Errorf("message = %q", msg)
	}
	if !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
		t.Errorf("WWW-Authenticate = %q", r.header.Get("WWW-Authenticate"))
	}
}

func TestLoginRouteVariantsAndFailuresAnswerTheErrorShape(t *testing.T) {
	s := newLoginServer(t, auth.NewLimiter(auth.LimiterConfig{Rate: 100, Burst: 100}))
	t.Run("JSON body on the /api/v1 route", func(t *testing.T) {
		code, state := s.authorize(t)
		body, _ := json.Marshal(LoginRequest{Code: code, State: state}) // cannot fail
		r := s.do(t, http.MethodPost, "/api/v1/login/github", "", "", strings.NewReader(string(body)), "application/json")
		var res auth.LoginResult
		if err := json.Unmarshal([]byte(r.body), &res); r.status != http.StatusOK || err != nil || res.UserID != "github|1001" {
			t.Fatalf("= %d %s", r.status, r.body)
		}
	})
	t.Run("form body", func(t *testing.T) {
		code, state := s.authorize(t)
		form := url.Values{"code": {code}, "state": {state}}.Encode()
		r := s.do(t, http.MethodPost, "/login/github", "", "", strings.NewReader(form), "application/x-www-form-urlencoded")
		if r.status != http.StatusOK {
			t.Fatalf("= %d %s", r.status, r.body)
		}
	})
	t.Run("missing code", func(t *testing.T) {
		errorBody(t, s.do(t, http.MethodPost, "/login/github?state=abc", "", "", nil, ""), http.StatusBadRequest)
	})
	t.Run("missing state", func(t *testing.T) {
		errorBody(t, s.do(t, http.MethodPost, "/api/v1/login/github?code=abc", "", "", nil, ""), http.StatusBadRequest)
	})
	t.Run("bad code", func(t *testing.T) {
		errorBody(t, s.do(t, http.MethodPost, "/login/github?code=deadbeef&state=ui", "", "", nil, ""), http.StatusUnauthorized)
	})
	t.Run("reused state", func(t *testing.T) {
		code, state := s.authorize(t)
		q := "?code=" + code + "&state=" + url.QueryEscape(state)
		if r := s.do(t, http.MethodPost, "/login/github"+q, "", "", nil, ""); r.status != http.StatusOK {
			t.Fatalf("first = %d %s", r.status, r.body)
		}
		errorBody(t, s.do(t, http.MethodPost, "/login/github"+q, "", "", nil, ""), http.StatusUnauthorized)
	})
	t.Run("GitHub down", func(t *testing.T) {
		code := s.gh.IssueCode("octocat", loginClientID)
		s.gh.SetDown(true)
		t.Cleanup(func() { s.gh.SetDown(false) })
		r := s.do(t, http.MethodPost, "/login/github?code="+code+"&state=ui", "", "", nil, "")
		msg := errorBody(t, r, http.StatusBadGateway)
		if strings.Contains(r.body, code) || strings.Contains(r.body, loginClientSecret) {
			t.Errorf("502 body reveals the code or the secret: %s", msg)
		}
	})
	t.Run("bad redirect_uri", func(t *testing.T) {
		errorBody(t, s.do(t, http.MethodGet, "/api/v1/login/github/authorize?redirect_uri=javascript:alert(1)", "", "", nil, ""), http.StatusBadRequest)
	})
}

func TestProtectedRoutesRefuseMissingOrQueryTokens(t *testing.T) {
	s := newLoginServer(t, nil)
	tests := []struct {
		name, method, target, token string
	}{
		{"user without token", http.MethodGet, "/api/v1/user", ""},
		{"logout without token", http.MethodPost, "/api/v1/logout", ""},
		{"token in the query", http.MethodGet, "/api/v1/user?access_token=x.y.z", ""},
		{"garbage token", http.MethodGet, "/api/v1/user", "not-a-jwt"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			errorBody(t, s.do(t, tc.method, tc.target, tc.token, "", nil, ""), http.StatusUnauthorized)
		})
	}
}

// laterResource stands for a route someone adds later without thinking
// about authentication.
type laterResource struct{}

func (laterResource) WebServices() []*restful.WebService {
	ws := new(restful.WebService)
	ws.Path("/api/v1/later").Produces(restful.MIME_JSON)
	ws.Route(ws.GET("").To(func(req *restful.Request, resp *restful.Response) {
		id, err := auth.FromContext(req.Request.Context())
		if err != nil {
			writeError(req, resp, err)
			return
		}
		writeJSON(resp, http.StatusOK, UserInfo{UserID: id.UserID})
	}))
	return []*restful.WebService{ws}
}

func TestARouteAddedLaterIsAuthenticatedByDefault(t *testing.T) {
	s := newLoginServer(t, nil, laterResource{})
	errorBody(t, s.do(t, http.MethodGet, "/api/v1/later", "", "", nil, ""), http.StatusUnauthorized)
	issuer, err := auth.NewIssuer(auth.IssuerConfig{Secret: loginSecret, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err := issuer.Issue(pipeline.User{ID: "github|5", Login: "five"})
	if err != nil {
		t.Fatal(err)
	}
	if r := s.do(t, http.MethodGet, "/api/v1/later", tok, "", nil, ""); r.status != http.StatusOK || !strings.Contains(r.body, "github|5") {
		t.Fatalf("with a token = %d %s", r.status, r.body)
	}
}

func TestLoginIsRateLimitedPerClientAddress(t *testing.T) {
	s := newLoginServer(t, auth.NewLimiter(auth.LimiterConfig{Rate: rate.Every(time.Hour), Burst: 3}))
	attacker, other := "203.0.113.7:5555", "198.51.100.9:4444"
	for i := range 3 {
		r := s.do(t, http.MethodPost, "/login/github?code=guess"+fmt.Sprint(i)+"&state=ui", "", attacker, nil, "")
		if r.status != http.StatusUnauthorized {
			t.Fatalf("attempt %d = %d %s, want 401", i+1, r.status, r.body)
		}
	}
	// The same address on another port, and on the other login routes.
	for _, target := range []string{"/login/github?code=x&state=ui", "/api/v1/login/github?code=x&state=ui"} {
		r := s.do(t, http.MethodPost, target, "", "203.0.113.7:6666", nil, "")
		errorBody(t, r, http.StatusTooManyRequests)
		if r.header.Get("Retry-After") == "" {
			t.Errorf("429 without Retry-After")
		}
	}
	if r := s.do(t, http.MethodGet, "/api/v1/login/github/authorize", "", attacker, nil, ""); r.status != http.StatusTooManyRequests {
		t.Errorf("authorize from the limited address = %d, want 429", r.status)
	}
	// An X-Forwarded-For from an untrusted peer changes nothing.
	req := httptest.NewRequestWithContext(t.Context(), http.MethodPost, "/login/github?code=x&state=ui", nil)
	req.RemoteAddr = attacker
	req.Header.Set("X-Forwarded-For", "192.0.2.1")
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	if rec.Code != http.StatusTooManyRequests {
		t.Errorf("spoofed X-Forwarded-For = %d, want 429", rec.Code)
	}
	if r := s.do(t, http.MethodPost, "/login/github?code=x&state=ui", "", other, nil, ""); r.status != http.StatusUnauthorized {
		t.Errorf("another client = %d, want 401 (not limited)", r.status)
	}
}

func TestClientKeyTrustsForwardedForOnlyFromTrustedProxies(t *testing.T) {
	proxies := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	tests := []struct {
		name, remote, xff string
		trusted           []netip.Prefix
		want              string
	}{
		{"no proxy configured", "203.0.113.7:1", "192.0.2.1", nil, "203.0.113.7"},
		{"untrusted peer", "203.0.113.7:1", "192.0.2.1", proxies, "203.0.113.7"},
		{"trusted proxy", "10.1.2.3:1", "192.0.2.1", proxies, "192.0.2.1"},
		{"client-supplied prefix is ignored", "10.1.2.3:1", "1.1.1.1, 192.0.2.1, 10.9.9.9", proxies, "192.0.2.1"},
		{"garbage hop stops the walk", "10.1.2.3:1", "192.0.2.1, nonsense", proxies, "10.1.2.3"},
		{"IPv6 grouped by /64", "[2001:db8:1:2:3:4:5:6]:1", "", nil, "2001:db8:1:2::/64"},
		{"IPv4-mapped IPv6", "[::ffff:203.0.113.7]:1", "", nil, "203.0.113.7"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.RemoteAddr = tc.remote
			if tc.xff != "" {
				r.Header.Set("X-Forwarded-For", tc.xff)
			}
			if got := clientKey(r, tc.trusted); got != tc.want {
				t.Errorf("clientKey = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestSpecShowsLoginPublicAndUserRoutesSecured(t *testing.T) {
	services := append(NewLoginResources(LoginConfig{}).WebServices(), NewUserResources(nil, nil).WebServices()...)
	sw := BuildSpec(services, "test")
	// optional: Bearer or nothing (a Bearer token makes a login a connect,
	// so Swagger UI's Authorize applies); required: Bearer only.
	tests := []struct {
		path, method string
		security     string
	}{
		{"/api/v1/login/github/authorize", "GET", "optional"},
		{"/api/v1/login/github", "POST", "optional"},
		{"/login/github", "POST", "optional"},
		{"/api/v1/user", "GET", "required"},
		{"/api/v1/logout", "POST", "required"},
	}
	for _, tc := range tests {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			item, ok := sw.Paths.Paths[tc.path]
			if !ok {
				t.Fatalf("path missing from the spec")
			}
			op := operation(&item, tc.method)
			if op == nil {
				t.Fatalf("operation missing")
			}
			got := "none"
			switch {
			case len(op.Security) == 2 && len(op.Security[0]) == 1 && len(op.Security[1]) == 0:
				got = "optional"
			case len(op.Security) == 1 && len(op.Security[0]) == 1:
				got = "required"
			}
			if got != tc.security {
				t.Errorf("security %v (%s), want %s", op.Security, got, tc.security)
			}
			if op.Description == "" && op.Summary == "" {
				t.Errorf("no Doc")
			}
			if len(op.Tags) == 0 {
				t.Errorf("no tags")
			}
		})
	}
}

// authorizeJSON asks GET /api/v1/login/github/authorize for JSON (as the
// web UI does, with token when not empty), checks the reply, lets GitHub
// approve octocat at its URL and returns the code and state.
func (s *loginServer) authorizeJSON(t *testing.T, token string) (code, state string) {
	t.Helper()
	req := httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/api/v1/login/github/authorize?redirect_uri="+url.QueryEscape(loginCallback), nil)
	req.Header.Set("Accept", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK || !strings.HasPrefix(rec.Header().Get("Content-Type"), "application/json") ||
		rec.Header().Get("Location") != "" || rec.Header().Get("Cache-Control") != "no-store" {
		t.Fatalf("authorize as JSON = %d %v %s", rec.Code, rec.Header(), rec.Body)
	}
	var res map[string]string
	if err := json.Unmarshal(rec.Body.Bytes(), &res); err != nil || len(res) != 1 || !strings.HasPrefix(res["url"], s.gh.URL+"/login/oauth/authorize?") {
		t.Fatalf("authorize as JSON = %s, want {\"url\": GitHub's authorize URL}", rec.Body)
	}
	s.gh.AuthorizeAs("octocat")
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Get(res["url"])
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	return loc.Query().Get("code"), loc.Query().Get("state")
}

// TestAuthorizeAnswersTheURLAsJSONForSignInAndConnect: a client that asks
// for JSON gets {"url"} instead of the redirect, with the same state: a
// sign-in state without a token, a connect state with one. A browser
// navigation (Accept: text/html, */*) still gets the 302.
func TestAuthorizeAnswersTheURLAsJSONForSignInAndConnect(t *testing.T) {
	s := newLoginServerLinks(t, LoginConfig{Limiter: auth.NewLimiter(auth.LimiterConfig{Rate: 100, Burst: 100})}, true)

	for _, accept := range []string{"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", "*/*", "", "application/json;q=0, */*"} {
		req := httptest.NewRequestWithContext(t.Context(), http.MethodGet, "/api/v1/login/github/authorize?redirect_uri="+url.QueryEscape(loginCallback), nil)
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		if rec.Code != http.StatusFound || !strings.HasPrefix(rec.Header().Get("Location"), s.gh.URL+"/login/oauth/authorize?") {
			t.Fatalf("Accept %q: %d %v, want the redirect", accept, rec.Code, rec.Header())
		}
	}

	t.Run("sign in", func(t *testing.T) {
		code, state := s.authorizeJSON(t, "")
		if !strings.HasPrefix(state, "ks1.") {
			t.Fatalf("state %q is not server-issued", state)
		}
		r := s.do(t, http.MethodPost, "/api/v1/login/github?code="+code+"&state="+url.QueryEscape(state)+"&redirect_uri="+url.QueryEscape(loginCallback), "", "", nil, "")
		var res auth.LoginResult
		if err := json.Unmarshal([]byte(r.body), &res); r.status != http.StatusOK || err != nil || res.JWT == "" || res.UserID != "github|1001" {
			t.Fatalf("login = %d %s", r.status, r.body)
		}
	})

	t.Run("connect", func(t *testing.T) {
		issuer, err := auth.NewIssuer(auth.IssuerConfig{Secret: loginSecret, TTL: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		bb, _, err := issuer.Issue(pipeline.User{ID: "bitbucket|{b0b}", Login: "bob"})
		if err != nil {
			t.Fatal(err)
		}
		code, state := s.authorizeJSON(t, bb)
		q := "?code=" + code + "&state=" + url.QueryEscape(state) + "&redirect_uri=" + url.QueryEscape(loginCallback)
		// A connect state: finishing it without the token is refused.
		if msg := errorBody(t, s.do(t, http.MethodPost, "/api/v1/login/github"+q, "", "", nil, ""), http.StatusUnauthorized); !strings.Contains(msg, "connects github") {
			t.Fatalf("a connect state finished without a token: %q", msg)
		}
		code, state = s.authorizeJSON(t, bb)
		q = "?code=" + code + "&state=" + url.QueryEscape(state) + "&redirect_uri=" + url.QueryEscape(loginCallback)
		r := s.do(t, http.MethodPost, "/api/v1/login/github"+q, bb, "", nil, "")
		var res map[string]any
		if err := json.Unmarshal([]byte(r.body), &res); r.status != http.StatusOK || err != nil || res["jwt"] != nil || res["user_id"] != "bitbucket|{b0b}" {
			t.Fatalf("connect = %d %s", r.status, r.body)
		}
		if c, _ := res["connected"].(map[string]any); c["forge"] != "github" || c["login"] != "octocat" {
			t.Fatalf("connect = %s", r.body)
		}
	})

	t.Run("a bad token is refused, not a sign-in", func(t *testing.T) {
		r := s.do(t, http.MethodGet, "/api/v1/login/github/authorize?redirect_uri="+url.QueryEscape(loginCallback), "not-a-jwt", "", nil, "")
		errorBody(t, r, http.StatusUnauthorized)
	})
}
