package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	restful "github.com/emicklei/go-restful/v3"

	"github.com/kontinuous/kontinuous/pipeline"
)

const (
	tagBuilds = "builds"
	tagStages = "stages"
)

// BuildResources serves builds, stages, logs and webhook deliveries.
type BuildResources struct {
	routes
	// lists keeps the JSON of listed builds.
	lists buildJSON
	// streams ends open log streams when the server shuts down.
	streams      context.Context
	closeStreams context.CancelFunc
	// webhookBodies bounds the webhook bytes held in memory at once.
	webhookBodies *byteBudget
	// streamLimits caps live streams per caller and in total (streams.go).
	streamLimits *streamLimits
	limitsOnce   sync.Once
}

// NewBuildResources returns the build resources. authn authenticates
// manual triggers and approvals on the routes webhooks and agents share.
func NewBuildResources(svc *pipeline.Service, callers Callers, authn Authenticator) *BuildResources {
	ctx, cancel := context.WithCancel(context.Background())
	return &BuildResources{routes: routes{svc: svc, callers: callers, authn: authn}, streams: ctx, closeStreams: cancel,
		webhookBodies: newByteBudget(WebhookBodyBudget)}
}

// CloseStreams ends every open ?follow=true log stream (each gets a final
// "end" event) and makes new ones end at once, so that a graceful shutdown
// is not held up by clients following logs. Register it with
// http.Server.RegisterOnShutdown.
func (r *BuildResources) CloseStreams() { r.closeStreams() }

// LogFile is one log in the original Kontinuous shape.
type LogFile struct {
	Filename string `json:"filename"`
	// Content is base64-encoded text.
	Content string `json:"content"`
}

// WebServices implements Resource.
func (r *BuildResources) WebServices() []*restful.WebService {
	ws := new(restful.WebService)
	ws.Path("/api/v1/pipelines/{owner}/{repo}/builds").Produces(restful.MIME_JSON)
	o, rp, bn, si := ownerParam(ws), repoParam(ws), buildParam(ws), stageParam(ws)

	ws.Route(doc(ws.GET("").To(r.listBuilds).
		Produces(restful.MIME_JSON, "text/event-stream").
		Doc("List build summaries, newest first; ?follow=true with Accept: text/event-stream streams them live: each event's data is one build in the list's JSON, the newest `limit` first, then each build that changes (event \"delete\" with {number} when one is deleted; event \"end\" when the server shuts down). Streams are capped per user and per server (429 with Retry-After beyond)").
		Param(o).Param(rp).
		Param(ws.QueryParameter("limit", "page size (1–200, default 50)").DataType("integer")).
		Param(ws.QueryParameter("before", "only builds numbered below this").DataType("integer")).
		Param(ws.QueryParameter("follow", "true to stream (with Accept: text/event-stream)").DataType("boolean")).
		Writes([]pipeline.Build{}).
		Returns(http.StatusOK, "builds", []pipeline.Build{}), tagBuilds, 400, 401, 404, 429, 502, 503))
	post := ws.POST("").To(r.postBuilds).
		Consumes(restful.MIME_JSON).
		Doc(r.deliveryDoc()).
		Param(o).Param(rp)
	for _, h := range r.webhookHeaders() {
		post.Param(ws.HeaderParameter(h.Name, h.Description).DataType("string"))
	}
	ws.Route(doc(post.
		Param(ws.HeaderParameter("X-Custom-Event", "dashboard or cli for a manual trigger").DataType("string")).
		Reads(pipeline.ManualTrigger{}).
		Writes(pipeline.Build{}).
		Returns(http.StatusCreated, "build queued", pipeline.Build{}).
		Returns(http.StatusOK, "ping, or a repeated delivery (the original build)", pipeline.WebhookResult{}).
		Returns(http.StatusAccepted, "valid delivery that makes no build", pipeline.WebhookResult{}).
		Metadata(metaPublic, true).Metadata(metaOptionalBearer, true).Metadata(metaOptionalBody, true), tagBuilds, 400, 401, 403, 404, 413, 502, 503))
	ws.Route(doc(ws.GET("/{buildNumber}").To(r.getBuild).
		Produces(restful.MIME_JSON, "text/event-stream").
		Doc("Show a build with its stages; ?follow=true with Accept: text/event-stream streams it: the build JSON now and on every change (event \"delete\" if it is deleted, \"end\" when the server shuts down; capped per user and per server, 429 beyond)").
		Param(o).Param(rp).Param(bn).
		Param(ws.QueryParameter("follow", "true to stream (with Accept: text/event-stream)").DataType("boolean")).
		Writes(pipeline.Build{}).
		Returns(http.StatusOK, "build", pipeline.Build{}), tagBuilds, 400, 401, 404, 429, 502, 503))
	ws.Route(doc(ws.DELETE("/{buildNumber}").To(r.deleteBuild).
		Doc("Delete a finished build and its logs (admin)").
		Param(o).Param(rp).Param(bn).
		Returns(http.StatusNoContent, "deleted", nil), tagBuilds, 400, 401, 403, 404, 409, 502, 503))
	ws.Route(doc(ws.POST("/{buildNumber}/cancel").To(r.cancel).
		Doc("Cancel a build: running stages are stopped (push)").
		Param(o).Param(rp).Param(bn).
		Writes(pipeline.Build{}).
		Returns(http.StatusOK, "canceled", pipeline.Build{}), tagBuilds, 400, 401, 403, 404, 409, 502, 503))
	ws.Route(doc(ws.POST("/{buildNumber}/restart").To(r.restart).
		Doc("Start a new build of the same commit (push)").
		Param(o).Param(rp).Param(bn).
		Writes(pipeline.Build{}).
		Returns(http.StatusCreated, "new build", pipeline.Build{}), tagBuilds, 400, 401, 403, 404, 502, 503))
	ws.Route(doc(ws.GET("/{buildNumber}/stages").To(r.listStages).
		Doc("List a build's stages").
		Param(o).Param(rp).Param(bn).
		Writes([]pipeline.Stage{}).
		Returns(http.StatusOK, "stages", []pipeline.Stage{}), tagStages, 400, 401, 404, 502, 503))
	ws.Route(doc(ws.GET("/{buildNumber}/stages/{stageIndex}").To(r.getStage).
		Doc("Show one stage").
		Param(o).Param(rp).Param(bn).Param(si).
		Writes(pipeline.Stage{}).
		Returns(http.StatusOK, "stage", pipeline.Stage{}), tagStages, 400, 401, 404, 502, 503))
	ws.Route(doc(ws.POST("/{buildNumber}/stages/{stageIndex}").To(r.postStage).
		Doc("Approve a WAITING wait stage with ?continue=yes (Bearer user token, push). Status updates from build agents are refused (401): no executor posts them.").
		Param(o).Param(rp).Param(bn).Param(si).
		Param(ws.QueryParameter("continue", "yes to approve a waiting wait stage").DataType("string")).
		Writes(pipeline.Stage{}).
		Returns(http.StatusOK, "updated", pipeline.Stage{}).
		Metadata(metaPublic, true).Metadata(metaOptionalBearer, true).Metadata(metaOptionalBody, true), tagStages, 400, 401, 403, 404, 409, 502, 503))
	ws.Route(doc(ws.POST("/{buildNumber}/stages/{stageIndex}/run").To(r.runFrom).
		Doc("Re-run a finished build from this stage (push)").
		Param(o).Param(rp).Param(bn).Param(si).
		Writes(pipeline.Build{}).
		Returns(http.StatusOK, "re-running", pipeline.Build{}), tagStages, 400, 401, 403, 404, 409, 502, 503))
	ws.Route(doc(ws.GET("/{buildNumber}/stages/{stageIndex}/logs").To(r.logs).
		Produces(restful.MIME_JSON, "text/plain", "text/event-stream").
		Doc("A stage's log").
		Notes("Two shapes: by default JSON `[{\"filename\": \"1-build.log\", \"content\": \"<base64 of the log text>\"}]` (the original Kontinuous's); "+
			"the raw text (text/plain) with `?format=text` or `Accept: text/plain`. "+
			"`?follow=true` with `Accept: text/event-stream` streams the log as server-sent events: one `data:` line per log line, "+
			"`: keep-alive` comments, and a final `event: end` (or `event: error`) when the stage ends.").
		Param(o).Param(rp).Param(bn).Param(si).
		Param(ws.QueryParameter("format", "text for the raw log (like Accept: text/plain); json (the default) for [{filename, content (base64)}]").DataType("string").PossibleValues([]string{"text", "json"})).
		Param(ws.QueryParameter("follow", "true to stream (with Accept: text/event-stream)").DataType("boolean")).
		Writes([]LogFile{}).
		Returns(http.StatusOK, "log", []LogFile{}), tagStages, 400, 401, 404, 429, 502, 503))
	return []*restful.WebService{ws}
}

// target reads owner, repo and the build number.
func target(req *restful.Request) (owner, repo string, n int, err error) {
	if owner, repo, err = repoPath(req); err != nil {
		return
	}
	n, err = positive(req, pBuild)
	return
}

func (r *BuildResources) listBuilds(req *restful.Request, resp *restful.Response) {
	if wantsStream(req) {
		r.followBuilds(req, resp, 0)
		return
	}
	owner, repo, err := repoPath(req)
	limit, before := 50, 0
	if err == nil {
		limit, before, err = paging(req)
	}
	if err == nil {
		var c pipeline.Caller
		if c, err = r.caller(req); err == nil {
			var bs []pipeline.Build
			if bs, err = r.svc.ListBuilds(req.Request.Context(), c, owner, repo, limit, before); err == nil {
				writeJSONWith(resp, http.StatusOK, func(buf *bytes.Buffer) error { return r.lists.encodeList(buf, bs) })
				return
			}
		}
	}
	writeError(req, resp, err)
}

func paging(req *restful.Request) (limit, before int, err error) {
	limit = 50
	if s := req.QueryParameter("limit"); s != "" {
		if limit, err = strconv.Atoi(s); err != nil || limit < 1 || limit > 200 {
			return 0, 0, pipeline.Invalid("limit", "%q must be an integer from 1 to 200", s)
		}
	}
	if s := req.QueryParameter("before"); s != "" {
		if before, err = strconv.Atoi(s); err != nil || before < 1 {
			return 0, 0, pipeline.Invalid("before", "%q must be a positive integer", s)
		}
	}
	return limit, before, nil
}

// postBuilds takes webhook deliveries and manual triggers.
func (r *BuildResources) postBuilds(req *restful.Request, resp *restful.Response) {
	owner, repo, err := repoPath(req)
	if err == nil {
		err = r.svc.ValidateRepoName(owner, repo)
	}
	if err != nil {
		writeError(req, resp, err)
		return
	}
	if ev := req.HeaderParameter("X-Custom-Event"); ev != "" {
		ctx, err := r.authn.Authenticate(req.Request)
		if err != nil {
			writeError(req, resp, err)
			return
		}
		req.Request = req.Request.WithContext(ctx)
		var body pipeline.ManualTrigger
		if err = decodeJSON(req, &body); err == nil {
			var c pipeline.Caller
			if c, err = r.caller(req); err == nil {
				var b pipeline.Build
				if b, err = r.svc.TriggerBuild(req.Request.Context(), c, owner, repo, ev, body); err == nil {
					writeJSON(resp, http.StatusCreated, b)
					return
				}
			}
		}
		writeError(req, resp, err)
		return
	}
	_, wreq, ok, herr := r.svc.Forges().Delivery(req.Request)
	if !ok {
		writeStatus(resp, http.StatusBadRequest, "missing a forge's webhook event header (forges: "+strings.Join(r.svc.Forges().Names(), ", ")+") or X-Custom-Event (manual trigger)")
		return
	}
	body, release, err := r.readWebhookBody(req, resp, owner, repo, herr)
	if err != nil {
		if err != errAnswered {
			writeError(req, resp, err)
		}
		return
	}
	// The body's buffer goes back to the pool once the delivery is
	// handled: HandleWebhook keeps no reference to it (what it stores is
	// decoded into new values).
	defer release()
	wreq.Body = body
	res, err := r.svc.HandleWebhook(req.Request.Context(), owner, repo, wreq)
	if err != nil {
		writeError(req, resp, err)
		return
	}
	switch res.Outcome {
	case pipeline.WebhookCreated:
		writeJSON(resp, http.StatusCreated, res.Build)
	case pipeline.WebhookDuplicate:
		writeJSON(resp, http.StatusOK, res.Build)
	case pipeline.WebhookIgnored:
		writeJSON(resp, http.StatusAccepted, res)
	default:
		writeJSON(resp, http.StatusOK, res)
	}
}

// onBuild answers status and the build that call returns for the build
// the path names, or the error in the contract's shape.
func (r *BuildResources) onBuild(req *restful.Request, resp *restful.Response, status int,
	call func(ctx context.Context, c pipeline.Caller, owner, repo string, n int) (pipeline.Build, error)) {
	owner, repo, n, err := target(req)
	if err == nil {
		var c pipeline.Caller
		if c, err = r.caller(req); err == nil {
			var b pipeline.Build
			if b, err = call(req.Request.Context(), c, owner, repo, n); err == nil {
				writeJSON(resp, status, b)
				return
			}
		}
	}
	writeError(req, resp, err)
}

func (r *BuildResources) getBuild(req *restful.Request, resp *restful.Response) {
	if wantsStream(req) {
		n, err := positive(req, pBuild)
		if err != nil {
			writeError(req, resp, err)
			return
		}
		r.followBuilds(req, resp, n)
		return
	}
	r.onBuild(req, resp, http.StatusOK, r.svc.GetBuild)
}

func (r *BuildResources) deleteBuild(req *restful.Request, resp *restful.Response) {
	owner, repo, n, err := target(req)
	if err == nil {
		var c pipeline.Caller
		if c, err = r.caller(req); err == nil {
			if err = r.svc.DeleteBuild(req.Request.Context(), c, owner, repo, n); err == nil {
				resp.WriteHeader(http.StatusNoContent)
				return
			}
		}
	}
	writeError(req, resp, err)
}

func (r *BuildResources) cancel(req *restful.Request, resp *restful.Response) {
	r.onBuild(req, resp, http.StatusOK, r.svc.CancelBuild)
}

func (r *BuildResources) restart(req *restful.Request, resp *restful.Response) {
	r.onBuild(req, resp, http.StatusCreated, r.svc.RestartBuild)
}

func (r *BuildResources) listStages(req *restful.Request, resp *restful.Response) {
	owner, repo, n, err := target(req)
	if err == nil {
		var c pipeline.Caller
		if c, err = r.caller(req); err == nil {
			var b pipeline.Build
			if b, err = r.svc.GetBuild(req.Request.Context(), c, owner, repo, n); err == nil {
				st := b.Stages
				if st == nil {
					st = []pipeline.Stage{}
				}
				writeJSON(resp, http.StatusOK, st)
				return
			}
		}
	}
	writeError(req, resp, err)
}

func (r *BuildResources) getStage(req *restful.Request, resp *restful.Response) {
	owner, repo, n, err := target(req)
	var idx int
	if err == nil {
		idx, err = positive(req, pStage)
	}
	if err == nil {
		var c pipeline.Caller
		if c, err = r.caller(req); err == nil {
			var st pipeline.Stage
			if st, err = r.svc.GetStage(req.Request.Context(), c, owner, repo, n, idx); err == nil {
				writeJSON(resp, http.StatusOK, st)
				return
			}
		}
	}
	writeError(req, resp, err)
}

// errAgentUpdate answers a stage status update: no executor posts them,
// so the server issues no stage tokens and accepts no update.
var errAgentUpdate = pipeline.Errorf(pipeline.ErrUnauthorized, "stage status updates are not accepted (no executor posts them); approve a waiting wait stage with ?continue=yes")

// postStage approves a wait stage (?continue=yes, user token with push);
// anything else is a build agent's status update, refused.
func (r *BuildResources) postStage(req *restful.Request, resp *restful.Response) {
	owner, repo, n, err := target(req)
	var idx int
	if err == nil {
		idx, err = positive(req, pStage)
	}
	if err != nil {
		writeError(req, resp, err)
		return
	}
	cont := req.QueryParameter("continue")
	switch {
	case cont == "":
		writeError(req, resp, errAgentUpdate)
		return
	case cont != "yes" && cont != "true":
		writeError(req, resp, pipeline.Invalid("continue", "use continue=yes"))
		return
	}
	ctx, err := r.authn.Authenticate(req.Request)
	if err == nil {
		req.Request = req.Request.WithContext(ctx)
		var c pipeline.Caller
		if c, err = r.caller(req); err == nil {
			var b pipeline.Build
			if b, err = r.svc.ContinueStage(req.Request.Context(), c, owner, repo, n, idx); err == nil {
				writeJSON(resp, http.StatusOK, b)
				return
			}
		}
	}
	writeError(req, resp, err)
}

func (r *BuildResources) runFrom(req *restful.Request, resp *restful.Response) {
	owner, repo, n, err := target(req)
	var idx int
	if err == nil {
		idx, err = positive(req, pStage)
	}
	if err == nil {
		var c pipeline.Caller
		if c, err = r.caller(req); err == nil {
			var b pipeline.Build
			if b, err = r.svc.RunFromStage(req.Request.Context(), c, owner, repo, n, idx); err == nil {
				writeJSON(resp, http.StatusOK, b)
				return
			}
		}
	}
	writeError(req, resp, err)
}

func (r *BuildResources) logs(req *restful.Request, resp *restful.Response) {
	owner, repo, n, err := target(req)
	var idx int
	if err == nil {
		idx, err = positive(req, pStage)
	}
	format := req.QueryParameter("format")
	if err == nil && format != "" && format != "text" && format != "json" {
		err = pipeline.Invalid("format", "%q: use text (the raw log) or json ([{filename, content}], the default)", format)
	}
	var c pipeline.Caller
	if err == nil {
		c, err = r.caller(req)
	}
	if err != nil {
		writeError(req, resp, err)
		return
	}
	ctx := req.Request.Context()
	accept := req.HeaderParameter("Accept")
	follow := req.QueryParameter("follow") == "true" || req.QueryParameter("follow") == "yes"
	if follow && strings.Contains(accept, "text/event-stream") {
		// Check access before committing to a stream.
		if _, err := r.svc.GetBuild(ctx, c, owner, repo, n); err != nil {
			writeError(req, resp, err)
			return
		}
		release, ok := r.openStream(req, resp, c)
		if !ok {
			return
		}
		defer release()
		h := resp.Header()
		h.Set("Content-Type", "text/event-stream")
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Accel-Buffering", "no")
		resp.WriteHeader(http.StatusOK)
		rc := http.NewResponseController(resp.ResponseWriter)
		_ = rc.Flush() // best effort: a writer that cannot flush still works
		w := bufio.NewWriter(resp)
		// The stream ends with the request or when the server shuts down.
		sctx, cancel := context.WithCancel(ctx)
		defer cancel()
		stopOnShutdown := context.AfterFunc(r.streams, cancel)
		defer stopOnShutdown()
		// Lines and keep-alive comments come from two goroutines.
		var mu sync.Mutex
		var pinger sync.WaitGroup
		stop := make(chan struct{})
		stopPinger := sync.OnceFunc(func() { close(stop); pinger.Wait() })
		// The pinger must be gone before the last write and before the
		// handler returns: the writer is not usable after that.
		defer stopPinger()
		pinger.Add(1)
		go func() {
			defer pinger.Done()
			// A comment line every 15 s keeps proxies from closing a
			// quiet stream.
			t := time.NewTicker(sseKeepAlive)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-sctx.Done():
					return
				case <-t.C:
					mu.Lock()
					w.WriteString(": keep-alive\n\n")
					if w.Flush() == nil {
						_ = rc.Flush()
					}
					mu.Unlock()
				}
			}
		}()
		err := r.svc.FollowStageLog(sctx, c, owner, repo, n, idx, func(line []byte) error {
			mu.Lock()
			defer mu.Unlock()
			writeSSEData(w, line)
			if err := w.Flush(); err != nil {
				return err
			}
			return rc.Flush()
		})
		stopPinger()
		switch {
		case ctx.Err() == nil && r.streams.Err() != nil:
			fmt.Fprint(w, "event: end\ndata: server shutting down; reconnect to follow on\n\n")
		case err != nil && ctx.Err() == nil:
			fmt.Fprintf(w, "event: error\ndata: %s\n\n", pipeline.PublicMessage(err))
		default:
			fmt.Fprint(w, "event: end\ndata: stage log ended\n\n")
		}
		_ = w.Flush() // the client may be gone
		return
	}
	st, data, err := r.svc.StageLog(ctx, c, owner, repo, n, idx)
	if err != nil {
		writeError(req, resp, err)
		return
	}
	if format == "text" || (format == "" && strings.Contains(accept, "text/plain") && !strings.Contains(accept, "application/json")) {
		resp.Header().Set("Content-Type", "text/plain; charset=utf-8")
		resp.WriteHeader(http.StatusOK)
		_, _ = resp.Write(data) // the client may be gone
		return
	}
	name := fmt.Sprintf("%d-%s.log", st.Index, safeName(st.Name))
	files := []LogFile{{Filename: name, Content: base64.StdEncoding.EncodeToString(data)}}
	writeJSON(resp, http.StatusOK, files)
}

func safeName(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.' {
			return r
		}
		return '_'
	}, s)
}

// sseKeepAlive is how often a quiet log stream gets a comment line.
var sseKeepAlive = 15 * time.Second

// writeSSEData writes one log line as an SSE event. A bare CR would end
// the data line early in an SSE parser, so each CR-separated piece becomes
// its own data line (a client joins them with newlines).
func writeSSEData(w *bufio.Writer, line []byte) {
	line = bytes.TrimSuffix(line, []byte("\r"))
	for {
		i := bytes.IndexByte(line, '\r')
		w.WriteString("data: ")
		if i < 0 {
			w.Write(line)
			w.WriteString("\n")
			break
		}
		w.Write(line[:i])
		w.WriteString("\n")
		line = line[i+1:]
	}
	w.WriteString("\n")
}

// BodyLimit caps the body of a forge's webhook delivery (POST …/builds
// that a registered forge claims, not a manual trigger) at MaxWebhookBody;
// 0 leaves r to the default cap.
func (r *BuildResources) BodyLimit(hr *http.Request) int64 {
	return webhookBodyLimit(r.svc.Forges(), hr)
}

func webhookBodyLimit(forges *pipeline.Forges, hr *http.Request) int64 {
	if hr.Method != http.MethodPost || hr.Header.Get("X-Custom-Event") != "" ||
		!strings.HasSuffix(strings.TrimSuffix(hr.URL.Path, "/"), "/builds") {
		return 0
	}
	if _, _, ok, _ := forges.Delivery(hr); ok {
		return MaxWebhookBody
	}
	return 0
}

// webhookHeaders are the registered forges' delivery headers.
func (r *BuildResources) webhookHeaders() []pipeline.WebhookHeader {
	var out []pipeline.WebhookHeader
	for _, n := range r.svc.Forges().Names() {
		if f, ok := r.svc.Forges().Get(n); ok {
			out = append(out, f.WebhookHeaders()...)
		}
	}
	return out
}

// deliveryDoc describes POST …/builds with the forges' headers.
func (r *BuildResources) deliveryDoc() string {
	var forges []string
	for _, n := range r.svc.Forges().Names() {
		f, _ := r.svc.Forges().Get(n)
		var hs []string
		for _, h := range f.WebhookHeaders() {
			if h.Name != "" && !strings.Contains(strings.ToLower(h.Name), "delivery") {
				hs = append(hs, h.Name)
			}
		}
		forges = append(forges, n+" webhook delivery ("+strings.Join(hs, ", ")+"; no Bearer token)")
	}
	return strings.Join(append(forges, "a manual trigger with X-Custom-Event: dashboard|cli, a Bearer token with push access and body {author, branch}"), ", or ")
}
