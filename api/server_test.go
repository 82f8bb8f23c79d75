package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	restful "github.com/emicklei/go-restful/v3"

	"github.com/kontinuous/kontinuous/pipeline"
	githubscm "github.com/kontinuous/kontinuous/pipeline/forge/github"
)

// allowAll authenticates every request (these tests are not about auth).
type allowAll struct{}

func (allowAll) Authenticate(r *http.Request) (context.Context, error) { return r.Context(), nil }

// probeResource has a route that panics and one that reads its body.
type probeResource struct{}

func (probeResource) WebServices() []*restful.WebService {
	ws := new(restful.WebService).Path("/probe").Produces(restful.MIME_JSON)
	ws.Route(ws.GET("/panic").To(func(*restful.Request, *restful.Response) { panic("boom") }))
	ws.Route(ws.POST("/{x}/builds").To(func(req *restful.Request, resp *restful.Response) {
		n, err := io.Copy(io.Discard, req.Request.Body)
		if err != nil {
			writeError(req, resp, err)
			return
		}
		writeJSON(resp, http.StatusOK, map[string]int64{"read": n})
	}))
	ws.Route(ws.GET("/list").To(func(req *restful.Request, resp *restful.Response) {
		writeJSON(resp, http.StatusOK, []map[string]int{{"a": 1}, {"b": 2}})
	}))
	return []*restful.WebService{ws}
}

// BodyLimit gives the probe's …/builds the webhook cap of GitHub's
// deliveries, as BuildResources does.
func (probeResource) BodyLimit(r *http.Request) int64 {
	gh, err := githubscm.New(githubscm.Config{})
	if err != nil {
		panic(err)
	}
	return webhookBodyLimit(pipeline.NewForges(gh), r)
}

func newProbeServer(t *testing.T) *httptest.Server {
	t.Helper()
	s, err := New(Config{Version: "test", Authenticator: allowAll{}, Resources: []Resource{probeResource{}}})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	return ts
}

func decodeErrorShape(t *testing.T, r *http.Response) Error {
	t.Helper()
	defer r.Body.Close()
	var e Error
	if err := json.NewDecoder(r.Body).Decode(&e); err != nil {
		t.Fatalf("body is not the error shape: %v", err)
	}
	if e.Code != r.StatusCode || e.Message == "" {
		t.Fatalf("error shape %+v for status %d", e, r.StatusCode)
	}
	return e
}

func TestAPanickingHandlerAnswers500InTheErrorShape(t *testing.T) {
	ts := newProbeServer(t)
	r, err := http.Get(ts.URL + "/probe/panic")
	if err != nil {
		t.Fatal(err)
	}
	if r.StatusCode != http.StatusInternalServerError {
		t.Fatalf("status %d", r.StatusCode)
	}
	if e := decodeErrorShape(t, r); strings.Contains(e.Message, "boom") {
		t.Fatalf("the panic value leaked into the reply: %q", e.Message)
	}
	// The server still serves.
	r, err = http.Get(ts.URL + "/probe/list")
	if err != nil || r.StatusCode != http.StatusOK {
		t.Fatalf("after a panic: %v %v", r, err)
	}
	r.Body.Close()
}

func TestRepliesAreCompactJSON(t *testing.T) {
	ts := newProbeServer(t)
	r, err := http.Get(ts.URL + "/probe/list")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	if got := strings.TrimSpace(string(b)); got != `[{"a":1},{"b":2}]` {
		t.Fatalf("body %q, want compact JSON", got)
	}
}

func TestOnlyWebhookDeliveriesGetTheLargeBodyLimit(t *testing.T) {
	ts := newProbeServer(t)
	body := bytes.Repeat([]byte("x"), MaxJSONBody+1)
	post := func(headers ...string) *http.Response {
		req, _ := http.NewRequest(http.MethodPost, ts.URL+"/probe/a/builds", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		for _, h := range headers {
			req.Header.Set(h, "push")
		}
		r, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	// A manual trigger (X-Custom-Event) over 1 MiB is refused, also when
	// it carries X-GitHub-Event too (the trigger branch wins there).
	for _, h := range [][]string{{"X-Custom-Event"}, {"X-Custom-Event", "X-GitHub-Event"}} {
		r := post(h...)
		if r.StatusCode != http.StatusRequestEntityTooLarge {
			t.Fatalf("manual trigger over 1 MiB with %v: %d", h, r.StatusCode)
		}
		decodeErrorShape(t, r)
	}
	// A webhook delivery of the same size is read whole.
	r := post("X-GitHub-Event")
	defer r.Body.Close()
	if r.StatusCode != http.StatusOK {
		t.Fatalf("webhook of 1 MiB + 1: %d", r.StatusCode)
	}
}

func TestSSEDataLinesNeverCarryACarriageReturn(t *testing.T) {
	cases := map[string]string{
		"plain":         "data: plain\n\n",
		"progress\rbar": "data: progress\ndata: bar\n\n",
		"crlf\r":        "data: crlf\n\n",
		"a\r\rb":        "data: a\ndata: \ndata: b\n\n",
		"":              "data: \n\n",
		"event: forged": "data: event: forged\n\n",
	}
	for in, want := range cases {
		var buf bytes.Buffer
		w := bufio.NewWriter(&buf)
		writeSSEData(w, []byte(in))
		w.Flush()
		if buf.String() != want {
			t.Errorf("writeSSEData(%q) = %q, want %q", in, buf.String(), want)
		}
	}
}
