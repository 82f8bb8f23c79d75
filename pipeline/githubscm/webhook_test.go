package githubscm_test

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/githubscm"
	"github.com/kontinuous/kontinuous/pipeline/pipelinetest/fakegithub"
)

const whSecret = "webhook-secret-1"

func signed(event string, body []byte) pipeline.WebhookRequest {
	return pipeline.WebhookRequest{Event: event, Delivery: "d-1", Signature: fakegithub.SignPayload(whSecret, body), Body: body}
}

func TestParseWebhookEvents(t *testing.T) {
	s, r := world(t)
	scm := newSCM(t, s)
	sha := r.Commit("main", map[string]string{"a": "1"}, "change")
	tests := []struct {
		name  string
		event string
		body  []byte
		want  pipeline.WebhookEvent
	}{
		{"push to a branch", "push", fakegithub.PushPayload(r, "feature/x", fakegithub.ZeroSHA, sha, "carol"),
			pipeline.WebhookEvent{Kind: "push", Branch: "feature/x", Commit: sha, Author: "carol"}},
		{"branch deletion", "push", fakegithub.PushPayload(r, "old", sha, fakegithub.ZeroSHA, "carol"),
			pipeline.WebhookEvent{Kind: "push", Branch: "old", Commit: fakegithub.ZeroSHA, Author: "carol", Deleted: true}},
		{"tag push", "push", fakegithub.PushPayload(r, "refs/tags/v1.2.0", fakegithub.ZeroSHA, sha, "alice"),
			pipeline.WebhookEvent{Kind: "push", Branch: "v1.2.0", Commit: sha, Author: "alice", Tag: true}},
		{"pull request from the same repository", "pull_request", fakegithub.PullRequestPayload(r, "opened", 3, "feature/x", sha, false),
			pipeline.WebhookEvent{Kind: "pull_request", Action: "opened", Branch: "feature/x", Commit: sha, Author: "alice"}},
		{"pull request from a fork", "pull_request", fakegithub.PullRequestPayload(r, "synchronize", 4, "patch-1", sha, true),
			pipeline.WebhookEvent{Kind: "pull_request", Action: "synchronize", Branch: "patch-1", Commit: sha, Author: fakegithub.ForkOwner, Fork: true}},
		{"ping", "ping", fakegithub.PingPayload(r), pipeline.WebhookEvent{Kind: "ping", Author: "alice"}},
		{"deployment", "deployment", fakegithub.DeploymentPayload(r, sha, "main", "production"),
			pipeline.WebhookEvent{Kind: "deployment", Branch: "main", Commit: sha, Author: "alice"}},
		{"other event", "issues", []byte(`{"action":"opened","repository":{"id":` + strconv.FormatInt(r.ID, 10) + `,"name":"app","owner":{"login":"alice"}},"sender":{"login":"bob"}}`),
			pipeline.WebhookEvent{Kind: "issues", Author: "bob"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := scm.ParseWebhook(signed(tc.event, tc.body), whSecret)
			if err != nil {
				t.Fatal(err)
			}
			tc.want.Delivery, tc.want.RepoID, tc.want.RepoOwner, tc.want.RepoName = "d-1", r.ID, "alice", "app"
			if got != tc.want {
				t.Fatalf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestParseWebhookRejectsBadSignatures(t *testing.T) {
	s, r := world(t)
	scm := newSCM(t, s)
	body := fakegithub.PushPayload(r, "main", "", r.Head("main"), "alice")
	tampered := []byte(strings.Replace(string(body), `"refs/heads/main"`, `"refs/heads/evil"`, 1))
	tests := []struct {
		name   string
		req    pipeline.WebhookRequest
		secret string
	}{
		{"missing signature", pipeline.WebhookRequest{Event: "push", Body: body}, whSecret},
		{"forged signature", pipeline.WebhookRequest{Event: "push", Body: body, Signature: "sha256=" + strings.Repeat("ab", 32)}, whSecret},
		{"wrong secret", pipeline.WebhookRequest{Event: "push", Body: body, Signature: fakegithub.SignPayload("other", body)}, whSecret},
		{"tampered body", pipeline.WebhookRequest{Event: "push", Body: tampered, Signature: fakegithub.SignPayload(whSecret, body)}, whSecret},
		{"sha1 signature only", pipeline.WebhookRequest{Event: "push", Body: body, Signature: "sha1=0123456789abcdef0123456789abcdef01234567"}, whSecret},
		{"not hex", pipeline.WebhookRequest{Event: "push", Body: body, Signature: "sha256=zz"}, whSecret},
		{"no secret configured", pipeline.WebhookRequest{Event: "push", Body: body, Signature: fakegithub.SignPayload("", body)}, ""},
		{"malformed body with bad signature", pipeline.WebhookRequest{Event: "push", Body: []byte("{"), Signature: "sha256=00"}, whSecret},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := scm.ParseWebhook(tc.req, tc.secret)
			if !errors.Is(err, pipeline.ErrUnauthorized) {
				t.Fatalf("err = %v, want ErrUnauthorized", err)
			}
			if strings.Contains(err.Error(), whSecret) {
				t.Fatalf("secret in error: %v", err)
			}
		})
	}
}

func TestParseWebhookRejectsMalformedPayloads(t *testing.T) {
	s, r := world(t)
	scm := newSCM(t, s)
	tests := []struct {
		name, event, body string
	}{
		{"not JSON", "push", "payload=%7B%7D"},
		{"truncated JSON", "push", `{"ref":"refs/heads/main"`},
		{"JSON null", "push", "null"},
		{"wrong types", "push", `{"ref":5,"repository":{"id":1,"name":"a","owner":{"login":"o"}}}`},
		{"push without repository", "push", `{"ref":"refs/heads/main","after":"` + strings.Repeat("a", 40) + `"}`},
		{"push of a note ref", "push", `{"ref":"refs/notes/x","after":"` + strings.Repeat("a", 40) + `","repository":{"id":1,"name":"a","owner":{"login":"o"}}}`},
		{"push without after", "push", `{"ref":"refs/heads/main","repository":{"id":1,"name":"a","owner":{"login":"o"}}}`},
		{"pull request without pull_request", "pull_request", `{"action":"opened","repository":{"id":1,"name":"a","owner":{"login":"o"}}}`},
		{"missing event", "", string(fakegithub.PingPayload(r))},
		{"odd event name", "push\nX-Injected: 1", string(fakegithub.PingPayload(r))},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := scm.ParseWebhook(signed(tc.event, []byte(tc.body)), whSecret)
			if !errors.Is(err, pipeline.ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
		})
	}
}

// TestWebhookDeliveredByGitHubVerifies runs the whole path: the SCM
// installs a webhook, the fake GitHub delivers a signed push to it, and the
// receiving handler verifies and parses it.
func TestWebhookDeliveredByGitHubVerifies(t *testing.T) {
	s, r := world(t)
	scm := newSCM(t, s)
	var mu sync.Mutex
	var got []pipeline.WebhookEvent
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, err := io.ReadAll(req.Body)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		ev, err := scm.ParseWebhook(pipeline.WebhookRequest{Event: req.Header.Get("X-GitHub-Event"),
			Delivery: req.Header.Get("X-GitHub-Delivery"), Signature: req.Header.Get("X-Hub-Signature-256"), Body: body}, whSecret)
		if err != nil {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		mu.Lock()
		got = append(got, ev)
		mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(recv.Close)
	if _, err := scm.CreateWebhook(t.Context(), alice, "alice", "app", pipeline.Hook{URL: recv.URL + "/hook", Secret: whSecret,
		Events: []string{"push"}}); err != nil {
		t.Fatal(err)
	}
	sha := r.Commit("main", map[string]string{"f": "1"}, "c")
	ds, err := s.Deliver(t.Context(), "alice", "app", "push", fakegithub.PushPayload(r, "main", "", sha, "alice"))
	if err != nil || len(ds) != 1 || ds[0].StatusCode != http.StatusAccepted {
		t.Fatalf("deliveries = %+v, %v", ds, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 || got[0].Commit != sha || got[0].Delivery != ds[0].GUID || got[0].RepoID != r.ID {
		t.Fatalf("received %+v", got)
	}
}

// FuzzParseWebhook checks that no body or event name makes ParseWebhook
// panic, that a correctly signed delivery fails only as ErrInvalid, and
// that a badly signed one always fails as ErrUnauthorized.
func FuzzParseWebhook(f *testing.F) {
	for _, seed := range []struct{ event, body string }{
		{"push", `{"ref":"refs/heads/main","after":"` + strings.Repeat("a", 40) + `","repository":{"id":1,"name":"a","owner":{"login":"o"}},"pusher":{"name":"p"}}`},
		{"pull_request", `{"action":"opened","pull_request":{"head":{"ref":"x","sha":"` + strings.Repeat("b", 40) + `","repo":null},"base":{"repo":{"id":1}}},"repository":{"id":1,"name":"a","owner":{"login":"o"}}}`},
		{"ping", `{"zen":"z"}`},
		{"deployment", `{"deployment":{"sha":"` + strings.Repeat("c", 40) + `","ref":"main"},"repository":{"id":1,"name":"a","owner":{"login":"o"}}}`},
		{"issues", `{}`},
		{"push", `[]`},
	} {
		f.Add(seed.event, []byte(seed.body))
	}
	scm, err := githubscm.New(githubscm.Config{})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, event string, body []byte) {
		req := pipeline.WebhookRequest{Event: event, Delivery: "d", Signature: fakegithub.SignPayload(whSecret, body), Body: body}
		ev, err := scm.ParseWebhook(req, whSecret)
		switch {
		case err == nil:
			if ev.Kind != event || ev.Delivery != "d" {
				t.Fatalf("event %+v for %q", ev, event)
			}
			if (event == "push" || event == "pull_request" || event == "deployment") && (ev.RepoID == 0 || ev.RepoName == "" || ev.RepoOwner == "") {
				t.Fatalf("%s accepted without a repository: %+v", event, ev)
			}
		case !errors.Is(err, pipeline.ErrInvalid):
			t.Fatalf("signed delivery failed with %v, want ErrInvalid", err)
		}
		req.Signature = fakegithub.SignPayload("other", body)
		if _, err := scm.ParseWebhook(req, whSecret); !errors.Is(err, pipeline.ErrUnauthorized) {
			t.Fatalf("badly signed delivery: %v", err)
		}
	})
}
