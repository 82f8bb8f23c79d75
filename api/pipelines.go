package api

import (
	"net/http"
	"strings"

	restful "github.com/emicklei/go-restful/v3"

	"github.com/kontinuous/kontinuous/pipeline"
)

const (
	tagRepos     = "repositories"
	tagPipelines = "pipelines"
)

// PipelineView is a pipeline with the caller's permissions on it (what
// GET /api/v1/pipelines/{owner}/{repo} answers).
type PipelineView struct {
	pipeline.Pipeline
	Permissions pipeline.Access `json:"permissions" description:"what the caller may do: read, push (run, cancel, approve, restart), admin (settings)"`
}

// PipelineResources serves repositories, pipelines, definitions and
// secrets.
type PipelineResources struct{ routes }

// NewPipelineResources returns the pipeline resources.
func NewPipelineResources(svc *pipeline.Service, callers Callers) *PipelineResources {
	return &PipelineResources{routes{svc: svc, callers: callers}}
}

// WebServices implements Resource.
func (r *PipelineResources) WebServices() []*restful.WebService {
	repos := new(restful.WebService)
	repos.Path("/api/v1/repositories").Produces(restful.MIME_JSON)
	repos.Route(doc(repos.GET("").To(answer(r.listRepos)).Operation("listRepos").
		Doc("List the caller's repositories on every forge they are connected to (each with \"forge\"); a linked forge whose connection expired is left out and named in the Kontinuous-Reconnect response header").
		Writes([]pipeline.Repository{}).
		Returns(http.StatusOK, "repositories", []pipeline.Repository{}), tagRepos, 401, 429, 502))
	repos.Route(doc(repos.GET("/{owner}/{repo}").To(answer(r.getRepo)).Operation("getRepo").
		Doc("Show one of the caller's GitHub repositories").
		Param(ownerParam(repos)).Param(repoParam(repos)).
		Writes(pipeline.Repository{}).
		Returns(http.StatusOK, "repository", pipeline.Repository{}), tagRepos, 400, 401, 404, 429, 502))

	ws := new(restful.WebService)
	ws.Path("/api/v1/pipelines").Consumes(restful.MIME_JSON).Produces(restful.MIME_JSON)
	ws.Filter(r.requirePermission)
	ws.Route(doc(ws.GET("").To(answer(r.listPipelines)).Operation("listPipelines").
		Doc("List the pipelines the caller can see").
		Writes([]pipeline.Pipeline{}).
		Returns(http.StatusOK, "pipelines", []pipeline.Pipeline{}), tagPipelines, 401, 502, 503))
	ws.Route(doc(ws.POST("").To(answer(r.createPipeline)).Operation("createPipeline").
		Doc("Create a pipeline: needs admin on the repository; installs a webhook and a read-only deploy key").
		Reads(pipeline.NewPipeline{}).
		Writes(pipeline.Pipeline{}).
		Returns(http.StatusCreated, "created", pipeline.Pipeline{}), tagPipelines, 400, 401, 403, 404, 409, 413, 502, 503))
	ws.Route(doc(needs(ws.GET("/{owner}/{repo}").To(answer(r.getPipeline)).Operation("getPipeline"), pipeline.PermRead).Metadata(metaShowsOrphans, true).
		Doc("Show a pipeline, with the caller's permissions on it: \"permissions\": {\"read\", \"push\", \"admin\"} (booleans)").
		Param(ownerParam(ws)).Param(repoParam(ws)).
		// PipelineView is documented as the pipeline: go-restful-openapi
		// lists an embedded struct's required fields in random order.
		Writes(pipeline.Pipeline{}).
		Returns(http.StatusOK, "pipeline with permissions", pipeline.Pipeline{}), tagPipelines, 400, 401, 404, 502, 503))
	ws.Route(doc(needs(ws.DELETE("/{owner}/{repo}").To(answer(r.deletePipeline)).Operation("deletePipeline"), pipeline.PermAdmin).Metadata(metaShowsOrphans, true).
		Doc("Delete a pipeline with its webhook, deploy key, builds, logs and secrets (admin)").
		Param(ownerParam(ws)).Param(repoParam(ws)).
		Returns(http.StatusNoContent, "deleted", nil), tagPipelines, 400, 401, 403, 404, 502, 503))
	ws.Route(doc(needs(ws.GET("/{owner}/{repo}/definition").To(answer(r.getDefinition)).Operation("getDefinition"), pipeline.PermRead).
		Doc("Read .pipeline.yml on the default branch").
		Param(ownerParam(ws)).Param(repoParam(ws)).
		Writes(pipeline.Definition{}).
		Returns(http.StatusOK, "definition", pipeline.Definition{}), tagPipelines, 400, 401, 404, 502, 503))
	ws.Route(doc(needs(ws.GET("/{owner}/{repo}/definition/{ref:*}").To(answer(r.getDefinition)).Operation("getDefinition"), pipeline.PermRead).
		Doc("Read .pipeline.yml at a branch, tag or commit").
		Param(ownerParam(ws)).Param(repoParam(ws)).
		Param(ws.PathParameter(pRef, "branch, tag or commit SHA; may contain slashes (feature/x)").DataType("string")).
		Writes(pipeline.Definition{}).
		Returns(http.StatusOK, "definition", pipeline.Definition{}), tagPipelines, 400, 401, 404, 502, 503))
	ws.Route(doc(needs(ws.POST("/{owner}/{repo}/definition").To(answer(r.updateDefinition)).Operation("updateDefinition"), pipeline.PermAdmin).
		Doc("Commit a new .pipeline.yml, directly or through a pull request (admin)").
		Param(ownerParam(ws)).Param(repoParam(ws)).
		Reads(pipeline.DefinitionUpdate{}).
		Writes(pipeline.DefinitionResult{}).
		Returns(http.StatusOK, "committed", pipeline.DefinitionResult{}), tagPipelines, 400, 401, 403, 404, 409, 413, 502, 503))
	ws.Route(doc(needs(ws.GET("/{owner}/{repo}/secrets").To(answer(r.listSecrets)).Operation("listSecrets"), pipeline.PermAdmin).
		Doc("List secret sets: names and keys, never values (admin)").
		Param(ownerParam(ws)).Param(repoParam(ws)).
		Writes([]pipeline.SecretSet{}).
		Returns(http.StatusOK, "secret sets", []pipeline.SecretSet{}), tagPipelines, 400, 401, 403, 404, 503))
	ws.Route(doc(needs(ws.GET("/{owner}/{repo}/secrets/{name}").To(answer(r.getSecret)).Operation("getSecret"), pipeline.PermAdmin).
		Doc("Show a secret set's keys, never values (admin)").
		Param(ownerParam(ws)).Param(repoParam(ws)).
		Param(ws.PathParameter(pSecret, "secret set name").DataType("string")).
		Writes(pipeline.SecretSet{}).
		Returns(http.StatusOK, "secret set", pipeline.SecretSet{}), tagPipelines, 400, 401, 403, 404, 503))
	ws.Route(doc(needs(ws.PUT("/{owner}/{repo}/secrets/{name}").To(answer(r.putSecret)).Operation("putSecret"), pipeline.PermAdmin).
		Doc("Create or replace a secret set; each key becomes an environment variable of stages naming it (admin)").
		Param(ownerParam(ws)).Param(repoParam(ws)).
		Param(ws.PathParameter(pSecret, "secret set name").DataType("string")).
		Reads(pipeline.SecretsBody{}).
		Writes(pipeline.SecretSet{}).
		Returns(http.StatusOK, "stored", pipeline.SecretSet{}), tagPipelines, 400, 401, 403, 404, 413, 503))
	ws.Route(doc(needs(ws.DELETE("/{owner}/{repo}/secrets/{name}").To(answer(r.deleteSecret)).Operation("deleteSecret"), pipeline.PermAdmin).
		Doc("Delete a secret set (admin)").
		Param(ownerParam(ws)).Param(repoParam(ws)).
		Param(ws.PathParameter(pSecret, "secret set name").DataType("string")).
		Returns(http.StatusNoContent, "deleted", nil), tagPipelines, 400, 401, 403, 404, 503))
	return []*restful.WebService{repos, ws}
}

// ReconnectHeader, on GET /api/v1/repositories, names (comma-separated)
// the connected forges whose connection expired: their repositories are
// left out of the list until the user reconnects them.
const ReconnectHeader = "Kontinuous-Reconnect"

func (r *PipelineResources) listRepos(req *restful.Request, resp *restful.Response) (int, any, error) {
	c, err := r.caller(req)
	if err != nil {
		return 0, nil, err
	}
	list, err := r.svc.AllRepositories(req.Request.Context(), c)
	if err != nil {
		return 0, nil, err
	}
	repos := list.Repositories
	if repos == nil {
		repos = []pipeline.Repository{}
	}
	if len(list.Reconnect) > 0 {
		// The list stays a list: linked forges whose connection expired
		// are named here (and in GET /api/v1/user).
		resp.Header().Set(ReconnectHeader, strings.Join(list.Reconnect, ","))
	}
	return http.StatusOK, repos, nil
}

func (r *PipelineResources) getRepo(req *restful.Request, _ *restful.Response) (int, any, error) {
	owner, repo, err := repoPath(req)
	if err != nil {
		return 0, nil, err
	}
	c, err := r.caller(req)
	if err != nil {
		return 0, nil, err
	}
	rp, err := r.svc.Repository(req.Request.Context(), c, owner, repo)
	return http.StatusOK, rp, err
}

func (r *PipelineResources) listPipelines(req *restful.Request, _ *restful.Response) (int, any, error) {
	c, err := r.caller(req)
	if err != nil {
		return 0, nil, err
	}
	ps, err := r.svc.ListPipelines(req.Request.Context(), c)
	return http.StatusOK, ps, err
}

func (r *PipelineResources) createPipeline(req *restful.Request, resp *restful.Response) (int, any, error) {
	var body pipeline.NewPipeline
	if err := decodeJSON(req, &body); err != nil {
		return 0, nil, err
	}
	c, err := r.caller(req)
	if err != nil {
		return 0, nil, err
	}
	p, err := r.svc.CreatePipeline(req.Request.Context(), c, body)
	if err != nil {
		return 0, nil, err
	}
	resp.Header().Set("Location", "/api/v1/pipelines/"+p.Owner+"/"+p.Repo)
	return http.StatusCreated, p, nil
}

// The handlers below run after requirePermission: the path is valid and
// the caller holds the route's permission.

func (r *PipelineResources) getPipeline(req *restful.Request, _ *restful.Response) (int, any, error) {
	ctx, owner, repo := req.Request.Context(), req.PathParameter(pOwner), req.PathParameter(pRepo)
	c, err := r.caller(req)
	if err != nil {
		return 0, nil, err
	}
	p, err := r.svc.GetPipeline(ctx, c, owner, repo)
	if err != nil {
		return 0, nil, err
	}
	a, err := r.svc.AccessOf(ctx, c, owner, repo)
	return http.StatusOK, PipelineView{Pipeline: p, Permissions: a}, err
}

func (r *PipelineResources) deletePipeline(req *restful.Request, _ *restful.Response) (int, any, error) {
	c, err := r.caller(req)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusNoContent, nil, r.svc.DeletePipeline(req.Request.Context(), c, req.PathParameter(pOwner), req.PathParameter(pRepo))
}

func (r *PipelineResources) getDefinition(req *restful.Request, _ *restful.Response) (int, any, error) {
	c, err := r.caller(req)
	if err != nil {
		return 0, nil, err
	}
	d, err := r.svc.GetDefinition(req.Request.Context(), c, req.PathParameter(pOwner), req.PathParameter(pRepo), req.PathParameter(pRef))
	return http.StatusOK, d, err
}

func (r *PipelineResources) updateDefinition(req *restful.Request, _ *restful.Response) (int, any, error) {
	var body pipeline.DefinitionUpdate
	if err := decodeJSON(req, &body); err != nil {
		return 0, nil, err
	}
	c, err := r.caller(req)
	if err != nil {
		return 0, nil, err
	}
	res, err := r.svc.UpdateDefinition(req.Request.Context(), c, req.PathParameter(pOwner), req.PathParameter(pRepo), body)
	return http.StatusOK, res, err
}

func (r *PipelineResources) listSecrets(req *restful.Request, _ *restful.Response) (int, any, error) {
	c, err := r.caller(req)
	if err != nil {
		return 0, nil, err
	}
	sets, err := r.svc.ListSecrets(req.Request.Context(), c, req.PathParameter(pOwner), req.PathParameter(pRepo))
	return http.StatusOK, sets, err
}

func (r *PipelineResources) getSecret(req *restful.Request, _ *restful.Response) (int, any, error) {
	c, err := r.caller(req)
	if err != nil {
		return 0, nil, err
	}
	set, err := r.svc.GetSecret(req.Request.Context(), c, req.PathParameter(pOwner), req.PathParameter(pRepo), req.PathParameter(pSecret))
	return http.StatusOK, set, err
}

func (r *PipelineResources) putSecret(req *restful.Request, _ *restful.Response) (int, any, error) {
	var body pipeline.SecretsBody
	if err := decodeJSON(req, &body); err != nil {
		return 0, nil, err
	}
	c, err := r.caller(req)
	if err != nil {
		return 0, nil, err
	}
	set, err := r.svc.PutSecret(req.Request.Context(), c, req.PathParameter(pOwner), req.PathParameter(pRepo), req.PathParameter(pSecret), body.Data)
	return http.StatusOK, set, err
}

func (r *PipelineResources) deleteSecret(req *restful.Request, _ *restful.Response) (int, any, error) {
	c, err := r.caller(req)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusNoContent, nil, r.svc.DeleteSecret(req.Request.Context(), c, req.PathParameter(pOwner), req.PathParameter(pRepo), req.PathParameter(pSecret))
}
