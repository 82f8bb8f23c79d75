package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kontinuous/kontinuous/auth"
	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/pipelinetest"
)

func TestServerServesHealthDocsAndErrors(t *testing.T) {
	w := newWorld(t)
	expect(t, w.do("GET", "/healthz", "", nil), http.StatusOK)
	expect(t, w.do("GET", "/readyz", "", nil), http.StatusOK)
	expect(t, w.do("GET", "/version", "", nil), http.StatusOK)
	r := w.do("GET", "/apidocs/", "", nil)
	expect(t, r, http.StatusOK)
	if !strings.Contains(string(r.body), "swagger") || !strings.Contains(string(r.body), "/apidocs.json") {
		t.Fatalf("/apidocs/ is not Swagger UI: %.300s", r.body)
	}
	// The UI's assets are served from the binary.
	expect(t, w.do("GET", "/apidocs/swagger-ui-bundle.js", "", nil), http.StatusOK)
	r = w.do("GET", "/apidocs.json", "", nil)
	expect(t, r, http.StatusOK)
	var doc struct {
		Swagger             string
		Paths               map[string]map[string]json.RawMessage
		SecurityDefinitions map[string]struct{ Type, Name, In string }
	}
	r.json(t, &doc)
	if doc.Swagger != "2.0" || doc.SecurityDefinitions["Bearer"].In != "header" {
		t.Fatalf("spec: swagger %q security %+v", doc.Swagger, doc.SecurityDefinitions)
	}
	for _, p := range []string{"/api/v1/pipelines", "/api/v1/pipelines/{owner}/{repo}/builds", "/api/v1/login/github", "/api/v1/user",
		"/api/v1/pipelines/{owner}/{repo}/builds/{buildNumber}/stages/{stageIndex}/logs", "/healthz"} {
		if _, ok := doc.Paths[p]; !ok {
			t.Errorf("spec lacks %s", p)
		}
	}
	r = w.do("GET", "/no/such/route", "", nil)
	expect(t, r, http.StatusNotFound)
	expect(t, w.do("PATCH", "/api/v1/pipelines", token(t, "alice", 1001, "tok-alice"), nil), http.StatusMethodNotAllowed)
	expect(t, w.do("GET", "/api/v1/pipelines", "", nil), http.StatusUnauthorized)
	expect(t, w.do("GET", "/api/v1/pipelines", "not-a-jwt", nil), http.StatusUnauthorized)
	// Metrics count requests by route.
	r = w.do("GET", "/metrics", "", nil)
	if !strings.Contains(string(r.body), `kontinuous_http_requests_total{method="GET",route="/healthz",status="200"}`) {
		t.Errorf("metrics lack the healthz count")
	}
}

func TestCORSPreflightAllowsConfiguredOrigin(t *testing.T) {
	w := newWorld(t, "--cors-origins", "https://ui.example.com")
	r := w.do("OPTIONS", "/api/v1/pipelines", "", nil, "Origin", "https://ui.example.com", "Access-Control-Request-Method", "POST",
		"Access-Control-Request-Headers", "Authorization, X-Custom-Event")
	if r.status != http.StatusNoContent || r.header.Get("Access-Control-Allow-Origin") != "https://ui.example.com" ||
		!strings.Contains(r.header.Get("Access-Control-Allow-Headers"), "X-Custom-Event") {
		t.Fatalf("preflight: %d %v", r.status, r.header)
	}
	r = w.do("OPTIONS", "/api/v1/pipelines", "", nil, "Origin", "https://evil.example.com", "Access-Control-Request-Method", "POST")
	if r.header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("evil origin allowed: %v", r.header)
	}
}

func TestPipelineWalkthroughAndAccessControl(t *testing.T) {
	w := newWorld(t)
	alice := token(t, "alice", 1001, "tok-alice")
	bob := token(t, "bob", 1002, "tok-bob")
	dave := token(t, "dave", 1004, "tok-dave")

	r := w.do("GET", "/api/v1/repositories", alice, nil)
	expect(t, r, http.StatusOK)
	var repos []pipeline.Repository
	r.json(t, &repos)
	if len(repos) != 1 || repos[0].FullName != "acme/app" || repos[0].DefaultBranch != "main" {
		t.Fatalf("repositories: %s", r.body)
	}
	// Bad bodies change nothing.
	expect(t, w.do("POST", "/api/v1/pipelines", alice, `{"owner":`), http.StatusBadRequest)
	expect(t, w.do("POST", "/api/v1/pipelines", alice, map[string]any{"owner": "acme", "repo": "app", "events": []string{"pull_request"}}), http.StatusBadRequest)
	expect(t, w.do("POST", "/api/v1/pipelines", alice, `{"owner":"`+strings.Repeat("a", 2<<20)+`"}`), http.StatusRequestEntityTooLarge)
	// Non-admins cannot create; strangers get 404.
	expect(t, w.do("POST", "/api/v1/pipelines", dave, map[string]any{"owner": "acme", "repo": "app", "events": []string{"push"}}), http.StatusForbidden)
	expect(t, w.do("POST", "/api/v1/pipelines", bob, map[string]any{"owner": "acme", "repo": "app", "events": []string{"push"}}), http.StatusNotFound)
	if len(w.gh.Hooks("acme", "app")) != 0 {
		t.Fatal("a refused create left a webhook")
	}

	p := w.createPipeline("push")
	if p.Owner != "acme" || p.Repo != "app" || len(p.Events) != 1 {
		t.Fatalf("pipeline = %+v", p)
	}
	hooks, keys := w.gh.Hooks("acme", "app"), w.gh.DeployKeys("acme", "app")
	if len(hooks) != 1 || !strings.HasSuffix(hooks[0].URL, "/api/v1/pipelines/acme/app/builds") || hooks[0].ContentType != "json" || len(hooks[0].Secret) < 32 {
		t.Fatalf("hooks = %+v", hooks)
	}
	if len(keys) != 1 || !keys[0].ReadOnly || !strings.HasPrefix(keys[0].Key, "ssh-ed25519 ") {
		t.Fatalf("deploy keys = %+v", keys)
	}
	expect(t, w.do("POST", "/api/v1/pipelines", alice, map[string]any{"owner": "ACME", "repo": "App", "events": []string{"push"}}), http.StatusConflict)
	r = w.do("GET", "/api/v1/pipelines/ACME/APP", dave, nil) // case-insensitive; read access sees it
	expect(t, r, http.StatusOK)
	if strings.Contains(string(r.body), hooks[0].Secret) || strings.Contains(string(r.body), "PRIVATE KEY") {
		t.Fatal("pipeline reply leaks the webhook secret or the deploy key")
	}
	// Bob sees nothing.
	expect(t, w.do("GET", "/api/v1/pipelines/acme/app", bob, nil), http.StatusNotFound)
	r = w.do("GET", "/api/v1/pipelines", bob, nil)
	expect(t, r, http.StatusOK)
	if strings.TrimSpace(string(r.body)) != "[]" {
		t.Fatalf("bob lists %s", r.body)
	}
	r = w.do("GET", "/api/v1/pipelines", dave, nil)
	var listed []pipeline.Pipeline
	r.json(t, &listed)
	if len(listed) != 1 || listed[0].Repo != "app" {
		t.Fatalf("dave lists %s", r.body)
	}

	// Definition: update by commit, read it back.
	content := base64.StdEncoding.EncodeToString([]byte(specHead + "    stages:\n      - name: a\n        type: command\n        params: {command: [\"true\"]}\n"))
	expect(t, w.do("GET", "/api/v1/pipelines/acme/app/definition", alice, nil), http.StatusNotFound)
	r = w.do("POST", "/api/v1/pipelines/acme/app/definition", alice, map[string]any{
		"definition": map[string]string{"content": content}, "commit": map[string]string{"message": "add spec", "option": "commit"}})
	expect(t, r, http.StatusOK)
	r = w.do("GET", "/api/v1/pipelines/acme/app/definition", dave, nil)
	expect(t, r, http.StatusOK)
	var def pipeline.Definition
	r.json(t, &def)
	if def.Content != content || def.SHA == "" {
		t.Fatalf("definition = %+v", def)
	}
	expect(t, w.do("POST", "/api/v1/pipelines/acme/app/definition", dave, map[string]any{"definition": map[string]string{"content": content}}), http.StatusForbidden)
	// By pull request.
	r = w.do("POST", "/api/v1/pipelines/acme/app/definition", alice, map[string]any{
		"definition": map[string]string{"content": content, "sha": def.SHA},
		"commit":     map[string]string{"message": "via PR", "option": "pull_request", "branch_name": "kontinuous-spec"}})
	expect(t, r, http.StatusOK)
	if len(w.gh.PullRequests("acme", "app")) != 1 {
		t.Fatal("no pull request opened")
	}

	// Secrets: values never come back.
	expect(t, w.do("PUT", "/api/v1/pipelines/acme/app/secrets/creds", alice, map[string]any{"data": map[string]string{"API_TOKEN": "v3ry-s3cret"}}), http.StatusOK)
	expect(t, w.do("PUT", "/api/v1/pipelines/acme/app/secrets/Bad_Name", alice, map[string]any{"data": map[string]string{"A": "b"}}), http.StatusBadRequest)
	expect(t, w.do("PUT", "/api/v1/pipelines/acme/app/secrets/creds", dave, map[string]any{"data": map[string]string{"A": "b"}}), http.StatusForbidden)
	for _, path := range []string{"/api/v1/pipelines/acme/app/secrets", "/api/v1/pipelines/acme/app/secrets/creds", "/api/v1/pipelines/acme/app"} {
		r = w.do("GET", path, alice, nil)
		expect(t, r, http.StatusOK)
		if strings.Contains(string(r.body), "v3ry-s3cret") {
			t.Fatalf("%s leaks a secret value: %s", path, r.body)
		}
		if !strings.Contains(string(r.body), "creds") {
			t.Fatalf("%s does not name the secret: %s", path, r.body)
		}
	}
	// Path parameters are validated.
	expect(t, w.do("GET", "/api/v1/pipelines/acme/app/builds/0", alice, nil), http.StatusBadRequest)
	expect(t, w.do("GET", "/api/v1/pipelines/acme/app/builds/-1", alice, nil), http.StatusBadRequest)
	expect(t, w.do("GET", "/api/v1/pipelines/acme/app/builds/99999999999999999999", alice, nil), http.StatusBadRequest)
	expect(t, w.do("GET", "/api/v1/pipelines/acme/app/builds/7", alice, nil), http.StatusNotFound)
	expect(t, w.do("GET", "/api/v1/pipelines/ac_me/app", alice, nil), http.StatusBadRequest)

	// Delete removes webhook and deploy key.
	expect(t, w.do("DELETE", "/api/v1/pipelines/acme/app", dave, nil), http.StatusForbidden)
	expect(t, w.do("DELETE", "/api/v1/pipelines/acme/app", alice, nil), http.StatusNoContent)
	if len(w.gh.Hooks("acme", "app")) != 0 || len(w.gh.DeployKeys("acme", "app")) != 0 {
		t.Fatal("delete left the webhook or the deploy key")
	}
	expect(t, w.do("GET", "/api/v1/pipelines/acme/app", alice, nil), http.StatusNotFound)
}

func TestPipelineCreateUndoesGitHubStepsOnFailure(t *testing.T) {
	w := newWorld(t)
	w.gh.FailNext("POST", "/keys", http.StatusInternalServerError, `{"message":"boom"}`)
	r := w.do("POST", "/api/v1/pipelines", token(t, "alice", 1001, "tok-alice"), map[string]any{"owner": "acme", "repo": "app", "events": []string{"push"}})
	expect(t, r, http.StatusBadGateway)
	if len(w.gh.Hooks("acme", "app")) != 0 || len(w.gh.DeployKeys("acme", "app")) != 0 {
		t.Fatal("a failed create left GitHub state behind")
	}
	expect(t, w.do("GET", "/api/v1/pipelines/acme/app", token(t, "alice", 1001, "tok-alice"), nil), http.StatusNotFound)
	w.createPipeline() // and it works afterwards
}

func TestEtcdDownAnswers503QuicklyAndRecovers(t *testing.T) {
	dir := t.TempDir()
	etcd := pipelinetest.StartEtcdServer(t, dir)
	w := newWorld(t, "--etcd-endpoints", strings.Join(etcd.Endpoints(), ","))
	w.createPipeline()
	alice := token(t, "alice", 1001, "tok-alice")
	etcd.Stop()
	start := time.Now()
	r := w.do("GET", "/api/v1/pipelines/acme/app/builds", alice, nil)
	expect(t, r, http.StatusServiceUnavailable)
	if r.header.Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}
	// Bounded by the store's op timeout (5 s), not hanging; generous for
	// a loaded machine.
	if d := time.Since(start); d > 25*time.Second {
		t.Fatalf("503 took %s", d)
	}
	expect(t, w.do("GET", "/readyz", "", nil), http.StatusServiceUnavailable)
	etcd.Start()
	deadline := time.Now().Add(patience)
	for {
		r = w.do("GET", "/api/v1/pipelines/acme/app/builds", alice, nil)
		if r.status == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no recovery: %d %s", r.status, r.body)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestSettingsFlagWinsOverEnvAndBadValuesNameTheSetting(t *testing.T) {
	env := map[string]string{"KONTINUOUS_LISTEN": "127.0.0.1:4000", "BIND_ADDR": "0.0.0.0", "BIND_PORT": "5000", "KV_ADDRESS": "http://10.0.0.1:2379"}
	getenv := func(k string) string { return env[k] }
	c, err := LoadConfig([]string{"--listen", "127.0.0.1:6000"}, getenv, nil)
	if err != nil || c.Listen != "127.0.0.1:6000" || len(c.EtcdEndpoints) != 1 {
		t.Fatalf("flag should win: %+v %v", c, err)
	}
	c, err = LoadConfig(nil, func(k string) string { return map[string]string{"BIND_ADDR": "0.0.0.0", "BIND_PORT": "5000"}[k] }, nil)
	if err != nil || c.Listen != "0.0.0.0:5000" || c.URL != "http://127.0.0.1:5000" {
		t.Fatalf("BIND_ADDR+BIND_PORT: %+v %v", c, err)
	}
	c, err = LoadConfig(nil, func(string) string { return "" }, nil)
	if err != nil || c.Listen != "127.0.0.1:3005" || c.DataDir != "./kontinuous-data" || c.Executor != "local" || c.TokenTTL != 24*time.Hour {
		t.Fatalf("defaults: %+v %v", c, err)
	}
	short := base64.StdEncoding.EncodeToString(make([]byte, 16))
	bad := []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--listen", "nonsense"}, nil, "--listen"},
		{nil, map[string]string{"AUTH_SECRET": short}, "--auth-secret"},
		{[]string{"--auth-secret", "!!!"}, nil, "--auth-secret"},
		{[]string{"--token-ttl", "forever"}, nil, "--token-ttl"},
		{[]string{"--executor", "docker"}, nil, "--executor"},
		{[]string{"--github-api-url", "ftp://x"}, nil, "--github-api-url"},
		{[]string{"--auth0-issuer", "http://tenant.example.com/"}, map[string]string{"AUTH0_AUDIENCE": "x"}, "--auth0-issuer"},
		{[]string{"--auth0-issuer", "https://tenant.example.com/"}, nil, "--auth0-audience"},
		{[]string{"--tls-cert", "a.pem"}, nil, "--tls-cert"},
		{[]string{"--etcd-endpoints", "not a url"}, nil, "--etcd-endpoints"},
		{[]string{"--cors-origins", "nope"}, nil, "--cors-origins"},
	}
	for _, b := range bad {
		t.Run(b.want+" "+strings.Join(b.args, " "), func(t *testing.T) {
			_, err := LoadConfig(b.args, func(k string) string { return b.env[k] }, nil)
			if err == nil || !strings.Contains(err.Error(), b.want) {
				t.Fatalf("err = %v, want it to name %s", err, b.want)
			}
		})
	}
	// Secrets decode from either alphabet, padded or not.
	raw := make([]byte, 32)
	for i := range raw {
		raw[i] = byte(250 - i)
	}
	for _, s := range []string{base64.StdEncoding.EncodeToString(raw), base64.RawStdEncoding.EncodeToString(raw), base64.URLEncoding.EncodeToString(raw), base64.RawURLEncoding.EncodeToString(raw)} {
		if got, err := auth.DecodeSecret(s); err != nil || string(got) != string(raw) {
			t.Errorf("auth.DecodeSecret(%q) = %v", s, err)
		}
	}
}

func TestUnknownFlagIsOneLineAndSwitchesTakeNoValue(t *testing.T) {
	var out bytes.Buffer
	_, err := LoadConfig([]string{"--frobnicate"}, func(string) string { return "" }, &out)
	if err == nil || !strings.Contains(err.Error(), "frobnicate") || strings.Contains(err.Error(), "\n") || out.Len() != 0 {
		t.Fatalf("unknown flag: err %v, printed %q", err, out.String())
	}
	c, err := LoadConfig([]string{"--allow-fork-builds", "--notify-allow-private=false"}, func(string) string { return "" }, &out)
	if err != nil || !c.AllowForkBuilds || c.NotifyAllowPrivate {
		t.Fatalf("switches: %+v %v", c, err)
	}
	c, err = LoadConfig(nil, func(k string) string { return map[string]string{"KONTINUOUS_ALLOW_FORK_BUILDS": "true"}[k] }, &out)
	if err != nil || !c.AllowForkBuilds {
		t.Fatalf("switch from env: %v", err)
	}
	if _, err := LoadConfig([]string{"--help"}, func(string) string { return "" }, &out); !errors.Is(err, flag.ErrHelp) || !strings.Contains(out.String(), "--allow-fork-builds") && !strings.Contains(out.String(), "-allow-fork-builds") {
		t.Fatalf("--help: %v %q", err, out.String())
	}
}
