package github_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-github/v60/github"

	"github.com/kontinuous/kontinuous/pipeline"
	githubscm "github.com/kontinuous/kontinuous/pipeline/forge/github"
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
// that a badly signed one always fails as ErrUnauthorized. It also holds
// ParseWebhook to oracleParse, the go-github based decoding it replaced:
// see checkAgainstOracle.
func FuzzParseWebhook(f *testing.F) {
	sha := strings.Repeat("a", 40)
	repo := `"repository":{"id":1,"name":"a","owner":{"login":"o"}}`
	for _, seed := range []struct{ event, body string }{
		{"push", `{"ref":"refs/heads/main","after":"` + sha + `",` + repo + `,"pusher":{"name":"p"}}`},
		{"pull_request", `{"action":"opened","pull_request":{"head":{"ref":"x","sha":"` + strings.Repeat("b", 40) + `","repo":null},"base":{"repo":{"id":1}}},` + repo + `}`},
		{"ping", `{"zen":"z"}`},
		{"deployment", `{"deployment":{"sha":"` + strings.Repeat("c", 40) + `","ref":"main"},` + repo + `}`},
		{"issues", `{}`},
		{"push", `[]`},
		// A null after a value resets a field, as in go-github's types.
		{"push", `{"ref":"refs/heads/main","after":"` + sha + `",` + repo + `,"pusher":{"name":"p"},"pusher":null,"ref":null}`},
		{"pull_request", `{"pull_request":{"head":{"sha":"` + sha + `","repo":{"id":1}}},"pull_request":{"head":{"repo":null}},` + repo + `}`},
		// Keys match case-insensitively; pusher's login is "username".
		{"push", `{"REF":"refs/tags/v1","After":"` + sha + `",` + repo + `,"pusher":{"username":"u"},"Deleted":true}`},
		// Wrong types: in a field the service reads, and in one it does not.
		{"push", `{"ref":"refs/heads/main","after":"` + sha + `",` + repo + `,"pusher":{"name":5}}`},
		{"push", `{"ref":"refs/heads/main","after":"` + sha + `",` + repo + `,"size":"x"}`},
		{"deployment", `{"deployment":{"sha":"` + sha + `","id":"x","creator":{"login":"c"}},` + repo + `}`},
		{"pull_request", `{"pull_request":{"head":{"sha":"` + sha + `"}},"repository":{"id":"1"}}`},
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
		checkAgainstOracle(t, event, body, ev, err)
		req.Signature = fakegithub.SignPayload("other", body)
		if _, err := scm.ParseWebhook(req, whSecret); !errors.Is(err, pipeline.ErrUnauthorized) {
			t.Fatalf("badly signed delivery: %v", err)
		}
	})
}

// checkAgainstOracle holds ParseWebhook's result for a correctly signed
// delivery (ev, err, with Delivery "d") to the go-github based decoding:
// the same event, or the same error. The one difference allowed: go-github
// decodes every field, so it refuses a wrong type in a field the service
// does not read, which ParseWebhook no longer decodes. Then the oracle
// ignores type errors (encoding/json decodes the rest) and must give the
// same event or error as ParseWebhook.
func checkAgainstOracle(t *testing.T, event string, body []byte, ev pipeline.WebhookEvent, err error) {
	t.Helper()
	want, wantErr := oracleParse(event, body, false)
	if wantErr != nil && refusedByGoGitHub(wantErr) && (err == nil || err.Error() != wantErr.Error()) {
		lenient, lerr := oracleParse(event, body, true)
		if lerr != nil && refusedByGoGitHub(lerr) {
			// Not a plain type error (a malformed timestamp, say): encoding/json
			// stops at it, so the oracle has no result to compare.
			return
		}
		t.Logf("go-github refuses it for a wrong type: %v", wantErr)
		want, wantErr = lenient, lerr
	}
	if wantErr == nil {
		want.Delivery = "d"
	}
	switch {
	case wantErr == nil && err == nil:
		if ev != want {
			t.Fatalf("event\n got  %+v\n want %+v (go-github)", ev, want)
		}
	case wantErr == nil:
		t.Fatalf("refused %v; go-github accepts it as %+v", err, want)
	case err == nil:
		t.Fatalf("accepted as %+v; go-github refuses it: %v", ev, wantErr)
	case err.Error() != wantErr.Error() || !errors.Is(err, pipeline.ErrInvalid) || !errors.Is(wantErr, pipeline.ErrInvalid):
		t.Fatalf("error %q, go-github %q", err, wantErr)
	}
}

// goGitHubRefusal marks the oracle's refusals by go-github's decoding,
// keeping their message.
type goGitHubRefusal struct{ error }

func (e goGitHubRefusal) Unwrap() error { return e.error }

func refusedByGoGitHub(err error) bool {
	var r goGitHubRefusal
	return errors.As(err, &r)
}

var (
	oracleEventRE = regexp.MustCompile(`^[a-z_]{1,64}$`)
	oracleShaRE   = regexp.MustCompile(`^[0-9a-fA-F]{40}([0-9a-fA-F]{24})?$`)
)

// oracleParse is ParseWebhook's decoding (past the signature check) as it
// was before BenchmarkParseWebhook: the envelope, then go-github's
// github.ParseWebHook. With lenient, json.UnmarshalTypeErrors of the
// go-github decoding are ignored.
func oracleParse(event string, body []byte, lenient bool) (pipeline.WebhookEvent, error) {
	ev, err := oracleParseEvent(event, body, lenient)
	if err != nil {
		name := event
		if !oracleEventRE.MatchString(event) {
			name = "(invalid event)"
		}
		return pipeline.WebhookEvent{}, fmt.Errorf("githubscm: webhook %s: %w", name, err)
	}
	return ev, nil
}

func oracleParseEvent(event string, body []byte, lenient bool) (pipeline.WebhookEvent, error) {
	if event == "" {
		return pipeline.WebhookEvent{}, pipeline.Invalid("X-GitHub-Event", "missing")
	}
	if !oracleEventRE.MatchString(event) {
		return pipeline.WebhookEvent{}, pipeline.Invalid("X-GitHub-Event", "not a GitHub event name")
	}
	if t := bytes.TrimLeft(body, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return pipeline.WebhookEvent{}, pipeline.Invalid("body", "not a JSON object")
	}
	var env struct {
		Repository *struct {
			ID    int64  `json:"id"`
			Name  string `json:"name"`
			Owner struct {
				Login string `json:"login"`
				Name  string `json:"name"`
			} `json:"owner"`
		} `json:"repository"`
		Sender struct {
			Login string `json:"login"`
		} `json:"sender"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return pipeline.WebhookEvent{}, pipeline.Invalid("body", "malformed JSON payload")
	}
	ev := pipeline.WebhookEvent{Kind: event, Author: env.Sender.Login}
	if r := env.Repository; r != nil {
		ev.RepoID, ev.RepoName = r.ID, r.Name
		ev.RepoOwner = r.Owner.Login
		if ev.RepoOwner == "" {
			ev.RepoOwner = r.Owner.Name
		}
	}
	switch event {
	case "push", "pull_request", "deployment":
		if env.Repository == nil || ev.RepoID == 0 || ev.RepoOwner == "" || ev.RepoName == "" {
			return pipeline.WebhookEvent{}, pipeline.Invalid("repository", "missing from the payload")
		}
	default:
		return ev, nil
	}
	var parsed any
	var err error
	if lenient {
		switch event {
		case "push":
			parsed = new(github.PushEvent)
		case "pull_request":
			parsed = new(github.PullRequestEvent)
		default:
			parsed = new(github.DeploymentEvent)
		}
		var te *json.UnmarshalTypeError
		if err = json.Unmarshal(body, parsed); errors.As(err, &te) {
			err = nil
		}
	} else {
		parsed, err = github.ParseWebHook(event, body)
	}
	if err != nil {
		return pipeline.WebhookEvent{}, goGitHubRefusal{pipeline.Invalid("body", "malformed %s payload", event)}
	}
	switch e := parsed.(type) {
	case *github.PushEvent:
		ref := e.GetRef()
		switch {
		case strings.HasPrefix(ref, "refs/heads/") && len(ref) > len("refs/heads/"):
			ev.Branch = strings.TrimPrefix(ref, "refs/heads/")
		case strings.HasPrefix(ref, "refs/tags/") && len(ref) > len("refs/tags/"):
			ev.Branch = strings.TrimPrefix(ref, "refs/tags/")
			ev.Tag = true
		default:
			return pipeline.WebhookEvent{}, pipeline.Invalid("ref", "push of %q is not a branch or tag", ref)
		}
		ev.Commit = e.GetAfter()
		ev.Deleted = e.GetDeleted() || ev.Commit == fakegithub.ZeroSHA
		if !ev.Deleted && !oracleShaRE.MatchString(ev.Commit) {
			return pipeline.WebhookEvent{}, pipeline.Invalid("after", "not a commit SHA")
		}
		if n := e.GetPusher().GetName(); n != "" {
			ev.Author = n
		} else if l := e.GetPusher().GetLogin(); l != "" {
			ev.Author = l
		}
		return ev, nil
	case *github.PullRequestEvent:
		pr := e.GetPullRequest()
		if e.PullRequest == nil {
			return pipeline.WebhookEvent{}, pipeline.Invalid("pull_request", "missing from the payload")
		}
		ev.Action = e.GetAction()
		ev.Branch = pr.GetHead().GetRef()
		ev.Commit = pr.GetHead().GetSHA()
		if !oracleShaRE.MatchString(ev.Commit) {
			return pipeline.WebhookEvent{}, pipeline.Invalid("pull_request.head.sha", "not a commit SHA")
		}
		if ev.Author == "" {
			ev.Author = pr.GetUser().GetLogin()
		}
		baseID := pr.GetBase().GetRepo().GetID()
		if baseID == 0 {
			baseID = ev.RepoID
		}
		head := pr.GetHead().GetRepo()
		ev.Fork = head == nil || head.GetID() != baseID
		return ev, nil
	case *github.DeploymentEvent:
		d := e.GetDeployment()
		if e.Deployment == nil {
			return pipeline.WebhookEvent{}, pipeline.Invalid("deployment", "missing from the payload")
		}
		ev.Commit = d.GetSHA()
		ev.Branch = d.GetRef()
		if !oracleShaRE.MatchString(ev.Commit) {
			return pipeline.WebhookEvent{}, pipeline.Invalid("deployment.sha", "not a commit SHA")
		}
		if l := d.GetCreator().GetLogin(); l != "" {
			ev.Author = l
		}
		return ev, nil
	}
	return pipeline.WebhookEvent{}, pipeline.Invalid("body", "unexpected %s payload", event)
}

// BenchmarkParseWebhook measures verifying and decoding signed push and
// pull_request deliveries of the size GitHub sends (fakegithub payloads:
// full repository, sender and commit objects).
func BenchmarkParseWebhook(b *testing.B) {
	s := fakegithub.New(b)
	s.AddUser("alice", 1001, alice.AccessToken)
	r := s.AddRepo("alice", "app")
	sha := r.Commit("main", map[string]string{"a": "1", "b/c": "2"}, "change")
	scm, err := githubscm.New(githubscm.Config{APIURL: s.APIURL})
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name, event string
		body        []byte
	}{
		{"push", "push", fakegithub.PushPayload(r, "main", "", sha, "alice")},
		{"pull_request", "pull_request", fakegithub.PullRequestPayload(r, "synchronize", 7, "feature/x", sha, true)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			req := signed(bc.event, bc.body)
			b.SetBytes(int64(len(bc.body)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := scm.ParseWebhook(req, whSecret); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
