package api

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/go-openapi/loads"
	"github.com/go-openapi/strfmt"
	"github.com/go-openapi/validate"

	"github.com/kontinuous/kontinuous/pipeline"
)

// servedSpec fetches /apidocs.json from a server with every resource.
func servedSpec(t *testing.T) []byte {
	t.Helper()
	srv := httptest.NewServer(newTestServer(t))
	defer srv.Close()
	resp, err := http.Get(srv.URL + SpecPath)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var raw json.RawMessage
	if err := json.NewDecoder(resp.Body).Decode(&raw); err != nil {
		t.Fatal(err)
	}
	return raw
}

// TestServedSpecIsValidSwagger runs go-openapi's validator (the JSON
// schema of Swagger 2.0 and its extra rules: unique operationIds, path
// parameters, references...) on the served document.
func TestServedSpecIsValidSwagger(t *testing.T) {
	doc, err := loads.Analyzed(servedSpec(t), "2.0")
	if err != nil {
		t.Fatal(err)
	}
	res, _ := validate.NewSpecValidator(doc.Schema(), strfmt.Default).Validate(doc)
	if res == nil {
		t.Fatal("no validation result")
	}
	for _, e := range res.Errors {
		t.Errorf("invalid: %v", e)
	}
	for _, w := range res.Warnings {
		t.Logf("warning: %v", w)
	}
}

// TestServedSpecIsUsable checks what a client generator and Swagger UI
// need beyond validity.
func TestServedSpecIsUsable(t *testing.T) {
	var doc struct {
		Tags []struct {
			Name, Description string
		}
		Paths       map[string]map[string]json.RawMessage
		Definitions map[string]struct {
			Required   []string
			Properties map[string]struct {
				Enum        []string
				Description string
				Format      string
			}
		}
	}
	if err := json.Unmarshal(servedSpec(t), &doc); err != nil {
		t.Fatal(err)
	}
	type op struct {
		OperationID string `json:"operationId"`
		Tags        []string
		Security    []map[string][]string
		Responses   map[string]json.RawMessage
		Parameters  []struct {
			In, Name string
			Required bool
		}
	}
	ids := map[string]string{}
	tags := map[string]bool{}
	ops := map[string]op{}
	for path, item := range doc.Paths {
		for method, raw := range item {
			var o op
			if err := json.Unmarshal(raw, &o); err != nil {
				continue // parameters shared by the path
			}
			key := strings.ToUpper(method) + " " + path
			ops[key] = o
			if prev, dup := ids[o.OperationID]; dup {
				t.Errorf("operationId %q of %s is also %s's", o.OperationID, key, prev)
			}
			ids[o.OperationID] = key
			for _, tg := range o.Tags {
				tags[tg] = true
			}
			for _, p := range o.Parameters {
				if p.In == "body" {
					if _, ok := o.Responses["415"]; !ok {
						t.Errorf("%s takes a body but does not list 415", key)
					}
				}
			}
		}
	}
	described := map[string]bool{}
	for _, tg := range doc.Tags {
		if tg.Description != "" {
			described[tg.Name] = true
		}
	}
	for tg := range tags {
		if !described[tg] {
			t.Errorf("tag %q has no description", tg)
		}
	}
	bearer := func(key string) (bearer, anonymous bool) {
		for _, req := range ops[key].Security {
			if _, ok := req["Bearer"]; ok {
				bearer = true
			}
			if len(req) == 0 {
				anonymous = true
			}
		}
		return
	}
	// The manual trigger and the approval take a Bearer token (so that
	// Authorize applies) but webhooks and agents come without one.
	for _, key := range []string{"POST /api/v1/pipelines/{owner}/{repo}/builds", "POST /api/v1/pipelines/{owner}/{repo}/builds/{buildNumber}/stages/{stageIndex}"} {
		if b, a := bearer(key); !b || !a {
			t.Errorf("%s: security %v, want Bearer or none", key, ops[key].Security)
		}
		for _, p := range ops[key].Parameters {
			if p.In == "body" && p.Required {
				t.Errorf("%s requires a body; an approval (or a webhook) sends none of that shape", key)
			}
		}
	}
	if b, _ := bearer("POST /api/v1/lint"); !b {
		t.Error("POST /api/v1/lint is not marked as needing a token")
	}
	if b, a := bearer("GET /api/v1/pipelines/{owner}/{repo}/badge.svg"); b || a {
		t.Error("the badge is public and needs no security")
	}
	if np := doc.Definitions["pipeline.NewPipeline"]; slices.Contains(np.Required, "login") || !slices.Contains(np.Required, "owner") {
		t.Errorf("NewPipeline required = %v; login is optional", np.Required)
	}
	for _, name := range []string{"pipeline.Build", "pipeline.BuildSummary", "pipeline.Stage"} {
		def := doc.Definitions[name]
		for _, f := range []string{"created", "started", "finished"} {
			if p, ok := def.Properties[f]; ok && (!strings.Contains(p.Description, "nanoseconds") || p.Format != "int64") {
				t.Errorf("%s.%s = %+v: times must say they are Unix nanoseconds", name, f, p)
			}
		}
		st := def.Properties["status"]
		for _, s := range pipeline.Statuses {
			if !slices.Contains(st.Enum, string(s)) {
				t.Errorf("%s.status enum %v lacks %s", name, st.Enum, s)
			}
		}
	}
}
