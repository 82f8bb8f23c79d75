package api

import (
	"encoding/json"
	"regexp"
	"strings"
	"sync"

	restfulspec "github.com/emicklei/go-restful-openapi/v2"
	restful "github.com/emicklei/go-restful/v3"
	"github.com/go-openapi/spec"
)

// SpecPath is where the Swagger 2.0 document is served.
const SpecPath = "/apidocs.json"

// securityName is the Swagger security definition for Bearer tokens.
const securityName = "Bearer"

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
	sw.SecurityDefinitions[securityName].Description = "JWT as `Bearer <token>` (from POST /api/v1/login/github, scripts/jwt-gen or Auth0)"
	seen := map[string]bool{}
	for _, ws := range services {
		for _, r := range ws.Routes() {
			if isPublic(r.Metadata) {
				continue
			}
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
			op.Security = []map[string][]string{{securityName: {}}}
			if !hasResponse(op, 401) {
				op.RespondsWith(401, spec.NewResponse().WithDescription("missing, invalid, expired or revoked token").
					WithSchema(spec.RefSchema("#/definitions/api.Error")))
			}
			sw.Paths.Paths[path] = item
			seen[path] = true
		}
	}
	for _, t := range []spec.Tag{
		{TagProps: spec.TagProps{Name: tagSystem, Description: "health, readiness, version"}},
	} {
		if !hasTag(sw.Tags, t.Name) {
			sw.Tags = append(sw.Tags, t)
		}
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
