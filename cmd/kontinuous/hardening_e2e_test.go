package main

import (
	"context"
	"encoding/base64"
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
