package main

import (
	"bufio"
	"net/http"
	"strings"
	"testing"
	"time"
)

// A client following a log must not hold up a graceful shutdown: its
// stream ends with an event saying so, and the server stops cleanly.
func TestShutdownEndsFollowedLogStreams(t *testing.T) {
	w := newWorld(t)
	w.createPipeline()
	spec := specHead + `    stages:
      - name: long
        type: command
        params: {command: ["sh", "-c", "echo started; sleep 120"]}
`
	_, r := w.push(map[string]string{".pipeline.yml": spec}, "d-1")
	expect(t, r, http.StatusCreated)
	resp := w.follow(token(t, "dave", 1004, "tok-dave"), 1, 1)
	defer resp.Body.Close()
	lines := make(chan string, 100)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	deadline := time.After(patience)
	for started := false; !started; {
		select {
		case l := <-lines:
			started = l == "data: started"
		case <-deadline:
			t.Fatal("the stage's first line never arrived")
		}
	}
	stopped := make(chan error, 1)
	go func() { stopped <- w.app.Shutdown(t.Context()) }()
	var rest []string
	for l := range lines {
		rest = append(rest, l)
	}
	if got := strings.Join(rest, "\n"); !strings.Contains(got, "event: end\ndata: server shutting down") {
		t.Fatalf("stream ended without saying the server is shutting down:\n%s", got)
	}
	if err := <-stopped; err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	w.app = nil
	// The data dir is reusable at once: etcd was closed cleanly.
	w.start()
	expect(t, w.do("GET", "/readyz", "", nil), http.StatusOK)
}
