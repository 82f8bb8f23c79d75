package spec

import (
	"errors"
	"strings"
)

// Problem is one problem Lint found, in the shape of POST /api/v1/lint
// and kontinuous lint.
type Problem struct {
	// Stage is the name of the stage the problem is in (empty for the
	// document as a whole).
	Stage string `json:"stage"`
	// Field is the path of the field from the document root, e.g.
	// "spec.template.stages[1].params.command" (empty for the document).
	Field string `json:"field"`
	// Message says what is wrong, after the field: "is required for type
	// command".
	Message string `json:"message"`
	// Text is the whole problem in one line, as the server reports it
	// when a build fails.
	Text string `json:"text"`
}

// lintValues stand in for the values a build provides, so that a spec's
// templates render as they would in a build.
var lintValues = map[string]string{
	"KONTINUOUS_PIPELINE_ID":       "lint",
	"KONTINUOUS_BUILD_ID":          "1",
	"KONTINUOUS_STAGE_ID":          "",
	"KONTINUOUS_BRANCH":            "main",
	"KONTINUOUS_NAMESPACE":         "default",
	"KONTINUOUS_COMMIT":            strings.Repeat("0", 40),
	"KONTINUOUS_URL":               "http://kontinuous.invalid",
	"KONTINUOUS_ARTIFACT_URL":      "http://kontinuous.invalid/api/v1/pipelines/lint/lint/builds/1",
	"KONTINUOUS_INTERNAL_REGISTRY": "registry.invalid",
}

// Lint checks a raw .pipeline.yml as a build would (Load, with stand-in
// KONTINUOUS_* values) and returns every problem found; none means the
// spec is valid. The definition is returned when the spec is valid.
func Lint(raw []byte) (*Definition, []Problem) {
	d, err := Load(raw, lintValues)
	if err == nil {
		return d, nil
	}
	var ve *ValidationError
	if errors.As(err, &ve) {
		out := make([]Problem, 0, len(ve.Problems))
		for _, p := range ve.Problems {
			out = append(out, Problem{Stage: p.Stage, Field: p.Field, Message: p.Reason, Text: p.Error()})
		}
		return nil, out
	}
	return nil, []Problem{{Message: err.Error(), Text: err.Error()}}
}
