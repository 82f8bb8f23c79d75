package notify

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kontinuous/kontinuous/pipeline"
)

const patience = 20 * time.Second

func TestSlackPostsTheMessageAsJSONAndNeverNamesTheURLInErrors(t *testing.T) {
	got := make(chan map[string]string, 2)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m map[string]string
		if r.Header.Get("Content-Type") != "application/json" || json.NewDecoder(r.Body).Decode(&m) != nil {
			w.WriteHeader(http.StatusBadRequest)
		}
		got <- m
		if r.URL.Path == "/refuse/secret-path" {
			w.WriteHeader(http.StatusForbidden)
		}
	}))
	defer srv.Close()
	n := New(Config{Client: Client(true)})
	if err := n.Slack(t.Context(), srv.URL+"/hook/secret-path", pipeline.SlackMessage{Text: "Build 1 ended", Channel: "#ci", Username: "kontinuous"}); err != nil {
		t.Fatal(err)
	}
	if m := <-got; len(m) != 3 || m["text"] != "Build 1 ended" || m["channel"] != "#ci" || m["username"] != "kontinuous" {
		t.Fatalf("payload %v", m)
	}
	// Empty channel and username are left out: the webhook's own apply.
	err := n.Slack(t.Context(), srv.URL+"/refuse/secret-path", pipeline.SlackMessage{Text: "x"})
	if m := <-got; len(m) != 1 || m["text"] != "x" {
		t.Fatalf("payload %v", m)
	}
	if err == nil || !strings.Contains(err.Error(), "403") || strings.Contains(err.Error(), "secret-path") {
		t.Fatalf("refused: %v", err)
	}
	// The default client refuses plain HTTP to loopback, without the URL.
	strict := New(Config{})
	err = strict.Slack(t.Context(), srv.URL+"/hook/secret-path", pipeline.SlackMessage{Text: "x"})
	if err == nil || strings.Contains(err.Error(), "secret-path") {
		t.Fatalf("strict: %v", err)
	}
	select {
	case m := <-got:
		t.Fatalf("the strict notifier reached the server: %v", m)
	default:
	}
	if err := n.Slack(t.Context(), "::not a url", pipeline.SlackMessage{}); err == nil || strings.Contains(err.Error(), "not a url") {
		t.Fatalf("bad url: %v", err)
	}
}

func TestSlackRefusesAPublicHTTPSRedirectToAPrivateAddress(t *testing.T) {
	hit := make(chan string, 1)
	inner := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hit <- r.URL.Path }))
	defer inner.Close()
	redirect := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, inner.URL+"/metadata", http.StatusTemporaryRedirect)
	}))
	defer redirect.Close()
	n := New(Config{Client: Client(true)})
	if err := n.Slack(t.Context(), redirect.URL+"/hook", pipeline.SlackMessage{Text: "x"}); err == nil {
		t.Fatal("a redirect was taken as delivered")
	}
	select {
	case p := <-hit:
		t.Fatalf("the redirect was followed to %s", p)
	default:
	}
}

// Statuses of one build are posted in the order queued, a failing one is
// retried until it succeeds, and builds do not wait on each other.
func TestCommitStatusesKeepTheirOrderPerBuildAndAreRetried(t *testing.T) {
	n := New(Config{Retry: time.Millisecond, Idle: 50 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	var posted []string
	failures := 2
	post := func(name string) func(context.Context) error {
		return func(context.Context) error {
			mu.Lock()
			defer mu.Unlock()
			if name == "b1-2" && failures > 0 {
				failures--
				return errors.New("forge down")
			}
			posted = append(posted, name)
			return nil
		}
	}
	block := make(chan struct{})
	n.CommitStatus(ctx, "acme/app#2", func(ctx context.Context) error { <-block; return nil })
	for _, s := range []string{"b1-1", "b1-2", "b1-3"} {
		n.CommitStatus(ctx, "acme/app#1", post(s))
	}
	deadline := time.Now().Add(patience)
	for {
		mu.Lock()
		got := strings.Join(posted, ",")
		mu.Unlock()
		if got == "b1-1,b1-2,b1-3" {
			break
		}
		if time.Now().After(deadline) || len(got) > len("b1-1,b1-2,b1-3") {
			t.Fatalf("posted %q", got)
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(block)
	cancel()
	wctx, wcancel := context.WithTimeout(context.Background(), patience)
	defer wcancel()
	if err := n.Wait(wctx); err != nil {
		t.Fatalf("the queues did not stop with their context: %v", err)
	}
}

// A status that keeps failing is tried 5 times, then dropped; the queue
// goes on with the next.
func TestCommitStatusGivesUpAfterFiveTries(t *testing.T) {
	n := New(Config{Retry: time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	tries := 0
	next := make(chan struct{})
	n.CommitStatus(ctx, "b", func(context.Context) error { mu.Lock(); tries++; mu.Unlock(); return errors.New("no") })
	n.CommitStatus(ctx, "b", func(context.Context) error { close(next); return nil })
	select {
	case <-next:
	case <-time.After(patience):
		t.Fatal("the next status was never posted")
	}
	mu.Lock()
	defer mu.Unlock()
	if tries != 5 {
		t.Fatalf("tries = %d, want 5", tries)
	}
}
