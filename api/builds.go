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
	ws.Filter(r.requirePermission)
	o, rp, bn, si := ownerParam(ws), repoParam(ws), buildParam(ws), stageParam(ws)

	ws.Route(doc(needs(ws.GET("").To(r.listBuilds), pipeline.PermRead).
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
	ws.Route(doc(needs(ws.GET("/{buildNumber}").To(r.getBuild), pipeline.PermRead).
		Produces(restful.MIME_JSON, "text/event-stream").
		Doc("Show a build with its stages; ?follow=true with Accept: text/event-stream streams it: the build JSON now and on every change (event \"delete\" if it is deleted, \"end\" when the server shuts down; capped per user and per server, 429 beyond)").
		Param(o).Param(rp).Param(bn).
		Param(ws.QueryParameter("follow", "true to stream (with Accept: text/event-stream)").DataType("boolean")).
		Writes(pipeline.Build{}).
		Returns(http.StatusOK, "build", pipeline.Build{}), tagBuilds, 400, 401, 404, 429, 502, 503))
	ws.Route(doc(needs(ws.DELETE("/{buildNumber}").To(answer(r.deleteBuild)).Operation("deleteBuild"), pipeline.PermAdmin).
		Doc("Delete a finished build and its logs (admin)").
		Param(o).Param(rp).Param(bn).
		Returns(http.StatusNoContent, "deleted", nil), tagBuilds, 400, 401, 403, 404, 409, 502, 503))
	ws.Route(doc(needs(ws.POST("/{buildNumber}/cancel").To(answer(r.onBuild(http.StatusOK, r.svc.CancelBuild))).Operation("cancel"), pipeline.PermPush).
		Doc("Cancel a build: running stages are stopped (push)").
		Param(o).Param(rp).Param(bn).
		Writes(pipeline.Build{}).
		Returns(http.StatusOK, "canceled", pipeline.Build{}), tagBuilds, 400, 401, 403, 404, 409, 502, 503))
	ws.Route(doc(needs(ws.POST("/{buildNumber}/restart").To(answer(r.onBuild(http.StatusCreated, r.svc.RestartBuild))).Operation("restart"), pipeline.PermPush).
		Doc("Start a new build of the same commit (push)").
		Param(o).Param(rp).Param(bn).
		Writes(pipeline.Build{}).
		Returns(http.StatusCreated, "new build", pipeline.Build{}), tagBuilds, 400, 401, 403, 404, 502, 503))
	ws.Route(doc(needs(ws.GET("/{buildNumber}/stages").To(answer(r.listStages)).Operation("listStages"), pipeline.PermRead).
		Doc("List a build's stages").
		Param(o).Param(rp).Param(bn).
		Writes([]pipeline.Stage{}).
		Returns(http.StatusOK, "stages", []pipeline.Stage{}), tagStages, 400, 401, 404, 502, 503))
	ws.Route(doc(needs(ws.GET("/{buildNumber}/stages/{stageIndex}").To(answer(r.getStage)).Operation("getStage"), pipeline.PermRead).
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
	ws.Route(doc(needs(ws.POST("/{buildNumber}/stages/{stageIndex}/run").To(answer(r.onStage(http.StatusOK, r.svc.RunFromStage))).Operation("runFrom"), pipeline.PermPush).
		Doc("Re-run a finished build from this stage (push)").
		Param(o).Param(rp).Param(bn).Param(si).
		Writes(pipeline.Build{}).
		Returns(http.StatusOK, "re-running", pipeline.Build{}), tagStages, 400, 401, 403, 404, 409, 502, 503))
	ws.Route(doc(needs(ws.GET("/{buildNumber}/stages/{stageIndex}/logs").To(r.logs), pipeline.PermRead).
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

// target reads owner, repo and the build number (validated by
// requirePermission on the routes that declare a permission).
func target(req *restful.Request) (owner, repo string, n int, err error) {
	if owner, repo, err = repoPath(req); err != nil {
		return
	}
	n, err = positive(req, pBuild)
	return
}

// stageTarget reads owner, repo, the build number and the stage index.
func stageTarget(req *restful.Request) (owner, repo string, n, idx int, err error) {
	if owner, repo, n, err = target(req); err != nil {
		return
	}
	idx, err = positive(req, pStage)
	return
}

// listBuilds answers the build list, or streams it (?follow=true).
func (r *BuildResources) listBuilds(req *restful.Request, resp *restful.Response) {
	if wantsStream(req) {
		r.followBuilds(req, resp, 0)
		return
	}
	answer(r.buildList)(req, resp)
}

func (r *BuildResources) buildList(req *restful.Request, _ *restful.Response) (int, any, error) {
	limit, before, err := paging(req)
	if err != nil {
		return 0, nil, err
	}
	c, err := r.caller(req)
	if err != nil {
		return 0, nil, err
	}
	bs, err := r.svc.ListBuilds(req.Request.Context(), c, req.PathParameter(pOwner), req.PathParameter(pRepo), limit, before)
	return http.StatusOK, jsonEncoder(func(buf *bytes.Buffer) error { return r.lists.encodeList(buf, bs) }), err
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

// postBuilds is the route webhook deliveries and manual triggers share:
// X-Custom-Event makes it a manual trigger, anything else a delivery.
func (r *BuildResources) postBuilds(req *restful.Request, resp *restful.Response) {
	if req.HeaderParameter("X-Custom-Event") != "" {
		answer(r.trigger)(req, resp)
		return
	}
	r.delivery(req, resp)
}

// trigger starts a build from the UI or CLI: a Bearer token with push
// access (the route is public for the deliveries it shares).
func (r *BuildResources) trigger(req *restful.Request, _ *restful.Response) (int, any, error) {
	owner, repo, err := repoPath(req)
	if err != nil {
		return 0, nil, err
	}
	if err := r.svc.ValidateRepoName(owner, repo); err != nil {
		return 0, nil, err
	}
	ctx, err := r.authn.Authenticate(req.Request)
	if err != nil {
		return 0, nil, err
	}
	req.Request = req.Request.WithContext(ctx)
	var body pipeline.ManualTrigger
	if err := decodeJSON(req, &body); err != nil {
		return 0, nil, err
	}
	if err := r.authorize(req, pipeline.PermPush); err != nil {
		return 0, nil, err
	}
	c, err := r.caller(req)
	if err != nil {
		return 0, nil, err
	}
	b, err := r.svc.TriggerBuild(ctx, c, owner, repo, req.HeaderParameter("X-Custom-Event"), body)
	return http.StatusCreated, b, err
}

// delivery takes a forge's webhook delivery: no Bearer token; the forge
// verifies its signature against the pipeline's webhook secret.
func (r *BuildResources) delivery(req *restful.Request, resp *restful.Response) {
	owner, repo, err := repoPath(req)
	if err == nil {
		err = r.svc.ValidateRepoName(owner, repo)
	}
	if err != nil {
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

// onBuild is a handler answering status and the build that call returns
// for the build the path names.
func (r *BuildResources) onBuild(status int,
	call func(ctx context.Context, c pipeline.Caller, owner, repo string, n int) (pipeline.Build, error)) handler {
	return func(req *restful.Request, _ *restful.Response) (int, any, error) {
		owner, repo, n, err := target(req)
		if err != nil {
			return 0, nil, err
		}
		c, err := r.caller(req)
		if err != nil {
			return 0, nil, err
		}
		b, err := call(req.Request.Context(), c, owner, repo, n)
		return status, b, err
	}
}

// onStage is onBuild for the stage the path names.
func (r *BuildResources) onStage(status int,
	call func(ctx context.Context, c pipeline.Caller, owner, repo string, n, idx int) (pipeline.Build, error)) handler {
	return func(req *restful.Request, _ *restful.Response) (int, any, error) {
		owner, repo, n, idx, err := stageTarget(req)
		if err != nil {
			return 0, nil, err
		}
		c, err := r.caller(req)
		if err != nil {
			return 0, nil, err
		}
		b, err := call(req.Request.Context(), c, owner, repo, n, idx)
		return status, b, err
	}
}

// getBuild answers a build, or streams it (?follow=true).
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
	answer(r.onBuild(http.StatusOK, r.svc.GetBuild))(req, resp)
}

func (r *BuildResources) deleteBuild(req *restful.Request, _ *restful.Response) (int, any, error) {
	owner, repo, n, err := target(req)
	if err != nil {
		return 0, nil, err
	}
	c, err := r.caller(req)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusNoContent, nil, r.svc.DeleteBuild(req.Request.Context(), c, owner, repo, n)
}

func (r *BuildResources) listStages(req *restful.Request, _ *restful.Response) (int, any, error) {
	owner, repo, n, err := target(req)
	if err != nil {
		return 0, nil, err
	}
	c, err := r.caller(req)
	if err != nil {
		return 0, nil, err
	}
	b, err := r.svc.GetBuild(req.Request.Context(), c, owner, repo, n)
	if b.Stages == nil {
		b.Stages = []pipeline.Stage{}
	}
	return http.StatusOK, b.Stages, err
}

func (r *BuildResources) getStage(req *restful.Request, _ *restful.Response) (int, any, error) {
	owner, repo, n, idx, err := stageTarget(req)
	if err != nil {
		return 0, nil, err
	}
	c, err := r.caller(req)
	if err != nil {
		return 0, nil, err
	}
	st, err := r.svc.GetStage(req.Request.Context(), c, owner, repo, n, idx)
	return http.StatusOK, st, err
}

// errAgentUpdate answers a stage status update: no executor posts them,
// so the server issues no stage tokens and accepts no update.
var errAgentUpdate = pipeline.Errorf(pipeline.ErrUnauthorized, "stage status updates are not accepted (no executor posts them); approve a waiting wait stage with ?continue=yes")

// postStage is the route approvals and build agents' status updates
// share: ?continue=yes is an approval, anything else an agent's update.
func (r *BuildResources) postStage(req *restful.Request, resp *restful.Response) {
	if req.QueryParameter("continue") == "" {
		answer(r.agentUpdate)(req, resp)
		return
	}
	answer(r.approve)(req, resp)
}

// agentUpdate refuses a build agent's stage status update (after the
// path is validated, as before): no executor posts them.
func (r *BuildResources) agentUpdate(req *restful.Request, _ *restful.Response) (int, any, error) {
	if _, _, _, _, err := stageTarget(req); err != nil {
		return 0, nil, err
	}
	return 0, nil, errAgentUpdate
}

// approve continues a WAITING wait stage: a Bearer user token with push
// access (the route is public for the agents' updates it shares).
func (r *BuildResources) approve(req *restful.Request, resp *restful.Response) (int, any, error) {
	if _, _, _, _, err := stageTarget(req); err != nil {
		return 0, nil, err
	}
	if cont := req.QueryParameter("continue"); cont != "yes" && cont != "true" {
		return 0, nil, pipeline.Invalid("continue", "use continue=yes")
	}
	ctx, err := r.authn.Authenticate(req.Request)
	if err != nil {
		return 0, nil, err
	}
	req.Request = req.Request.WithContext(ctx)
	if err := r.authorize(req, pipeline.PermPush); err != nil {
		return 0, nil, err
	}
	return r.onStage(http.StatusOK, r.svc.ContinueStage)(req, resp)
}

// logs answers a stage's log, or streams it (?follow=true with Accept:
// text/event-stream).
func (r *BuildResources) logs(req *restful.Request, resp *restful.Response) {
	follow := req.QueryParameter("follow") == "true" || req.QueryParameter("follow") == "yes"
	if follow && strings.Contains(req.HeaderParameter("Accept"), "text/event-stream") {
		r.followLog(req, resp)
		return
	}
	answer(r.stageLog)(req, resp)
}

// logFormat reads ?format=.
func logFormat(req *restful.Request) (string, error) {
	format := req.QueryParameter("format")
	if format != "" && format != "text" && format != "json" {
		return "", pipeline.Invalid("format", "%q: use text (the raw log) or json ([{filename, content}], the default)", format)
	}
	return format, nil
}

// stageLog answers a stage's stored log: raw text (?format=text or
// Accept: text/plain) or the original JSON shape.
func (r *BuildResources) stageLog(req *restful.Request, _ *restful.Response) (int, any, error) {
	owner, repo, n, idx, err := stageTarget(req)
	if err != nil {
		return 0, nil, err
	}
	format, err := logFormat(req)
	if err != nil {
		return 0, nil, err
	}
	c, err := r.caller(req)
	if err != nil {
		return 0, nil, err
	}
	st, data, err := r.svc.StageLog(req.Request.Context(), c, owner, repo, n, idx)
	if err != nil {
		return 0, nil, err
	}
	accept := req.HeaderParameter("Accept")
	if format == "text" || (format == "" && strings.Contains(accept, "text/plain") && !strings.Contains(accept, "application/json")) {
		return http.StatusOK, plainText(data), nil
	}
	name := fmt.Sprintf("%d-%s.log", st.Index, safeName(st.Name))
	return http.StatusOK, []LogFile{{Filename: name, Content: base64.StdEncoding.EncodeToString(data)}}, nil
}

// followLog streams a stage's log as server-sent events, one data line
// per log line, until the stage ends.
func (r *BuildResources) followLog(req *restful.Request, resp *restful.Response) {
	owner, repo, n, idx, err := stageTarget(req)
	if err == nil {
		_, err = logFormat(req)
	}
	var c pipeline.Caller
	if err == nil {
		c, err = r.caller(req)
	}
	ctx := req.Request.Context()
	if err == nil {
		// Check the build exists before committing to a stream.
		_, err = r.svc.GetBuild(ctx, c, owner, repo, n)
	}
	if err != nil {
		writeError(req, resp, err)
		return
	}
	release, ok := r.openStream(req, resp, c)
	if !ok {
		return
	}
	defer release()
	// The stream ends with the request or when the server shuts down.
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopOnShutdown := context.AfterFunc(r.streams, cancel)
	defer stopOnShutdown()
	s := startSSE(sctx, resp)
	var line bytes.Buffer
	err = r.svc.FollowStageLog(sctx, c, owner, repo, n, idx, func(l []byte) error {
		line.Reset()
		w := bufio.NewWriter(&line)
		writeSSEData(w, l)
		_ = w.Flush() // a bytes.Buffer does not fail
		return s.send("", nil, line.String())
	})
	switch {
	case ctx.Err() == nil && r.streams.Err() != nil:
		s.end("end", "server shutting down; reconnect to follow on")
	case err != nil && ctx.Err() == nil:
		s.end("error", pipeline.PublicMessage(err))
	default:
		s.end("end", "stage log ended")
	}
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
