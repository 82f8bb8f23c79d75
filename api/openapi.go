package api

import (
	"encoding/json"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"

	restfulspec "github.com/emicklei/go-restful-openapi/v2"
	restful "github.com/emicklei/go-restful/v3"
	"github.com/go-openapi/spec"

	"github.com/kontinuous/kontinuous/pipeline"
)

// SpecPath is where the Swagger 2.0 document is served.
const SpecPath = "/apidocs.json"

// securityName is the Swagger security definition for Bearer tokens.
const securityName = "Bearer"

// Route metadata for the spec of public routes that also take a Bearer
// token (a manual trigger, an approval) and of bodies some callers omit.
const (
	// metaOptionalBearer: the route is public (webhooks, agents) but a
	// user's Bearer token makes it a manual trigger or an approval; the
	// spec lists Bearer or nothing, so Swagger UI's Authorize applies.
	metaOptionalBearer = "kontinuous.optionalBearer"
	// metaOptionalBody: the body is not required (an approval has none).
	metaOptionalBody = "kontinuous.optionalBody"
)

// operationIDs renames operations whose handler serves two routes (the
// generated ids would collide and break client generators).
var operationIDs = map[string]string{
	"POST /login/github": "loginAlias",
	"GET /api/v1/pipelines/{owner}/{repo}/definition/{ref}": "getDefinitionAtRef",
}

// timeFields are JSON properties holding Unix nanoseconds.
var timeFields = map[string]bool{"created": true, "started": true, "finished": true, "timestamp": true, "updated": true}

// tagDescriptions describes every tag of the spec.
var tagDescriptions = []spec.Tag{
	{TagProps: spec.TagProps{Name: tagSystem, Description: "health, readiness, version"}},
	{TagProps: spec.TagProps{Name: tagLogin, Description: "GitHub web login: trades an OAuth code for a Kontinuous token (public, rate-limited)"}},
	{TagProps: spec.TagProps{Name: "user", Description: "the caller: who the token belongs to, log out (revoke the token)"}},
	{TagProps: spec.TagProps{Name: tagRepos, Description: "the caller's GitHub repositories, to pick one to build"}},
	{TagProps: spec.TagProps{Name: tagPipelines, Description: "pipelines (a repository wired to Kontinuous: webhook, deploy key), their .pipeline.yml and secret sets"}},
	{TagProps: spec.TagProps{Name: tagBuilds, Description: "builds of a pipeline: webhook deliveries, manual triggers, cancel, restart, delete"}},
	{TagProps: spec.TagProps{Name: tagStages, Description: "the stages of a build: approval of wait stages, re-runs from a stage, logs"}},
	{TagProps: spec.TagProps{Name: tagLint, Description: "check a .pipeline.yml with the server's own parser"}},
	{TagProps: spec.TagProps{Name: tagBadges, Description: "status badges (SVG) for README files; public repositories need no token"}},
	{TagProps: spec.TagProps{Name: tagOAuth1, Description: "OAuth 1.0a provider for Bitbucket Data Center Application Links: the signed protocol endpoints (/oauth/1.0a/*, form-encoded), the user's consent and the applications a user authorized"}},
	{TagProps: spec.TagProps{Name: "forges", Description: "the forges this server signs in with (and Auth0 for API clients): what a UI needs to draw its sign-in buttons (public)"}},
}

// wildcard matches a go-restful path parameter with a pattern, {name:*}.
var wildcard = regexp.MustCompile(`\{(\w+):[^}]*\}`)

// openAPIWebService serves the Swagger 2.0 description of services at
// /apidocs.json, with a Bearer security definition applied to every route
// that is not public.
func openAPIWebService(services []*restful.WebService, version string) *restful.WebService {
	var (
		once sync.Once
		doc  []byte
	)
	ws := new(restful.WebService)
	ws.Path(SpecPath).Produces(restful.MIME_JSON)
	ws.Route(ws.GET("").To(func(req *restful.Request, resp *restful.Response) {
		once.Do(func() {
			// A Swagger document always marshals.
			doc, _ = json.MarshalIndent(BuildSpec(services, version), "", "  ")
		})
		resp.Header().Set("Content-Type", restful.MIME_JSON)
		_, _ = resp.Write(doc) // error ignored: the client went away
	}).Doc("This Swagger 2.0 document").
		Metadata(metaPublic, true).
		Metadata(restfulspec.KeyOpenAPITags, []string{tagSystem}).
		Returns(200, "the API description", nil))
	return ws
}

// BuildSpec returns the Swagger document for services (used by tests).
func BuildSpec(services []*restful.WebService, version string) *spec.Swagger {
	return restfulspec.BuildSwagger(restfulspec.Config{
		WebServices:                   services,
		APIPath:                       SpecPath,
		PostBuildSwaggerObjectHandler: func(sw *spec.Swagger) { decorateSpec(sw, services, version) },
	})
}

func decorateSpec(sw *spec.Swagger, services []*restful.WebService, version string) {
	if version == "" {
		version = "dev"
	}
	sw.Info = &spec.Info{InfoProps: spec.InfoProps{
		Title:       "Kontinuous",
		Description: "CI/CD pipelines for Kubernetes teams: pipelines, builds, stages and logs. Click \"Authorize\" and paste a token (from POST /api/v1/login/github, scripts/jwt-gen or Auth0); the `Bearer ` prefix is optional.",
		Version:     version,
	}}
	sw.SecurityDefinitions = spec.SecurityDefinitions{
		securityName: spec.APIKeyAuth("Authorization", "header"),
	}
	sw.SecurityDefinitions[securityName].Description = "JWT as `Bearer <token>` (from POST /api/v1/login/{forge}, scripts/jwt-gen or Auth0)"
	seen := map[string]bool{}
	for _, ws := range services {
		for _, r := range ws.Routes() {
			path := wildcard.ReplaceAllString(r.Path, "{$1}") // the spec shows {ref:*} as {ref}
			item, ok := sw.Paths.Paths[path]
			if !ok {
				path = strings.TrimSuffix(path, "/")
				if item, ok = sw.Paths.Paths[path]; !ok {
					continue
				}
			}
			op := operation(&item, r.Method)
			if op == nil {
				continue
			}
			if id, ok := operationIDs[r.Method+" "+path]; ok {
				op.ID = id
			}
			if metaFlag(r.Metadata, metaOptionalBody) {
				for i := range op.Parameters {
					if op.Parameters[i].In == "body" {
						op.Parameters[i].Required = false
					}
				}
			}
			if hasBody(op) && !hasResponse(op, http.StatusUnsupportedMediaType) {
				op.RespondsWith(http.StatusUnsupportedMediaType, spec.NewResponse().WithDescription("the body's Content-Type is not one the route consumes").
					WithSchema(spec.RefSchema("#/definitions/api.Error")))
			}
			sw.Paths.Paths[path] = item
			if isPublic(r.Metadata) {
				if metaFlag(r.Metadata, metaOptionalBearer) {
					// Bearer, or no token at all (webhooks, agents).
					op.Security = []map[string][]string{{securityName: {}}, {}}
					sw.Paths.Paths[path] = item
				}
				continue
			}
			op.Security = []map[string][]string{{securityName: {}}}
			if !hasResponse(op, 401) {
				op.RespondsWith(401, spec.NewResponse().WithDescription("missing, invalid, expired or revoked token").
					WithSchema(spec.RefSchema("#/definitions/api.Error")))
			}
			sw.Paths.Paths[path] = item
			seen[path] = true
		}
	}
	for _, t := range tagDescriptions {
		if !hasTag(sw.Tags, t.Name) {
			sw.Tags = append(sw.Tags, t)
		}
	}
	uniqueOperationIDs(sw)
	documentDefinitions(sw)
}

func metaFlag(md map[string]any, key string) bool {
	v, ok := md[key].(bool)
	return ok && v
}

func hasBody(op *spec.Operation) bool {
	for _, p := range op.Parameters {
		if p.In == "body" {
			return true
		}
	}
	return false
}

// uniqueOperationIDs suffixes any operationId still used twice with the
// HTTP method and a counter: a safety net behind operationIDs.
func uniqueOperationIDs(sw *spec.Swagger) {
	paths := make([]string, 0, len(sw.Paths.Paths))
	for p := range sw.Paths.Paths {
		paths = append(paths, p)
	}
	slices.Sort(paths)
	seen := map[string]int{}
	for _, p := range paths {
		item := sw.Paths.Paths[p]
		for _, m := range []string{"GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD", "PATCH"} {
			op := operation(&item, m)
			if op == nil || op.ID == "" {
				continue
			}
			seen[op.ID]++
			if n := seen[op.ID]; n > 1 {
				op.ID += strings.ToUpper(m[:1]) + strings.ToLower(m[1:]) + strconv.Itoa(n)
			}
		}
		sw.Paths.Paths[p] = item
	}
}

// documentDefinitions says what the generated schemas cannot: times are
// Unix nanoseconds, statuses are an enumeration, and which fields of
// request bodies are optional.
func documentDefinitions(sw *spec.Swagger) {
	statuses := make([]any, len(pipeline.Statuses))
	for i, s := range pipeline.Statuses {
		statuses[i] = string(s)
	}
	for name, def := range sw.Definitions {
		for prop, schema := range def.Properties {
			switch {
			case timeFields[prop] && schema.Type.Contains("integer"):
				schema.Format = "int64"
				schema.Description = "Unix time in nanoseconds (0: not yet)"
			case prop == "status" && name == "api.Connection":
				schema.Enum = []any{"connected", "expired"}
			case prop == "status" && schema.Type.Contains("string"):
				schema.Enum = statuses
				schema.Description = "PENDING, RUNNING, WAITING (for approval) and the final SUCCESS, FAIL, CANCELED; SKIPPED (stages only): never ran because an earlier stage failed or the build was canceled"
			}
			def.Properties[prop] = schema
		}
		sw.Definitions[name] = def
	}
	if def, ok := sw.Definitions["pipeline.NewPipeline"]; ok {
		// login is optional: the server defaults it to the caller's.
		def.Required = []string{"owner", "repo", "events"}
		if p, ok := def.Properties["login"]; ok {
			p.Description = "optional: the GitHub login shown as the pipeline's owner (default: the caller's)"
			def.Properties["login"] = p
		}
		if p, ok := def.Properties["events"]; ok {
			p.Description = "webhook events that start builds: push (required), pull_request, deployment"
			def.Properties["events"] = p
		}
		sw.Definitions["pipeline.NewPipeline"] = def
	}
}

func hasTag(tags []spec.Tag, name string) bool {
	for _, t := range tags {
		if t.Name == name {
			return true
		}
	}
	return false
}

func hasResponse(op *spec.Operation, code int) bool {
	if op.Responses == nil {
		return false
	}
	_, ok := op.Responses.StatusCodeResponses[code]
	return ok
}

func operation(item *spec.PathItem, method string) *spec.Operation {
	switch strings.ToUpper(method) {
	case "GET":
		return item.Get
	case "POST":
		return item.Post
	case "PUT":
		return item.Put
	case "DELETE":
		return item.Delete
	case "PATCH":
		return item.Patch
	case "HEAD":
		return item.Head
	case "OPTIONS":
		return item.Options
	}
	return nil
}
