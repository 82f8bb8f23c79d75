package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/kontinuous/kontinuous/pipeline"
)

// Finding 4: a secret one stage was given and left in the workspace is
// masked in the log of a later stage that was given no secret — as JSON,
// as text and as a live stream — for a user who can only read.
func TestSecretLeftInTheWorkspaceIsMaskedInEveryStagesLog(t *testing.T) {
	w := newWorld(t)
	w.createPipeline()
	alice := token(t, "alice", 1001, "tok-alice")
	dave := token(t, "dave", 1004, "tok-dave") // read access only
	const value = "cr0ss-stage-s3cret"
	expect(t, w.do("PUT", "/api/v1/pipelines/acme/app/secrets/deploy-creds", alice,
		map[string]any{"data": map[string]string{"API_TOKEN": value}}), http.StatusOK)
	spec := specHead + `    stages:
      - name: keep
        type: command
        secrets: [deploy-creds]
        params: {command: ["sh", "-c", "echo \"$API_TOKEN\" > leaked.txt"]}
      - name: show
        type: command
        params: {command: ["sh", "-c", "echo secrets=[$API_TOKEN]; echo file=$(cat leaked.txt)"]}
`
	_, r := w.push(map[string]string{".pipeline.yml": spec}, "d-mask")
	expect(t, r, http.StatusCreated)
	b := w.waitBuild(1, done)
	if b.Status != pipeline.StatusSuccess {
		t.Fatalf("build %s %q", b.Status, b.Message)
	}
	if len(b.Stages) != 2 || len(b.Stages[1].Secrets) != 0 {
		t.Fatalf("stage 2 was meant to have no secrets: %+v", b.Stages)
	}

	base := "/api/v1/pipelines/acme/app/builds/1/stages/2/logs"
	text := w.do("GET", base, dave, nil, "Accept", "text/plain")
	expect(t, text, http.StatusOK)
	asJSON := w.do("GET", base, dave, nil)
	expect(t, asJSON, http.StatusOK)
	var files []struct{ Filename, Content string }
	asJSON.json(t, &files)
	if len(files) != 1 {
		t.Fatalf("logs = %s", asJSON.body)
	}
	content, err := base64.StdEncoding.DecodeString(files[0].Content)
	if err != nil {
		t.Fatalf("log content is not base64: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), patience)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", w.app.URL+base+"?follow=true", nil)
	req.Header.Set("Authorization", "Bearer "+dave)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	sse, err := io.ReadAll(resp.Body) // the stage ended: the stream ends after its log
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("stream: %d %v", resp.StatusCode, err)
	}
	for name, log := range map[string]string{"text": string(text.body), "json": string(content), "stream": string(sse)} {
		if strings.Contains(log, value) {
			t.Errorf("%s: stage 2's log shows the secret:\n%s", name, log)
		}
		if !strings.Contains(log, "secrets=[]") || !strings.Contains(log, "file="+pipeline.Mask) {
			t.Errorf("%s: stage 2's log lacks the masked line:\n%s", name, log)
		}
	}
}

// bigSpec returns a spec of n stages, each with a var of size bytes:
// the same value in every stage (a template var) when shared, else a
// different value per stage.
func bigSpec(n, size int, shared bool) string {
	var b strings.Builder
	b.WriteString(specHead)
	if shared {
		fmt.Fprintf(&b, "    vars:\n      BIG: %s\n", strings.Repeat("v", size))
	}
	b.WriteString("    stages:\n")
	for i := range n {
		fmt.Fprintf(&b, "      - name: s%d\n        type: command\n        params: {command: [\"true\"]}\n", i)
		if !shared {
			fmt.Fprintf(&b, "        vars: {BIG: %s}\n", strings.Repeat(string(rune('a'+i)), size))
		}
	}
	return b.String()
}

// Finding 6: a build whose record is too large for etcd fails at once
// saying so, and holds no worker; vars every stage shares count once.
func TestBuildTooLargeToRecordFailsAtOnceAndVarsAreKeptOncePerBuild(t *testing.T) {
	w := newWorld(t)
	w.createPipeline()
	// Four builds that cannot be recorded — as many as the workers — of
	// both kinds: over etcd's request limit (1.5 MiB; the spec is stored
	// with the build), and over the gRPC client's message limit (2 MiB).
	tooLarge := []string{bigSpec(8, 100_000, false), bigSpec(9, 110_000, false), bigSpec(8, 100_000, false) + "#2\n", bigSpec(9, 110_000, false) + "#2\n"}
	for i, spec := range tooLarge {
		_, r := w.push(map[string]string{".pipeline.yml": spec}, fmt.Sprintf("d-big-%d", i))
		expect(t, r, http.StatusCreated)
	}
	// A 100 KB var shared by 20 stages is kept once: the build runs.
	_, r := w.push(map[string]string{".pipeline.yml": bigSpec(20, 100_000, true)}, "d-shared")
	expect(t, r, http.StatusCreated)
	_, r = w.push(map[string]string{".pipeline.yml": specHead + "    stages:\n      - {name: quick, type: command, params: {command: [\"true\"]}}\n"}, "d-normal")
	expect(t, r, http.StatusCreated)

	for n := 1; n <= len(tooLarge); n++ {
		b := w.waitBuild(n, done)
		if b.Status != pipeline.StatusFail || b.Message != pipeline.BuildTooLargeMessage {
			t.Errorf("build %d: %s %q, want FAIL saying it is too large", n, b.Status, b.Message)
		}
	}
	shared := w.waitBuild(5, done)
	if shared.Status != pipeline.StatusSuccess || len(shared.Stages) != 20 {
		t.Fatalf("shared-var build: %s %q (%d stages)", shared.Status, shared.Message, len(shared.Stages))
	}
	// The API still shows each stage's vars.
	for _, st := range shared.Stages {
		if len(st.Vars["BIG"]) != 100_000 {
			t.Fatalf("stage %d shows BIG of %d bytes", st.Index, len(st.Vars["BIG"]))
		}
	}
	if b := w.waitBuild(6, done); b.Status != pipeline.StatusSuccess {
		t.Fatalf("a normal build after them: %s %q", b.Status, b.Message)
	}
}

// Finding 12: after the repository is deleted and re-created under the
// same name (a new id, a new admin), nobody reaches the old pipeline, its
// secrets or builds through the name; the new admin is only shown that it
// is orphaned, and may delete it to free the name.
func TestRecreatedRepositoryGivesNoAccessToTheOldPipeline(t *testing.T) {
	w := newWorld(t)
	p := w.createPipeline()
	alice := token(t, "alice", 1001, "tok-alice")
	expect(t, w.do("PUT", "/api/v1/pipelines/acme/app/secrets/creds", alice, map[string]any{"data": map[string]string{"API_TOKEN": "old-pipeline-s3cret"}}), http.StatusOK)
	_, r := w.push(map[string]string{".pipeline.yml": specHead + "    stages:\n      - {name: quick, type: command, params: {command: [\"true\"]}}\n"}, "d-old")
	expect(t, r, http.StatusCreated)
	w.waitBuild(1, done)

	w.gh.DeleteRepo("acme", "app")
	w.gh.AddUser("mallory", 1005, "tok-mallory")
	w.gh.AddRepo("acme", "app")
	w.gh.Grant("mallory", "acme", "app", "admin")
	w.gh.Grant("carol", "acme", "app", "push")
	mallory := token(t, "mallory", 1005, "tok-mallory")
	carol := token(t, "carol", 1003, "tok-carol")

	for _, c := range []struct{ method, path, tok string }{
		{"GET", "/api/v1/pipelines/acme/app/secrets", mallory},
		{"GET", "/api/v1/pipelines/acme/app/secrets/creds", mallory},
		{"PUT", "/api/v1/pipelines/acme/app/secrets/creds", mallory},
		{"GET", "/api/v1/pipelines/acme/app/builds", mallory},
		{"GET", "/api/v1/pipelines/acme/app/builds/1", mallory},
		{"GET", "/api/v1/pipelines/acme/app/builds/1/stages/1/logs", mallory},
		{"POST", "/api/v1/pipelines/acme/app/builds", mallory},
		{"GET", "/api/v1/pipelines/acme/app", carol},
		{"GET", "/api/v1/pipelines/acme/app/builds", carol},
		{"POST", "/api/v1/pipelines/acme/app/builds", carol},
	} {
		var body any
		if c.method != "GET" {
			body = map[string]any{"data": map[string]string{"X": "y"}, "branch": "main"}
		}
		r := w.do(c.method, c.path, c.tok, body, "X-Custom-Event", "dashboard")
		expect(t, r, http.StatusNotFound)
		if strings.Contains(string(r.body), "s3cret") {
			t.Fatalf("%s %s shows the secret", c.method, c.path)
		}
	}
	// The new admin is shown that the name is taken by an orphan, and
	// nothing stored with it.
	r = w.do("GET", "/api/v1/pipelines/acme/app", mallory, nil)
	expect(t, r, http.StatusOK)
	var got map[string]any
	r.json(t, &got)
	if got["orphaned"] != true || got["id"] != p.ID || len(got["secrets"].([]any)) != 0 || got["latest_build"] != nil {
		t.Fatalf("orphan shown to the new admin as %s", r.body)
	}
	r = w.do("GET", "/api/v1/pipelines", mallory, nil)
	expect(t, r, http.StatusOK)
	if !strings.Contains(string(r.body), `"orphaned":true`) {
		t.Fatalf("pipelines list for the new admin: %s", r.body)
	}
	r = w.do("POST", "/api/v1/pipelines", mallory, map[string]any{"owner": "acme", "repo": "app", "events": []string{"push"}})
	expect(t, r, http.StatusConflict)
	if !strings.Contains(string(r.body), "orphaned") {
		t.Fatalf("create over an orphan: %s", r.body)
	}
	// Deleting it frees the name; the new pipeline has none of the old data.
	expect(t, w.do("DELETE", "/api/v1/pipelines/acme/app", mallory, nil), http.StatusNoContent)
	r = w.do("POST", "/api/v1/pipelines", mallory, map[string]any{"owner": "acme", "repo": "app", "events": []string{"push"}})
	expect(t, r, http.StatusCreated)
	r = w.do("GET", "/api/v1/pipelines/acme/app/secrets", mallory, nil)
	expect(t, r, http.StatusOK)
	if strings.Contains(string(r.body), "creds") {
		t.Fatalf("new pipeline inherited old secrets: %s", r.body)
	}
}
