package main

import (
	"bufio"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kontinuous/kontinuous/pipeline"
)

// sse is an event stream being read in the background.
type sse struct {
	resp   *http.Response
	events chan sseEvent
}

type sseEvent struct {
	name, data string
}

// openStream GETs path with Accept: text/event-stream.
func (w *world) openStream(tok, path string) *sse {
	w.t.Helper()
	req, _ := http.NewRequestWithContext(w.t.Context(), "GET", w.app.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		w.t.Fatal(err)
	}
	s := &sse{resp: resp, events: make(chan sseEvent, 1000)}
	w.t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		return s
	}
	go func() {
		defer close(s.events)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 1<<20)
		var ev sseEvent
		for sc.Scan() {
			l := sc.Text()
			switch {
			case l == "":
				if ev.data != "" || ev.name != "" {
					s.events <- ev
				}
				ev = sseEvent{}
			case strings.HasPrefix(l, "event: "):
				ev.name = l[len("event: "):]
			case strings.HasPrefix(l, "data: "):
				ev.data += l[len("data: "):]
			}
		}
	}()
	return s
}

// waitFor reads events until one satisfies cond.
func (s *sse) waitFor(t *testing.T, what string, cond func(sseEvent) bool) sseEvent {
	t.Helper()
	deadline := time.After(60 * time.Second)
	for {
		select {
		case ev, ok := <-s.events:
			if !ok {
				t.Fatalf("stream ended before %s", what)
			}
			if cond(ev) {
				return ev
			}
		case <-deadline:
			t.Fatalf("no %s within 60s", what)
		}
	}
}

func buildOf(t *testing.T, ev sseEvent) pipeline.Build {
	t.Helper()
	var b pipeline.Build
	if ev.name == "" {
		if err := json.Unmarshal([]byte(ev.data), &b); err != nil {
			t.Fatalf("event data %q: %v", ev.data, err)
		}
	}
	return b
}

func TestBuildListStreamSendsCurrentBuildsThenEveryChange(t *testing.T) {
	w := newWorld(t)
	w.createPipeline()
	spec := specHead + `    stages:
      - name: one
        type: command
        params: {command: ["sh", "-c", "echo hi"]}
`
	_, r := w.push(map[string]string{".pipeline.yml": spec}, "d-1")
	expect(t, r, http.StatusCreated)
	w.waitBuild(1, done)
	dave := token(t, "dave", 1004, "tok-dave")
	s := w.openStream(dave, "/api/v1/pipelines/acme/app/builds?follow=true")
	if s.resp.StatusCode != http.StatusOK || !strings.HasPrefix(s.resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("follow: %d %s", s.resp.StatusCode, s.resp.Header.Get("Content-Type"))
	}
	// The current list first, in the list's JSON.
	first := buildOf(t, s.waitFor(t, "build 1", func(ev sseEvent) bool { return buildOf(t, ev).Number == 1 }))
	if first.Status != pipeline.StatusSuccess {
		t.Fatalf("build 1 in the snapshot: %s", first.Status)
	}
	// Then a new build, through every status to its end.
	_, r = w.push(map[string]string{".pipeline.yml": spec}, "d-2")
	expect(t, r, http.StatusCreated)
	seen := map[pipeline.Status]bool{}
	last := s.waitFor(t, "build 2 finished", func(ev sseEvent) bool {
		b := buildOf(t, ev)
		if b.Number == 2 {
			seen[b.Status] = true
		}
		return b.Number == 2 && b.Status.Done()
	})
	if !seen[pipeline.StatusSuccess] || len(seen) < 2 {
		t.Errorf("statuses seen live: %v", seen)
	}
	// Its event is byte for byte the list's element.
	var list []json.RawMessage
	w.do("GET", "/api/v1/pipelines/acme/app/builds", dave, nil).json(t, &list)
	if len(list) != 2 || string(list[0]) != last.data {
		t.Errorf("list[0] = %s\nevent    = %s", list[0], last.data)
	}
	// A deleted build is announced.
	alice := token(t, "alice", 1001, "tok-alice")
	expect(t, w.do("DELETE", "/api/v1/pipelines/acme/app/builds/1", alice, nil), http.StatusNoContent)
	s.waitFor(t, "delete of build 1", func(ev sseEvent) bool { return ev.name == "delete" && ev.data == `{"number":1}` })

	// One build's stream: the build with its stages.
	one := w.openStream(dave, "/api/v1/pipelines/acme/app/builds/2?follow=true")
	b := buildOf(t, one.waitFor(t, "build 2", func(ev sseEvent) bool { return ev.name == "" }))
	if b.Number != 2 || len(b.Stages) == 0 {
		t.Fatalf("one build's stream sent %+v", b)
	}
	// Strangers and bad input get the usual answers, not a stream.
	bob := token(t, "bob", 1002, "tok-bob")
	for path, want := range map[string]int{
		"/api/v1/pipelines/acme/app/builds?follow=true":         http.StatusNotFound,
		"/api/v1/pipelines/acme/app/builds/2?follow=true":       http.StatusNotFound,
		"/api/v1/pipelines/acme/nope/builds?follow=true":        http.StatusNotFound,
		"/api/v1/pipelines/acme/app/builds/99?follow=true":      http.StatusNotFound,
		"/api/v1/pipelines/acme/app/builds?follow=true&limit=0": http.StatusBadRequest,
		"/api/v1/pipelines/acme/app/builds/0?follow=true":       http.StatusBadRequest,
	} {
		tok := dave
		if strings.Contains(path, "/app/") && !strings.Contains(path, "99") && !strings.Contains(path, "limit") && !strings.Contains(path, "/0?") {
			tok = bob
		}
		if got := w.openStream(tok, path).resp.StatusCode; got != want {
			t.Errorf("GET %s: %d, want %d", path, got, want)
		}
	}
	// Shutdown ends the streams with an end event.
	go func() { _ = w.app.Shutdown(t.Context()) }()
	s.waitFor(t, "end event", func(ev sseEvent) bool { return ev.name == "end" && strings.Contains(ev.data, "shutting down") })
	one.waitFor(t, "end event", func(ev sseEvent) bool { return ev.name == "end" })
}

func TestLiveStreamsAreCappedPerUserAndClosingOneFreesItsSlot(t *testing.T) {
	w := newWorld(t, "--max-streams-per-user", "3", "--max-streams", "5")
	w.createPipeline()
	spec := specHead + `    stages:
      - name: long
        type: command
        params: {command: ["sh", "-c", "echo started; sleep 120"]}
`
	_, r := w.push(map[string]string{".pipeline.yml": spec}, "d-1")
	expect(t, r, http.StatusCreated)
	dave, carol := token(t, "dave", 1004, "tok-dave"), token(t, "carol", 1003, "tok-carol")
	list := "/api/v1/pipelines/acme/app/builds?follow=true"
	var open []*sse
	for i, path := range []string{list, "/api/v1/pipelines/acme/app/builds/1?follow=true", "/api/v1/pipelines/acme/app/builds/1/stages/1/logs?follow=true"} {
		s := w.openStream(dave, path)
		if s.resp.StatusCode != http.StatusOK {
			t.Fatalf("stream %d: %d", i, s.resp.StatusCode)
		}
		open = append(open, s)
	}
	for _, path := range []string{list, "/api/v1/pipelines/acme/app/builds/1/stages/1/logs?follow=true"} {
		s := w.openStream(dave, path)
		if s.resp.StatusCode != http.StatusTooManyRequests || s.resp.Header.Get("Retry-After") == "" {
			t.Fatalf("a 4th stream of one user: %d (Retry-After %q)", s.resp.StatusCode, s.resp.Header.Get("Retry-After"))
		}
		var e struct{ Code int }
		if err := json.NewDecoder(s.resp.Body).Decode(&e); err != nil || e.Code != http.StatusTooManyRequests {
			t.Fatalf("429 body: %v %+v", err, e)
		}
	}
	// Another user has slots of their own, up to the server's total.
	for i := range 2 {
		if s := w.openStream(carol, list); s.resp.StatusCode != http.StatusOK {
			t.Fatalf("carol's stream %d: %d", i, s.resp.StatusCode)
		}
	}
	if s := w.openStream(carol, list); s.resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("a stream beyond the server's total: %d", s.resp.StatusCode)
	}
	// Closing a stream frees its slot.
	open[0].resp.Body.Close()
	deadline := time.Now().Add(60 * time.Second)
	for {
		s := w.openStream(dave, list)
		if s.resp.StatusCode == http.StatusOK {
			break
		}
		s.resp.Body.Close()
		if time.Now().After(deadline) {
			t.Fatalf("the slot of a closed stream was not freed: %d", s.resp.StatusCode)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestStreamLimitSettingsAreChecked(t *testing.T) {
	for _, args := range [][]string{
		{"--max-streams-per-user", "0"},
		{"--max-streams", "x"},
		{"--max-streams-per-user", "50", "--max-streams", "10"},
		{"--log-store", "s3"},
	} {
		_, err := LoadConfig(args, func(string) string { return "" }, nil)
		if err == nil || !strings.Contains(err.Error(), args[len(args)-2]) && !strings.Contains(err.Error(), "--max-streams-per-user") {
			t.Errorf("%v: %v", args, err)
		}
	}
	cfg, err := LoadConfig(nil, func(k string) string {
		return map[string]string{"KONTINUOUS_MAX_STREAMS_PER_USER": "7", "KONTINUOUS_LOG_STORE": "files"}[k]
	}, nil)
	if err != nil || cfg.Cluster.MaxStreamsPerUser != 7 || cfg.Cluster.MaxStreams != 1000 || cfg.Cluster.LogStore != "files" {
		t.Fatalf("%+v %v", cfg.Cluster, err)
	}
}
