package main

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/kontinuous/kontinuous/pipeline"
)

func TestCanceledBuildSkipsLaterStagesAndSaysItWasCanceled(t *testing.T) {
	w := newWorld(t)
	w.createPipeline()
	spec := specHead + `    stages:
      - name: slow
        type: command
        params: {command: ["sh", "-c", "echo started; sleep 60"]}
      - name: later
        type: command
        params: {command: ["echo", "never"]}
`
	_, r := w.push(map[string]string{".pipeline.yml": spec}, "d-1")
	expect(t, r, http.StatusCreated)
	w.waitBuild(1, func(b pipeline.Build) bool {
		return len(b.Stages) == 2 && b.Stages[0].Status == pipeline.StatusRunning && strings.Contains(w.stageLog(1, 1), "started")
	})
	expect(t, w.do("POST", "/api/v1/pipelines/acme/app/builds/1/cancel", token(t, "carol", 1003, "tok-carol"), nil), http.StatusOK)
	b := w.waitBuildWithin(60e9, 1, func(b pipeline.Build) bool { return b.Status.Done() && b.Stages[0].Status.Done() })
	if b.Status != pipeline.StatusCanceled || b.Stages[0].Status != pipeline.StatusCanceled || b.Stages[1].Status != pipeline.StatusSkipped {
		t.Fatalf("build %s, stages %s/%s", b.Status, b.Stages[0].Status, b.Stages[1].Status)
	}
	if b.Stages[0].Message != "build canceled" || !strings.Contains(b.Stages[1].Message, "canceled") || b.Stages[1].Finished == 0 {
		t.Fatalf("messages %q / %q (finished %d)", b.Stages[0].Message, b.Stages[1].Message, b.Stages[1].Finished)
	}
	log := w.stageLog(1, 1)
	if strings.Contains(log, "canceled: canceled") || !strings.Contains(log, "stage stopped: build canceled") {
		t.Fatalf("log:\n%s", log)
	}
}

func TestLogsFormatTextIsTheRawLogAsWithAcceptTextPlain(t *testing.T) {
	w := newWorld(t)
	w.createPipeline()
	spec := specHead + `    stages:
      - name: hello
        type: command
        params: {command: ["sh", "-c", "echo line one; echo line two"]}
`
	_, r := w.push(map[string]string{".pipeline.yml": spec}, "d-1")
	expect(t, r, http.StatusCreated)
	if b := w.waitBuild(1, done); b.Status != pipeline.StatusSuccess {
		t.Fatalf("build %s: %s", b.Status, b.Message)
	}
	alice := token(t, "alice", 1001, "tok-alice")
	const logs = "/api/v1/pipelines/acme/app/builds/1/stages/1/logs"
	plain := w.stageLog(1, 1)
	text := w.do("GET", logs+"?format=text", alice, nil)
	expect(t, text, http.StatusOK)
	if string(text.body) != plain || !strings.Contains(plain, "line one\nline two") || !strings.HasPrefix(text.header.Get("Content-Type"), "text/plain") {
		t.Fatalf("?format=text %q (%s), Accept: text/plain %q", text.body, text.header.Get("Content-Type"), plain)
	}
	for _, q := range []string{"", "?format=json"} {
		js := w.do("GET", logs+q, alice, nil)
		expect(t, js, http.StatusOK)
		var files []struct{ Filename, Content string }
		js.json(t, &files)
		raw, err := base64.StdEncoding.DecodeString(files[0].Content)
		if len(files) != 1 || err != nil || string(raw) != plain || files[0].Filename != "1-hello.log" {
			t.Fatalf("%q: %+v %v", q, files, err)
		}
	}
	expect(t, w.do("GET", logs+"?format=xml", alice, nil), http.StatusBadRequest)
	// Access is checked whatever the format.
	expect(t, w.do("GET", logs+"?format=text", token(t, "bob", 1002, "tok-bob"), nil), http.StatusNotFound)
}

func TestLintEndpointListsProblemsWithStageAndField(t *testing.T) {
	w := newWorld(t)
	alice := token(t, "alice", 1001, "tok-alice")
	bad := specHead + `    stages:
      - name: Test
        type: command
      - name: Ship
        type: docker_publsh
`
	type result struct {
		Valid    bool
		Stages   int
		Problems []struct{ Stage, Field, Message, Text string }
	}
	for _, c := range []struct {
		name, ctype string
		body        any
	}{
		{"raw YAML", "application/yaml", bad},
		{"JSON content", "application/json", map[string]string{"content": bad}},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := w.do("POST", "/api/v1/lint", alice, c.body, "Content-Type", c.ctype)
			expect(t, r, http.StatusOK)
			var res result
			r.json(t, &res)
			if res.Valid || len(res.Problems) != 2 || res.Problems[0].Stage != "Test" || res.Problems[0].Field != "spec.template.stages[0].params.command" ||
				res.Problems[1].Stage != "Ship" || !strings.Contains(res.Problems[1].Field, "stages[1]") || res.Problems[0].Message == "" {
				t.Fatalf("%s", r.body)
			}
		})
	}
	good := specHead + `    stages:
      - name: Test
        type: command
        params: {command: [go, test, ./...]}
`
	r := w.do("POST", "/api/v1/lint", alice, good, "Content-Type", "text/plain")
	expect(t, r, http.StatusOK)
	var res result
	r.json(t, &res)
	if !res.Valid || res.Stages != 1 || len(res.Problems) != 0 || !strings.Contains(string(r.body), `"problems":[]`) {
		t.Fatalf("valid spec: %s", r.body)
	}
	expect(t, w.do("POST", "/api/v1/lint", "", good, "Content-Type", "text/plain"), http.StatusUnauthorized)
	expect(t, w.do("POST", "/api/v1/lint", alice, "", "Content-Type", "application/yaml"), http.StatusBadRequest)
	expect(t, w.do("POST", "/api/v1/lint", alice, map[string]string{}, "Content-Type", "application/json"), http.StatusBadRequest)
	expect(t, w.do("POST", "/api/v1/lint", alice, good, "Content-Type", "application/xml"), http.StatusUnsupportedMediaType)
}

func TestBadgeShowsPublicBuildsAndNeverRevealsPrivateOnes(t *testing.T) {
	w := newWorld(t)
	w.createPipeline()
	badge := func(path string, hdr ...string) reply {
		t.Helper()
		r := w.do("GET", path, "", nil, hdr...)
		return r
	}
	unknown := badge("/api/v1/pipelines/acme/nope/badge.svg")
	if unknown.status != http.StatusOK || !strings.Contains(string(unknown.body), ">unknown<") ||
		!strings.HasPrefix(unknown.header.Get("Content-Type"), "image/svg+xml") || !strings.Contains(unknown.header.Get("Cache-Control"), "no-cache") {
		t.Fatalf("missing pipeline: %d %v %s", unknown.status, unknown.header, unknown.body)
	}
	spec := specHead + `    stages:
      - name: ok
        type: command
        params: {command: ["true"]}
`
	_, r := w.push(map[string]string{".pipeline.yml": spec}, "d-1")
	expect(t, r, http.StatusCreated)
	w.waitBuild(1, done)
	// acme/app is private: the very same answer as a missing pipeline
	// (or a bad name), with or without a branch.
	for _, p := range []string{"/api/v1/pipelines/acme/app/badge.svg", "/api/v1/pipelines/acme/app/badge.svg?branch=main", "/api/v1/pipelines/-acme/app/badge.svg", "/api/v1/pipelines/ACME/APP/badge.svg"} {
		got := badge(p)
		if got.status != unknown.status || string(got.body) != string(unknown.body) || got.header.Get("ETag") != unknown.header.Get("ETag") {
			t.Fatalf("%s reveals something: %d %s", p, got.status, got.body)
		}
	}
	w.gh.SetPublic("acme", "app", true)
	// The visibility is cached for a minute: a new server asks afresh.
	w.stop()
	w.start()
	pass := badge("/api/v1/pipelines/acme/app/badge.svg")
	if pass.status != http.StatusOK || !strings.Contains(string(pass.body), ">passing<") {
		t.Fatalf("public repository: %d %s", pass.status, pass.body)
	}
	if b := badge("/api/v1/pipelines/acme/app/badge.svg?branch=main"); !strings.Contains(string(b.body), ">passing<") {
		t.Fatalf("branch main: %s", b.body)
	}
	if b := badge("/api/v1/pipelines/acme/app/badge.svg?branch=other"); !strings.Contains(string(b.body), ">no builds<") {
		t.Fatalf("branch without builds: %s", b.body)
	}
	if nm := badge("/api/v1/pipelines/acme/app/badge.svg", "If-None-Match", pass.header.Get("ETag")); nm.status != http.StatusNotModified {
		t.Fatalf("If-None-Match: %d", nm.status)
	}
	// A failing build turns it red.
	failing := specHead + `    stages:
      - name: bad
        type: command
        params: {command: ["false"]}
`
	_, r = w.push(map[string]string{".pipeline.yml": failing}, "d-2")
	expect(t, r, http.StatusCreated)
	w.waitBuild(2, done)
	if b := badge("/api/v1/pipelines/acme/app/badge.svg"); !strings.Contains(string(b.body), ">failing<") {
		t.Fatalf("after a failure: %s", b.body)
	}
}

func TestCreatingAPipelineWithALoopbackURLForARemoteForgeIsRefused(t *testing.T) {
	// The forge's API URL is not on this machine (and not reachable: the
	// refusal comes before any call to it).
	w := newWorld(t, "--github-api-url", "http://192.0.2.1/api/v3/")
	r := w.do("POST", "/api/v1/pipelines", token(t, "alice", 1001, "tok-alice"), map[string]any{"owner": "acme", "repo": "app", "events": []string{"push"}})
	expect(t, r, http.StatusConflict)
	var e struct{ Message string }
	_ = json.Unmarshal(r.body, &e)
	if !strings.Contains(e.Message, "--url") || !strings.Contains(e.Message, "loopback") {
		t.Fatalf("message %q does not name --url", e.Message)
	}
	// Nothing was stored: the same data with the real forge has no pipeline.
	w.stop()
	w.extra = nil
	w.start()
	if len(w.gh.Hooks("acme", "app")) != 0 {
		t.Fatal("a webhook was installed")
	}
	expect(t, w.do("GET", "/api/v1/pipelines/acme/app", token(t, "alice", 1001, "tok-alice"), nil), http.StatusNotFound)
}

func TestWebhookURLProblemRule(t *testing.T) {
	for _, c := range []struct {
		url, forge string
		refuse     bool
	}{
		{"http://127.0.0.1:3005", "https://api.github.com/", true},
		{"http://localhost:3005", "https://api.github.com/", true},
		{"http://[::1]:3005", "https://github.example.com/api/v3/", true},
		{"http://ci.localhost", "https://api.github.com/", true},
		{"https://ci.example.com", "https://api.github.com/", false},
		{"http://10.0.0.5:3005", "https://api.github.com/", false},
		{"http://127.0.0.1:3005", "http://127.0.0.1:9999/api/v3/", false},
		{"http://127.0.0.1:3005", "http://localhost:9999/api/v3/", false},
	} {
		if got := webhookURLProblem(c.url, c.forge); (got != "") != c.refuse || (c.refuse && !strings.Contains(got, "--url")) {
			t.Errorf("webhookURLProblem(%s, %s) = %q", c.url, c.forge, got)
		}
	}
}
