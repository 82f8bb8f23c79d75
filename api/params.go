package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"

	restfulspec "github.com/emicklei/go-restful-openapi/v2"
	restful "github.com/emicklei/go-restful/v3"

	"github.com/kontinuous/kontinuous/pipeline"
)

// Callers turns an authenticated request's context into the acting user
// with their forge token. The wiring implements it from auth's identity
// and the user store; defined here, where it is consumed.
type Callers interface {
	Caller(ctx context.Context) (pipeline.Caller, error)
}

// Path parameter names and docs shared by resources.
const (
	pOwner  = "owner"
	pRepo   = "repo"
	pBuild  = "buildNumber"
	pStage  = "stageIndex"
	pRef    = "ref"
	pSecret = "name"
)

func ownerParam(ws *restful.WebService) *restful.Parameter {
	return ws.PathParameter(pOwner, "repository owner (GitHub user or organisation; case-insensitive)").DataType("string")
}

func repoParam(ws *restful.WebService) *restful.Parameter {
	return ws.PathParameter(pRepo, "repository name (case-insensitive)").DataType("string")
}

func buildParam(ws *restful.WebService) *restful.Parameter {
	return ws.PathParameter(pBuild, "build number (1, 2, ...)").DataType("integer").DataFormat("int32")
}

func stageParam(ws *restful.WebService) *restful.Parameter {
	return ws.PathParameter(pStage, "stage index (1, 2, ...)").DataType("integer").DataFormat("int32")
}

// repoPath reads and validates {owner}/{repo}.
func repoPath(req *restful.Request) (string, string, error) {
	owner, repo := req.PathParameter(pOwner), req.PathParameter(pRepo)
	if err := pipeline.ValidateRepoName(owner, repo); err != nil {
		return "", "", err
	}
	return owner, repo, nil
}

// positive parses a positive decimal integer path parameter.
func positive(req *restful.Request, name string) (int, error) {
	s := req.PathParameter(name)
	if s == "" || len(s) > 9 || strings.TrimLeft(s, "0123456789") != "" || s[0] == '0' {
		return 0, pipeline.Invalid(name, "%q must be a positive decimal integer", s)
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		return 0, pipeline.Invalid(name, "%q must be a positive decimal integer", s)
	}
	return n, nil
}

// decodeJSON reads a JSON body into v (bodies are capped by limitBodies).
func decodeJSON(req *restful.Request, v any) error {
	body, err := io.ReadAll(req.Request.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		return pipeline.Invalid("body", "could not read the request body")
	}
	if len(strings.TrimSpace(string(body))) == 0 {
		return pipeline.Invalid("body", "a JSON body is required")
	}
	if err := json.Unmarshal(body, v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return pipeline.Invalid(te.Field, "must be %s", te.Type.String())
		}
		return pipeline.Invalid("body", "malformed JSON: %s", strings.TrimPrefix(err.Error(), "json: "))
	}
	return nil
}

// routes is shared by the pipeline resources.
type routes struct {
	svc     *pipeline.Service
	callers Callers
	authn   Authenticator
}

// writeJSON answers status with v.
func writeJSON(resp *restful.Response, status int, v any) {
	writeJSONWith(resp, status, func(buf *bytes.Buffer) error { return json.NewEncoder(buf).Encode(v) })
}

// writeJSONWith answers status with the JSON that encode writes into a
// pooled buffer.
func writeJSONWith(resp *restful.Response, status int, encode func(*bytes.Buffer) error) {
	buf := jsonBuffers.Get().(*bytes.Buffer)
	buf.Reset()
	defer func() {
		if buf.Cap() <= maxPooledJSON {
			jsonBuffers.Put(buf)
		}
	}()
	if err := encode(buf); err != nil {
		WriteHTTPError(resp.ResponseWriter, http.StatusInternalServerError, "internal error: the reply could not be encoded")
		return
	}
	h := resp.Header()
	h.Set("Content-Type", restful.MIME_JSON)
	h.Set("Content-Length", strconv.Itoa(buf.Len()))
	resp.WriteHeader(status)
	_, _ = resp.Write(buf.Bytes()) // error ignored: the client went away
}

// jsonBuffers keeps encoding buffers between replies: a reply is encoded
// whole, then sent in one write with its Content-Length.
var jsonBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// maxPooledJSON: larger buffers are left to the garbage collector.
const maxPooledJSON = 1 << 20

// doc attaches the common route metadata: tags and the error replies.
func doc(rb *restful.RouteBuilder, tag string, codes ...int) *restful.RouteBuilder {
	rb.Metadata(restfulspec.KeyOpenAPITags, []string{tag})
	for _, c := range codes {
		rb.Returns(c, errorDoc[c], Error{})
	}
	return rb
}

var errorDoc = map[int]string{
	http.StatusBadRequest:            "invalid input",
	http.StatusUnauthorized:          "missing, invalid or expired credentials",
	http.StatusForbidden:             "insufficient access to the repository",
	http.StatusNotFound:              "not found (or not visible to the caller)",
	http.StatusConflict:              "conflicts with the current state",
	http.StatusRequestEntityTooLarge: "request body too large",
	http.StatusTooManyRequests:       "rate limited (GitHub, login attempts, or too many live streams: see Retry-After)",
	http.StatusBadGateway:            "GitHub failed or refused the call",
	http.StatusServiceUnavailable:    "etcd unavailable; retry after Retry-After seconds",
}
