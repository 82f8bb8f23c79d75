package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kontinuous/kontinuous/pipeline"
	githubscm "github.com/kontinuous/kontinuous/pipeline/forge/github"
)

var update = flag.Bool("update", false, "rewrite testdata/apidocs.golden.json")

type refuseAll struct{}

func (refuseAll) Authenticate(*http.Request) (context.Context, error) {
	return nil, pipeline.Errorf(pipeline.ErrUnauthorized, "no")
}

// specService is a Service whose only part is the GitHub forge, whose
// webhook headers the spec documents.
func specService(t *testing.T) *pipeline.Service {
	gh, err := githubscm.New(githubscm.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return pipeline.NewService(pipeline.ServiceConfig{SCM: gh})
}

// newTestServer assembles every resource; handlers are not called, so the
// use cases can be nil.
func newTestServer(t *testing.T) *Server {
	t.Helper()
	s, err := New(Config{
		Version: "test", PublicURL: "http://127.0.0.1:3005", Authenticator: refuseAll{},
		Ready: func(context.Context) error { return errors.New("etcd down") },
		Resources: []Resource{
			NewLoginResources(LoginConfig{}),
			NewUserResources(nil, nil),
			NewForgeResources([]Forge{{Name: "github", LoginURL: "/api/v1/login/github/authorize"}}),
			NewPipelineResources(nil, nil),
			NewBuildResources(specService(t), nil, refuseAll{}),
			NewLintResources(),
			NewBadgeResources(nil),
			NewOAuth1Resources(nil),
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestAPIDocsMatchGolden keeps route drift visible in review; run
// `go test ./api -update` to accept a change.
func TestAPIDocsMatchGolden(t *testing.T) {
	srv := httptest.NewServer(newTestServer(t))
	defer srv.Close()
	resp, err := http.Get(srv.URL + SpecPath)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	got, _ := json.MarshalIndent(doc, "", "  ") // a decoded document always marshals
	golden := filepath.Join("testdata", "apidocs.golden.json")
	if *update {
		if err := os.WriteFile(golden, append(got, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test ./api -update)", err)
	}
	if !bytes.Equal(bytes.TrimSpace(got), bytes.TrimSpace(want)) {
		t.Fatalf("/apidocs.json differs from %s; run `go test ./api -update` and review the diff", golden)
	}
}

func TestEverySecuredRouteDeclaresBearerAndErrors(t *testing.T) {
	s := newTestServer(t)
	var services = s.container.RegisteredWebServices()
	sw := BuildSpec(services, "test")
	for path, item := range sw.Paths.Paths {
		for _, m := range []string{"GET", "POST", "PUT", "DELETE"} {
			op := operation(&item, m)
			if op == nil {
				continue
			}
			if op.Summary == "" {
				t.Errorf("%s %s has no summary", m, path)
			}
			if len(op.Tags) == 0 {
				t.Errorf("%s %s has no tag", m, path)
			}
			// Public: the login and the badge; webhook deliveries and
			// agent updates list "Bearer or none".
			if strings.HasPrefix(path, "/api/v1/") && !strings.Contains(path, "/login/") && path != "/api/v1/forges" && len(op.Security) == 0 &&
				!strings.HasSuffix(path, "/badge.svg") {
				t.Errorf("%s %s is not marked as needing a Bearer token", m, path)
			}
		}
	}
}

func TestRouterErrorsUseContractShape(t *testing.T) {
	srv := httptest.NewServer(newTestServer(t))
	defer srv.Close()
	for _, c := range []struct {
		method, path string
		want         int
	}{
		{"GET", "/nope", 404},
		{"PATCH", "/api/v1/pipelines", 405},
		{"GET", "/api/v1/pipelines", 401},
		{"GET", "/readyz", 503},
	} {
		req, _ := http.NewRequest(c.method, srv.URL+c.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var e Error
		err = json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if resp.StatusCode != c.want || err != nil || e.Code != c.want || e.Message == "" {
			t.Errorf("%s %s: %d %+v %v", c.method, c.path, resp.StatusCode, e, err)
		}
	}
}
