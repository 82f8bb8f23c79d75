package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kontinuous/kontinuous/pipeline"
)

// TestDemoRunsABuildToSuccessAndItsInstructionsWork runs the demo as a
// newcomer would, then follows what it printed: the URL and the token
// must show build 1 SUCCESS, and the badge must say passing.
func TestDemoRunsABuildToSuccessAndItsInstructionsWork(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	stderr := &lockedWriter{w: &strings.Builder{}}
	// The README's first command may already serve on the demo's default
	// port: the demo then takes a free one. Hold that port to see it.
	if l, err := net.Listen("tcp", defaultListen); err == nil {
		defer l.Close()
	}
	codes := make(chan int, 1)
	go func() {
		codes <- run(ctx, nil, pw, stderr)
		pw.Close()
	}()
	var url, tok string
	var out strings.Builder
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	timeout := time.After(10 * time.Minute)
	for url == "" || tok == "" || !strings.Contains(out.String(), "Ctrl-C") {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("the demo ended early (exit %d):\n%s\nstderr:\n%s", <-codes, out.String(), stderr.String())
			}
			out.WriteString(l + "\n")
			if u, ok := strings.CutPrefix(l, "Kontinuous is running at "); ok {
				url = strings.Fields(u)[0]
			}
			if v, ok := strings.CutPrefix(strings.TrimSpace(l), "export TOKEN="); ok {
				tok = v
			}
		case <-timeout:
			t.Fatalf("the demo printed no instructions within 10 minutes:\n%s\nstderr:\n%s", out.String(), stderr.String())
		}
	}
	go func() {
		for range lines { // drain
		}
	}()
	if !strings.Contains(stderr.String(), defaultListen+" is taken") || strings.Contains(url, ":3005") {
		t.Errorf("with %s taken the demo serves at %s; stderr:\n%s", defaultListen, url, stderr.String())
	}
	for _, want := range []string{"Build 1 of demo/hello: SUCCESS", "You are newcomer", "Hello from Kontinuous on main"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	req, _ := http.NewRequest("GET", url+"/api/v1/pipelines/demo/hello/builds/1", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var b pipeline.Build
	err = json.NewDecoder(resp.Body).Decode(&b)
	resp.Body.Close()
	if err != nil || b.Status != pipeline.StatusSuccess || len(b.Stages) != 2 {
		t.Fatalf("with the printed token: %v %+v", err, b)
	}
	resp, err = http.Get(url + "/api/v1/pipelines/demo/hello/badge.svg")
	if err != nil {
		t.Fatal(err)
	}
	svg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(svg), ">passing<") {
		t.Fatalf("badge: %s", svg)
	}
	cancel() // Ctrl-C
	select {
	case code := <-codes:
		if code != 0 {
			t.Fatalf("exit %d after Ctrl-C; stderr:\n%s", code, stderr.String())
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("the demo did not stop within 2 minutes of Ctrl-C")
	}
	if _, err := http.Get(url + "/healthz"); err == nil {
		t.Fatal("the server still answers after the demo stopped")
	}
}

// lockedWriter serialises writes from the demo's goroutines.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (l *lockedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.(fmt.Stringer).String()
}
