package api

import (
	"bytes"
	"net/http"

	restful "github.com/emicklei/go-restful/v3"

	"github.com/kontinuous/kontinuous/pipeline"
)

// handler is a resource handler that returns what to answer instead of
// writing it: the status and the value to send as JSON, or an error,
// answered in the contract's shape with the status the error table maps it
// to (see StatusOf). A nil value answers the status with no body (204).
// resp is there for headers (Location); a handler that writes a body
// itself is a streaming one and should not be a handler.
type handler func(req *restful.Request, resp *restful.Response) (status int, value any, err error)

// jsonEncoder is a value that encodes its own JSON (a list of builds
// assembled from cached pieces).
type jsonEncoder func(buf *bytes.Buffer) error

// plainText is a value answered as text/plain (a raw stage log).
type plainText []byte

// answer adapts h to a go-restful route function.
func answer(h handler) restful.RouteFunction {
	return func(req *restful.Request, resp *restful.Response) {
		status, v, err := h(req, resp)
		if err != nil {
			writeError(req, resp, err)
			return
		}
		switch v := v.(type) {
		case nil:
			resp.WriteHeader(status)
		case jsonEncoder:
			writeJSONWith(resp, status, v)
		case plainText:
			resp.Header().Set("Content-Type", "text/plain; charset=utf-8")
			resp.WriteHeader(status)
			_, _ = resp.Write(v) // the client may be gone
		default:
			writeJSON(resp, status, v)
		}
	}
}

// Route metadata of the pipeline permission a route needs.
const (
	// metaNeed is the pipeline.Permission a route needs on the pipeline
	// its {owner}/{repo} names. The WebService's filter (requirePermission)
	// checks it once, before the handler runs.
	metaNeed = "kontinuous.need"
	// metaShowsOrphans: a caller without access to the repository is not
	// refused by the filter, because the route shows (or deletes) an
	// orphaned pipeline to those who may see it as such; the Service
	// decides (see pipeline.Service.GetPipeline).
	metaShowsOrphans = "kontinuous.showsOrphans"
)

// needs declares on rb the permission its route needs on the pipeline.
func needs(rb *restful.RouteBuilder, p pipeline.Permission) *restful.RouteBuilder {
	return rb.Metadata(metaNeed, p)
}

// attrCaller is the request attribute holding the caller the permission
// filter resolved and authorized.
const attrCaller = "kontinuous.caller"

// requirePermission is the filter of the pipeline WebServices: a route
// that declares a permission (needs) is answered only if the caller holds
// it on the pipeline: no access → 404 (as for a pipeline that does not
// exist), too little → 403. Path parameters are validated first (400).
// Routes that declare none pass.
func (r *routes) requirePermission(req *restful.Request, resp *restful.Response, chain *restful.FilterChain) {
	route := req.SelectedRoute()
	if route == nil {
		chain.ProcessFilter(req, resp)
		return
	}
	need, ok := route.Metadata()[metaNeed].(pipeline.Permission)
	if !ok {
		chain.ProcessFilter(req, resp)
		return
	}
	if err := r.authorize(req, need); err != nil {
		if !(metaFlag(route.Metadata(), metaShowsOrphans) && StatusOf(err) == http.StatusNotFound) {
			writeError(req, resp, err)
			return
		}
	}
	chain.ProcessFilter(req, resp)
}

// authorize validates the path parameters, resolves the caller and checks
// that they hold need on the pipeline the path names; the authorized
// caller is kept on req for the handler (see caller). Public routes that
// authenticate some requests themselves (manual triggers, approvals) call
// it after authenticating.
func (r *routes) authorize(req *restful.Request, need pipeline.Permission) error {
	owner, repo, err := repoPath(req)
	if err != nil {
		return err
	}
	for _, name := range []string{pBuild, pStage} {
		if _, present := req.PathParameters()[name]; present {
			if _, err := positive(req, name); err != nil {
				return err
			}
		}
	}
	c, err := r.callers.Caller(req.Request.Context())
	if err != nil {
		return err
	}
	c, err = r.svc.Authorize(req.Request.Context(), c, owner, repo, need)
	if err != nil {
		return err
	}
	req.SetAttribute(attrCaller, c)
	return nil
}

// caller is the acting user of an authenticated request: the one the
// permission filter authorized, or else resolved from the request.
func (r *routes) caller(req *restful.Request) (pipeline.Caller, error) {
	if c, ok := req.Attribute(attrCaller).(pipeline.Caller); ok {
		return c, nil
	}
	return r.callers.Caller(req.Request.Context())
}
