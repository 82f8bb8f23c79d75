package main

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

func TestReadModeReportsThroughputAndStatuses(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok" || r.URL.Path != "/api/v1/pipelines/acme/app/builds" {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		hits.Add(1)
		_, _ = io.WriteString(w, "[]")
	}))
	defer srv.Close()
	var out, errb bytes.Buffer
	code := run([]string{"--url", srv.URL, "--token", "tok", "--repo", "acme/app", "--mode", "list", "--concurrency", "4", "--requests", "40"}, &out, &errb)
	if code != 0 || hits.Load() != 40 || !strings.Contains(out.String(), "ok=40") || !strings.Contains(out.String(), "req/s=") {
		t.Fatalf("exit %d, %d hits, output %q %q", code, hits.Load(), out.String(), errb.String())
	}
}

func TestWebhookModeSignsEachDeliveryWithANewID(t *testing.T) {
	seen := map[string]bool{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mac := hmac.New(sha256.New, []byte("s3cret"))
		mac.Write(body)
		if r.Header.Get("X-Hub-Signature-256") != "sha256="+hex.EncodeToString(mac.Sum(nil)) || seen[r.Header.Get("X-GitHub-Delivery")] {
			http.Error(w, "bad", http.StatusUnauthorized)
			return
		}
		seen[r.Header.Get("X-GitHub-Delivery")] = true
		w.WriteHeader(http.StatusCreated)
	}))
	defer srv.Close()
	var out, errb bytes.Buffer
	code := run([]string{"--url", srv.URL, "--repo", "acme/app", "--mode", "webhook", "--webhook-secret", "s3cret", "--repo-id", "7", "--concurrency", "1", "--requests", "5"}, &out, &errb)
	if code != 0 || len(seen) != 5 || !strings.Contains(out.String(), "201×5") {
		t.Fatalf("exit %d, %d deliveries, output %q %q", code, len(seen), out.String(), errb.String())
	}
}

func TestBadFlagsAreRefused(t *testing.T) {
	for _, args := range [][]string{{"--repo", "noslash"}, {"--repo", "a/b", "--mode", "nope"}, {"--repo", "a/b", "--mode", "webhook"}, {"--repo", "a/b", "--duration", "1h"}} {
		var out, errb bytes.Buffer
		if code := run(args, &out, &errb); code != 2 {
			t.Errorf("%v: exit %d, want 2 (%s)", args, code, errb.String())
		}
	}
}
