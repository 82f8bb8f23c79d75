package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kontinuous/kontinuous/pipeline"
)

// followLines opens a stage log's event stream on base and collects its
// data lines until the stream ends.
func followLines(t *testing.T, base, tok string, n, stage int) <-chan []string {
	t.Helper()
	out := make(chan []string, 1)
	req, _ := http.NewRequestWithContext(t.Context(), "GET", fmt.Sprintf("%s/api/v1/pipelines/acme/app/builds/%d/stages/%d/logs?follow=true", base, n, stage), nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("follow on %s: %d", base, resp.StatusCode)
	}
	go func() {
		defer resp.Body.Close()
		var lines []string
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if l, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				lines = append(lines, l)
			}
			if sc.Text() == "event: end" {
				break
			}
		}
		out <- lines
	}()
	return out
}

func TestStageLogIsFollowedLiveFromTheOtherServerAndOutlivesTheOneThatRanIt(t *testing.T) {
	_, gh, apps := clusterServers(t)
	bases := []string{apps[0].URL, apps[1].URL}
	rc := newRetryClient()
	createAppPipeline(t, rc, bases[0])
	// The stage says where its workspace is (under the data dir of the
	// server running it), then prints while followers watch.
	spec := specHead + `    stages:
      - name: talk
        type: command
        params: {command: ["sh", "-c", "echo ws=$(pwd); for i in $(seq 1 40); do echo line $i; sleep 0.05; done"]}
`
	repo := gh.Repo("acme", "app")
	sha := repo.Commit("main", map[string]string{".pipeline.yml": spec}, "spec")
	if status, body := deliverPush(rc, bases[0], repo, gh.Hooks("acme", "app")[0].Secret, "d-1", sha); status != http.StatusCreated {
		t.Fatalf("delivery: %d %s", status, body)
	}
	dave := tbToken(t, "dave", 1004, "tok-dave")
	// Followers on both servers, as soon as the stage runs.
	waitFor(t, rc, bases, dave, 1, 60*time.Second, func(b pipeline.Build) bool {
		return len(b.Stages) > 0 && b.Stages[0].Status != pipeline.StatusPending
	})
	got := []<-chan []string{followLines(t, bases[0], dave, 1, 1), followLines(t, bases[1], dave, 1, 1)}
	var lines [2][]string
	for i, ch := range got {
		select {
		case lines[i] = <-ch:
		case <-time.After(90 * time.Second):
			t.Fatalf("the stream on server %d did not end", i)
		}
	}
	if strings.Join(lines[0], "\n") != strings.Join(lines[1], "\n") {
		t.Fatalf("the two servers streamed different lines:\nA: %q\nB: %q", lines[0], lines[1])
	}
	if joined := strings.Join(lines[0], "\n"); !strings.Contains(joined, "\nline 1\n") || !strings.Contains(joined, "\nline 40\n") {
		t.Fatalf("streamed %d lines: %q", len(lines[0]), lines[0])
	}
	// Which server ran it: the workspace lies in its data dir.
	var ws string
	for _, l := range lines[0] {
		if v, ok := strings.CutPrefix(l, "ws="); ok {
			ws = v
		}
	}
	runner := -1
	for i, a := range apps {
		if ws != "" && strings.HasPrefix(ws, a.cfg.DataDir) {
			runner = i
		}
	}
	if runner < 0 {
		t.Fatalf("workspace %q is in neither server's data dir", ws)
	}
	other := 1 - runner
	b := waitFor(t, rc, bases, dave, 1, 60*time.Second, func(b pipeline.Build) bool { return b.Status.Done() })
	if b.Status != pipeline.StatusSuccess {
		t.Fatalf("build %s %q", b.Status, b.Message)
	}
	want, _ := rc.do(http.MethodGet, fmt.Sprintf("%s/api/v1/pipelines/acme/app/builds/1/stages/1/logs", bases[runner]), dave, nil, map[string]string{"Accept": "text/plain"})
	if want != http.StatusOK {
		t.Fatalf("log on the runner: %d", want)
	}
	// The server that ran the stage goes away; the other serves the log.
	if err := apps[runner].Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	status, body := rc.do(http.MethodGet, fmt.Sprintf("%s/api/v1/pipelines/acme/app/builds/1/stages/1/logs", bases[other]), dave, nil, map[string]string{"Accept": "text/plain"})
	if status != http.StatusOK {
		t.Fatalf("log on the other server: %d %s", status, body)
	}
	if got := strings.TrimSuffix(string(body), "\n"); got != strings.Join(lines[other], "\n") {
		t.Fatalf("after the runner left, the other server serves:\n%s\nwant the streamed lines:\n%s", body, strings.Join(lines[other], "\n"))
	}
}
