package main

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kontinuous/kontinuous/api"
	"github.com/kontinuous/kontinuous/pipeline/pipelinetest/fakegithub"
)

// rawPost sends a request line and headers announcing contentLength bytes
// of body, sends none of them, and returns the server's answer: a server
// that reads the body first never answers (the test's 60 s bound fails
// it).
func rawPost(t *testing.T, w *world, path string, contentLength int, hdr ...string) *http.Response {
	t.Helper()
	conn, err := net.Dial("tcp", w.app.Addr.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	var b strings.Builder
	fmt.Fprintf(&b, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n", path, contentLength)
	for i := 0; i+1 < len(hdr); i += 2 {
		fmt.Fprintf(&b, "%s: %s\r\n", hdr[i], hdr[i+1])
	}
	b.WriteString("\r\n")
	if _, err := conn.Write([]byte(b.String())); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(60 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer before the body was sent: %v", err)
	}
	return resp
}

// Finding 1: a delivery's body is read only once the pipeline and the
// signature header's shape are known.
func TestWebhookIsAnsweredBeforeItsBodyIsRead(t *testing.T) {
	w := newWorld(t)
	w.createPipeline()
	sig := "sha256=" + strings.Repeat("ab", 32)
	cases := []struct {
		name, path string
		hdr        []string
		want       int
	}{
		{"absent pipeline", "/api/v1/pipelines/acme/nothing-here/builds",
			[]string{"X-GitHub-Event", "push", "X-GitHub-Delivery", "d1", "X-Hub-Signature-256", sig}, http.StatusUnauthorized},
		{"malformed signature", "/api/v1/pipelines/acme/app/builds",
			[]string{"X-GitHub-Event", "push", "X-GitHub-Delivery", "d2", "X-Hub-Signature-256", "sha1=abc"}, http.StatusUnauthorized},
		{"no delivery id", "/api/v1/pipelines/acme/app/builds",
			[]string{"X-GitHub-Event", "push", "X-Hub-Signature-256", sig}, http.StatusBadRequest},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp := rawPost(t, w, c.path, 20<<20, c.hdr...)
			resp.Body.Close()
			if resp.StatusCode != c.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, c.want)
			}
		})
	}
}

// Finding 1: a client that stops sending its body is cut off.
func TestStalledWebhookBodyIsCutOff(t *testing.T) {
	old := api.BodyIdleTimeout
	api.BodyIdleTimeout = 300 * time.Millisecond
	t.Cleanup(func() { api.BodyIdleTimeout = old }) // after the server's own cleanup
	w := newWorld(t)
	w.createPipeline()
	conn, err := net.Dial("tcp", w.app.Addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /api/v1/pipelines/acme/app/builds HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n"+
		"X-GitHub-Event: push\r\nX-GitHub-Delivery: stall\r\nX-Hub-Signature-256: sha256=%s\r\n\r\n{\"ref\":", strings.Repeat("00", 32))
	_ = conn.SetReadDeadline(time.Now().Add(60 * time.Second))
	// The server answers (400: the body never came) or closes; either way
	// the read ends long before the 60 s bound.
	buf := make([]byte, 512)
	for {
		_, err := conn.Read(buf)
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatal("the stalled connection was still held after 60 s")
			}
			return
		}
	}
}

// Finding 7: anonymous callers get the same answer whether or not a
// private pipeline or build exists.
func TestAnonymousAnswersDoNotRevealPrivatePipelines(t *testing.T) {
	w := newWorld(t)
	w.createPipeline()
	_, r := w.push(map[string]string{".pipeline.yml": specHead + "    stages:\n      - name: a\n        type: command\n        params: {command: [\"true\"]}\n"}, "oracle-1")
	expect(t, r, http.StatusCreated)
	body := []byte(`{"ref":"refs/heads/main"}`)
	sig := fakegithub.SignPayload("not-the-secret", body)
	probes := []struct {
		name         string
		method, path string
		body         any
		hdr          []string
	}{
		{"forged delivery", "POST", "/builds", body, []string{"X-GitHub-Event", "push", "X-GitHub-Delivery", "x", "X-Hub-Signature-256", sig}},
		{"unsigned delivery", "POST", "/builds", body, []string{"X-GitHub-Event", "push", "X-GitHub-Delivery", "x"}},
		{"manual trigger", "POST", "/builds", `{"author":"x"}`, []string{"X-Custom-Event", "cli"}},
		{"list builds", "GET", "/builds", nil, nil},
		{"get build", "GET", "/builds/1", nil, nil},
		{"agent update", "POST", "/builds/1/stages/1", `{"status":"RUNNING"}`, []string{"Authorization", "Bearer forged"}},
		{"approve", "POST", "/builds/1/stages/1?continue=yes", nil, nil},
		{"logs", "GET", "/builds/1/stages/1/logs", nil, nil},
	}
	for _, p := range probes {
		t.Run(p.name, func(t *testing.T) {
			exists := w.do(p.method, "/api/v1/pipelines/acme/app"+p.path, "", p.body, p.hdr...)
			absent := w.do(p.method, "/api/v1/pipelines/acme/absent"+p.path, "", p.body, p.hdr...)
			if exists.status != absent.status || string(exists.body) != string(absent.body) {
				t.Fatalf("existing pipeline: %d %s; absent: %d %s", exists.status, exists.body, absent.status, absent.body)
			}
			if exists.status < 400 {
				t.Fatalf("anonymous %s answered %d", p.name, exists.status)
			}
			if p.method == "POST" && strings.Contains(p.path, "stages") {
				// The same for an absent build of an existing pipeline.
				other := w.do(p.method, "/api/v1/pipelines/acme/app"+strings.Replace(p.path, "/builds/1/", "/builds/99/", 1), "", p.body, p.hdr...)
				if other.status != exists.status || string(other.body) != string(exists.body) {
					t.Fatalf("existing build: %d %s; absent build: %d %s", exists.status, exists.body, other.status, other.body)
				}
			}
		})
	}
}
