package api

import (
	"errors"
	"io"
	"mime"
	"net/http"
	"strings"

	restful "github.com/emicklei/go-restful/v3"

	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/spec"
)

const tagLint = "lint"

// LintRequest is the JSON body of POST /api/v1/lint.
type LintRequest struct {
	// Content is the .pipeline.yml text.
	Content string `json:"content"`
}

// LintResult is the answer of POST /api/v1/lint.
type LintResult struct {
	// Valid is true when there is no problem.
	Valid bool `json:"valid"`
	// Problems lists every problem found (empty when valid).
	Problems []spec.Problem `json:"problems"`
	// Stages is the number of stages of a valid spec.
	Stages int `json:"stages"`
}

// yamlTypes are the Content-Types of a raw .pipeline.yml body.
var yamlTypes = []string{"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml", "text/plain"}

// LintResources serves POST /api/v1/lint: a .pipeline.yml checked with
// the server's own parser, for editors and the UI.
type LintResources struct{}

// NewLintResources returns the lint resource.
func NewLintResources() *LintResources { return &LintResources{} }

// WebServices implements Resource.
func (r *LintResources) WebServices() []*restful.WebService {
	ws := new(restful.WebService)
	ws.Path("/api/v1/lint").Produces(restful.MIME_JSON)
	ws.Route(doc(ws.POST("").To(r.lint).
		Consumes(append([]string{restful.MIME_JSON}, yamlTypes...)...).
		Doc("Check a .pipeline.yml with the server's own parser").
		Notes("The body is the file itself (Content-Type application/yaml, text/yaml or text/plain) or JSON {\"content\": \"<the file>\"}. "+
			"The answer is 200 whether or not the spec is valid: {valid, stages, problems: [{stage, field, message, text}]}, "+
			"every problem with the stage (name) and field (path from the document root) it is about. "+
			"Templates are rendered with stand-in values (branch main, build 1), as a build would render them.").
		Reads(LintRequest{}).
		Writes(LintResult{}).
		Returns(http.StatusOK, "the problems found (none: valid)", LintResult{}), tagLint, 400, 401, 413))
	return []*restful.WebService{ws}
}

func (r *LintResources) lint(req *restful.Request, resp *restful.Response) {
	raw, err := lintBody(req)
	if err != nil {
		writeError(req, resp, err)
		return
	}
	d, problems := spec.Lint(raw)
	res := LintResult{Valid: len(problems) == 0, Problems: problems}
	if res.Problems == nil {
		res.Problems = []spec.Problem{}
	}
	if d != nil {
		res.Stages = len(d.Spec.Template.Stages)
	}
	writeJSON(resp, http.StatusOK, res)
}

// lintBody reads the spec from a raw YAML body or a JSON {content}.
func lintBody(req *restful.Request) ([]byte, error) {
	mt, _, _ := mime.ParseMediaType(req.Request.Header.Get("Content-Type"))
	if mt == restful.MIME_JSON {
		var body LintRequest
		if err := decodeJSON(req, &body); err != nil {
			return nil, err
		}
		if strings.TrimSpace(body.Content) == "" {
			return nil, pipeline.Invalid("content", "is required: the .pipeline.yml text")
		}
		return []byte(body.Content), nil
	}
	raw, err := io.ReadAll(req.Request.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, err
		}
		return nil, pipeline.Invalid("body", "could not read the request body")
	}
	if strings.TrimSpace(string(raw)) == "" {
		return nil, pipeline.Invalid("body", "is empty: send the .pipeline.yml")
	}
	return raw, nil
}
