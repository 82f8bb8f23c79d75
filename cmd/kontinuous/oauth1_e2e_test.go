package main

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kontinuous/kontinuous/auth/oauth1"
	"github.com/kontinuous/kontinuous/pipeline"
)

// bitbucketDC is a stand-in Bitbucket Data Center: an OAuth 1.0a consumer
// (an Application Link) with its RSA key, signing as Atlassian's
// Application Links do (RSA-SHA1, parameters in the Authorization header).
type bitbucketDC struct {
	t        *testing.T
	w        *world
	key      *rsa.PrivateKey
	consumer string
	callback string
	nonce    int
	// skew shifts oauth_timestamp (expired-timestamp tests).
	skew time.Duration
}

func newBitbucketDC(t *testing.T) (*bitbucketDC, string) {
	t.Helper()
	return newBitbucketDCWithCallback(t, "https://bitbucket.example.com/bb/")
}

func newBitbucketDCWithCallback(t *testing.T, callback string) (*bitbucketDC, string) {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	bb := &bitbucketDC{t: t, key: k, consumer: "bitbucket:4242", callback: callback}
	file := filepath.Join(t.TempDir(), "consumers.json")
	data, _ := json.Marshal([]map[string]string{{
		"key": bb.consumer, "name": "Bitbucket (test)", "callback": bb.callback,
		"public_key": string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})),
	}})
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return bb, file
}

// signed sends method path with an OAuth header built from extra oauth_
// parameters; form, if not nil, is sent form-encoded (and signed). tamper,
// if set, changes the request after signing.
func (bb *bitbucketDC) signed(method, path string, extra map[string]string, form url.Values, body any, tamper func(*http.Request)) reply {
	bb.t.Helper()
	bb.nonce++
	op := map[string]string{
		"oauth_consumer_key": bb.consumer, "oauth_signature_method": "RSA-SHA1", "oauth_version": "1.0",
		"oauth_timestamp": strconv.FormatInt(time.Now().Add(bb.skew).Unix(), 10),
		"oauth_nonce":     fmt.Sprintf("n-%d-%d", time.Now().UnixNano(), bb.nonce),
	}
	for k, v := range extra {
		op[k] = v
	}
	return bb.send(method, path, op, form, body, tamper)
}

func (bb *bitbucketDC) send(method, path string, op map[string]string, form url.Values, body any, tamper func(*http.Request)) reply {
	bb.t.Helper()
	u, err := url.Parse(bb.w.app.URL + path)
	if err != nil {
		bb.t.Fatal(err)
	}
	var params []oauth1.Param
	for k, v := range op {
		params = append(params, oauth1.Param{Name: k, Value: v})
	}
	for n, vs := range u.Query() {
		for _, v := range vs {
			params = append(params, oauth1.Param{Name: n, Value: v})
		}
	}
	for n, vs := range form {
		for _, v := range vs {
			params = append(params, oauth1.Param{Name: n, Value: v})
		}
	}
	base := oauth1.BaseString(method, u.Scheme+"://"+u.Host+u.EscapedPath(), params)
	sig, err := oauth1.SignRSASHA1(bb.key, base)
	if err != nil {
		bb.t.Fatal(err)
	}
	var hdr []string
	for k, v := range op {
		hdr = append(hdr, fmt.Sprintf(`%s="%s"`, oauth1.Encode(k), oauth1.Encode(v)))
	}
	hdr = append(hdr, `oauth_signature="`+oauth1.Encode(sig)+`"`)
	var rd io.Reader
	ct := ""
	switch {
	case form != nil:
		rd, ct = strings.NewReader(form.Encode()), "application/x-www-form-urlencoded"
	case body != nil:
		b, _ := json.Marshal(body)
		rd, ct = strings.NewReader(string(b)), "application/json"
	}
	req, err := http.NewRequest(method, u.String(), rd)
	if err != nil {
		bb.t.Fatal(err)
	}
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	req.Header.Set("Authorization", `OAuth realm="kontinuous", `+strings.Join(hdr, ", "))
	if method == http.MethodPost && strings.Contains(path, "/builds") && !strings.Contains(path, "/cancel") {
		req.Header.Set("X-Custom-Event", "dashboard")
	}
	if tamper != nil {
		tamper(req)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		bb.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return reply{status: resp.StatusCode, header: resp.Header, body: data}
}

// formReply decodes a protocol endpoint's form-encoded 200.
func formReply(t *testing.T, r reply) url.Values {
	t.Helper()
	if r.status != http.StatusOK || !strings.HasPrefix(r.header.Get("Content-Type"), "application/x-www-form-urlencoded") {
		t.Fatalf("status %d %s: %s", r.status, r.header.Get("Content-Type"), r.body)
	}
	v, err := url.ParseQuery(string(r.body))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// requestToken is leg 1.
func (bb *bitbucketDC) requestToken() string {
	bb.t.Helper()
	v := formReply(bb.t, bb.signed("POST", "/oauth/1.0a/request-token", map[string]string{"oauth_callback": bb.callback + "plugins/servlet/applinks/oauth/login-dance/access"}, nil, nil, nil))
	if v.Get("oauth_callback_confirmed") != "true" || v.Get("oauth_token") == "" || v.Get("oauth_token_secret") == "" {
		bb.t.Fatalf("request token reply %v", v)
	}
	return v.Get("oauth_token")
}

// loginGitHub signs login in through the GitHub web login, as the UI
// does, so the server holds their GitHub token; it returns their JWT.
func loginGitHub(t *testing.T, w *world, login string) string {
	t.Helper()
	w.gh.AuthorizeAs(login)
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	cb := w.app.URL + "/auth/callback/github"
	resp, err := noFollow.Get(w.app.URL + "/api/v1/login/github/authorize?redirect_uri=" + url.QueryEscape(cb))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	resp, err = noFollow.Get(resp.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	back, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || back.Query().Get("code") == "" {
		t.Fatalf("GitHub sent the browser to %q", resp.Header.Get("Location"))
	}
	r := w.do("POST", "/api/v1/login/github", "", map[string]string{"code": back.Query().Get("code"), "state": back.Query().Get("state"), "redirect_uri": cb})
	expect(t, r, http.StatusOK)
	var res struct{ JWT string }
	r.json(t, &res)
	return res.JWT
}

func TestBitbucketApplicationLinkActsAsTheUserWhoAllowedIt(t *testing.T) {
	bb, file := newBitbucketDC(t)
	w := newWorld(t, "--oauth1-consumers", file, "--github-client-id", "ui-client", "--github-client-secret", "ui-secret")
	bb.w = w
	w.gh.AddOAuthApp("ui-client", "ui-secret")
	w.createPipeline()
	w.gh.Repo("acme", "app").Commit("main", map[string]string{".pipeline.yml": specHead + `    stages:
      - name: slow
        type: command
        params: {command: ["sh", "-c", "echo started; sleep 60"]}
`}, "slow pipeline")
	carol := loginGitHub(t, w, "carol")

	// Leg 1 and the consent, by API as carol.
	rt := bb.requestToken()
	r := w.do("GET", "/api/v1/oauth1/authorize?oauth_token="+url.QueryEscape(rt), carol, nil)
	expect(t, r, http.StatusOK)
	var p oauth1.Pending
	r.json(t, &p)
	if p.ConsumerName != "Bitbucket (test)" || p.ConsumerKey != bb.consumer {
		t.Fatalf("consent page would show %+v", p)
	}
	r = w.do("POST", "/api/v1/oauth1/authorize", carol, map[string]any{"oauth_token": rt, "allow": true})
	expect(t, r, http.StatusOK)
	var red struct{ Redirect string }
	r.json(t, &red)
	to, err := url.Parse(red.Redirect)
	if err != nil || !strings.HasPrefix(red.Redirect, bb.callback) || to.Query().Get("oauth_token") != rt || to.Query().Get("oauth_verifier") == "" {
		t.Fatalf("redirect %q", red.Redirect)
	}
	verifier := to.Query().Get("oauth_verifier")
	// Decided once only.
	expect(t, w.do("POST", "/api/v1/oauth1/authorize", carol, map[string]any{"oauth_token": rt, "allow": true}), http.StatusConflict)

	// Leg 3: the access token.
	v := formReply(t, bb.signed("POST", "/oauth/1.0a/access-token", map[string]string{"oauth_token": rt, "oauth_verifier": verifier}, nil, nil, nil))
	at := v.Get("oauth_token")
	if at == "" || v.Get("oauth_token_secret") == "" {
		t.Fatalf("access token reply %v", v)
	}
	// The request token and verifier are used up.
	expect(t, bb.signed("POST", "/oauth/1.0a/access-token", map[string]string{"oauth_token": rt, "oauth_verifier": verifier}, nil, nil, nil), http.StatusUnauthorized)

	// As carol: who am I, trigger a build, cancel it.
	asCarol := map[string]string{"oauth_token": at}
	r = bb.signed("GET", "/api/v1/user", asCarol, nil, nil, nil)
	expect(t, r, http.StatusOK)
	if !strings.Contains(string(r.body), `"github|1003"`) {
		t.Fatalf("user %s", r.body)
	}
	r = bb.signed("POST", "/api/v1/pipelines/acme/app/builds", asCarol, nil, map[string]any{"branch": "main"}, nil)
	expect(t, r, http.StatusCreated)
	var b pipeline.Build
	r.json(t, &b)
	w.waitBuild(b.Number, func(b pipeline.Build) bool { return len(b.Stages) == 1 && b.Stages[0].Status == pipeline.StatusRunning })
	expect(t, bb.signed("POST", fmt.Sprintf("/api/v1/pipelines/acme/app/builds/%d/cancel", b.Number), asCarol, nil, nil, nil), http.StatusOK)
	if got := w.waitBuild(b.Number, done); got.Status != pipeline.StatusCanceled {
		t.Fatalf("build %s", got.Status)
	}
	// Same authorization as carol's Bearer token: she cannot delete the pipeline.
	expect(t, bb.signed("DELETE", "/api/v1/pipelines/acme/app", asCarol, nil, nil, nil), http.StatusForbidden)
	// An application cannot manage applications.
	expect(t, bb.signed("GET", "/api/v1/user/applications", asCarol, nil, nil, nil), http.StatusForbidden)

	// Refusals: 401 in the error shape.
	replayed := map[string]string{"oauth_token": at, "oauth_nonce": "same-nonce", "oauth_timestamp": strconv.FormatInt(time.Now().Unix(), 10),
		"oauth_consumer_key": bb.consumer, "oauth_signature_method": "RSA-SHA1"}
	expect(t, bb.send("GET", "/api/v1/user", replayed, nil, nil, nil), http.StatusOK)
	r = bb.send("GET", "/api/v1/user", replayed, nil, nil, nil)
	expect(t, r, http.StatusUnauthorized)
	if !strings.Contains(string(r.body), "nonce") {
		t.Errorf("replay message: %s", r.body)
	}
	r = bb.signed("GET", "/api/v1/pipelines?x=1", asCarol, nil, nil, func(req *http.Request) { req.URL.RawQuery = "x=2" })
	expect(t, r, http.StatusUnauthorized)
	if !strings.Contains(string(r.body), "signature") {
		t.Errorf("tamper message: %s", r.body)
	}
	bb.skew = -6 * time.Minute
	r = bb.signed("GET", "/api/v1/user", asCarol, nil, nil, nil)
	expect(t, r, http.StatusUnauthorized)
	if !strings.Contains(string(r.body), "oauth_timestamp") {
		t.Errorf("expired message: %s", r.body)
	}
	bb.skew = 0
	expect(t, bb.signed("GET", "/api/v1/user", map[string]string{"oauth_token": "not-a-token"}, nil, nil, nil), http.StatusUnauthorized)
	expect(t, bb.signed("GET", "/api/v1/user", map[string]string{"oauth_token": at, "oauth_consumer_key": "someone-else"}, nil, nil, nil), http.StatusUnauthorized)
	expect(t, bb.signed("GET", "/api/v1/user", map[string]string{"oauth_token": at, "oauth_signature_method": "HMAC-SHA1"}, nil, nil, nil), http.StatusUnauthorized)

	// Carol sees the application and revokes it: the token stops at once.
	r = w.do("GET", "/api/v1/user/applications", carol, nil)
	expect(t, r, http.StatusOK)
	var apps []oauth1.Application
	r.json(t, &apps)
	if len(apps) != 1 || apps[0].Key != bb.consumer || apps[0].Name != "Bitbucket (test)" || apps[0].Tokens != 1 {
		t.Fatalf("applications %s", r.body)
	}
	expect(t, w.do("DELETE", "/api/v1/user/applications/"+url.PathEscape(bb.consumer), carol, nil), http.StatusNoContent)
	r = bb.signed("GET", "/api/v1/user", asCarol, nil, nil, nil)
	expect(t, r, http.StatusUnauthorized)
	if !strings.Contains(string(r.body), "revoked") {
		t.Errorf("revoked message: %s", r.body)
	}
	expect(t, w.do("DELETE", "/api/v1/user/applications/"+url.PathEscape(bb.consumer), carol, nil), http.StatusNotFound)
	r = w.do("GET", "/api/v1/user/applications", carol, nil)
	expect(t, r, http.StatusOK)
	if strings.TrimSpace(string(r.body)) != "[]" {
		t.Fatalf("after revoke: %s", r.body)
	}
}

func TestApplicationLinkRefusesBadRequestTokensAndDecisions(t *testing.T) {
	bb, file := newBitbucketDC(t)
	w := newWorld(t, "--oauth1-consumers", file)
	bb.w = w
	alice := token(t, "alice", 1001, "tok-alice")

	// A callback outside the registered prefix, or oob, is refused.
	for _, cb := range []string{"https://evil.example.com/", "https://bitbucket.example.com/bbevil", "oob", ""} {
		r := bb.signed("POST", "/oauth/1.0a/request-token", map[string]string{"oauth_callback": cb}, nil, nil, nil)
		expect(t, r, http.StatusBadRequest)
		if !strings.Contains(string(r.body), "oauth_callback") {
			t.Errorf("%q: %s", cb, r.body)
		}
	}
	// Form-encoded protocol parameters are signed too; a tampered body fails.
	r := bb.signed("POST", "/oauth/1.0a/request-token", map[string]string{"oauth_callback": bb.callback}, url.Values{"extra": {"1"}}, nil,
		func(req *http.Request) {
			req.Body = io.NopCloser(strings.NewReader("extra=2"))
			req.ContentLength = 7
		})
	expect(t, r, http.StatusUnauthorized)
	formReply(t, bb.signed("POST", "/oauth/1.0a/request-token", map[string]string{"oauth_callback": bb.callback}, url.Values{"extra": {"1"}}, nil, nil))

	// An unknown consumer is refused.
	other := *bb
	other.consumer = "unknown"
	expect(t, other.signed("POST", "/oauth/1.0a/request-token", map[string]string{"oauth_callback": bb.callback}, nil, nil, nil), http.StatusUnauthorized)
	// A consumer key signed by someone else's key is refused.
	k, _ := rsa.GenerateKey(rand.Reader, 2048)
	forger := *bb
	forger.key = k
	expect(t, forger.signed("POST", "/oauth/1.0a/request-token", map[string]string{"oauth_callback": bb.callback}, nil, nil, nil), http.StatusUnauthorized)

	// Not yet allowed: no access token.
	rt := bb.requestToken()
	expect(t, bb.signed("POST", "/oauth/1.0a/access-token", map[string]string{"oauth_token": rt, "oauth_verifier": "guess"}, nil, nil, nil), http.StatusUnauthorized)

	// Denied: the callback without a verifier, and the token is void.
	r = w.do("POST", "/api/v1/oauth1/authorize", alice, map[string]any{"oauth_token": rt, "allow": false})
	expect(t, r, http.StatusOK)
	var red struct{ Redirect string }
	r.json(t, &red)
	if u, _ := url.Parse(red.Redirect); u == nil || u.Query().Get("oauth_token") != rt || u.Query().Has("oauth_verifier") {
		t.Fatalf("deny redirect %q", red.Redirect)
	}
	expect(t, w.do("POST", "/api/v1/oauth1/authorize", alice, map[string]any{"oauth_token": rt, "allow": true}), http.StatusNotFound)

	// A wrong verifier voids the request token: the right one fails after.
	rt = bb.requestToken()
	r = w.do("POST", "/api/v1/oauth1/authorize", alice, map[string]any{"oauth_token": rt, "allow": true})
	expect(t, r, http.StatusOK)
	r.json(t, &red)
	u, _ := url.Parse(red.Redirect)
	expect(t, bb.signed("POST", "/oauth/1.0a/access-token", map[string]string{"oauth_token": rt, "oauth_verifier": "wrong"}, nil, nil, nil), http.StatusUnauthorized)
	expect(t, bb.signed("POST", "/oauth/1.0a/access-token", map[string]string{"oauth_token": rt, "oauth_verifier": u.Query().Get("oauth_verifier")}, nil, nil, nil), http.StatusUnauthorized)

	// Unknown tokens, and no sign-in.
	expect(t, w.do("GET", "/api/v1/oauth1/authorize?oauth_token=nope", alice, nil), http.StatusNotFound)
	expect(t, w.do("POST", "/api/v1/oauth1/authorize", "", map[string]any{"oauth_token": rt, "allow": true}), http.StatusUnauthorized)

	// The consent page is the UI's.
	r = w.do("GET", "/oauth/1.0a/authorize?oauth_token=x", "", nil, "Accept", "text/html")
	if r.status != http.StatusOK || !strings.Contains(string(r.body), `type="module"`) {
		t.Fatalf("consent page: %d", r.status)
	}
}

func TestApplicationLinkOffAnswers501(t *testing.T) {
	w := newWorld(t)
	expect(t, w.do("POST", "/oauth/1.0a/request-token", "", nil), http.StatusNotImplemented)
	expect(t, w.do("GET", "/api/v1/user/applications", token(t, "alice", 1001, "tok-alice"), nil), http.StatusNotImplemented)
}

func TestConsumersFileProblemsStopStartUpOneLineEach(t *testing.T) {
	file := filepath.Join(t.TempDir(), "consumers.json")
	if err := os.WriteFile(file, []byte(`[{"key":"a","name":"A","public_key":"nope","callback":"https://x.example/"},{"key":"a","name":"B","public_key":"","callback":"https://x.example/"}]`), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := LoadConfig([]string{"--oauth1-consumers", file}, func(string) string { return "" }, io.Discard)
	if err == nil {
		t.Fatal("accepted")
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d lines:\n%s", len(lines), err)
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, "setting --oauth1-consumers (KONTINUOUS_OAUTH1_CONSUMERS): "+file+": consumer ") {
			t.Errorf("line %q", l)
		}
	}
	_, err = LoadConfig([]string{"--oauth1-consumers", file + ".missing"}, func(string) string { return "" }, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "cannot read") {
		t.Fatalf("missing file: %v", err)
	}
}
