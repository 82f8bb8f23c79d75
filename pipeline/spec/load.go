package spec

import (
	"bytes"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// maxVarPasses bounds the renders Load makes to resolve vars that refer
// to other vars.
const maxVarPasses = 4

// Load turns a raw .pipeline.yml into a valid Definition: the whole file is
// a template (as in the original Kontinuous), rendered with Render, then
// parsed with Parse and checked with Validate.
//
// values holds what the server provides: the KONTINUOUS_* values
// (KONTINUOUS_PIPELINE_ID, KONTINUOUS_BUILD_ID, KONTINUOUS_STAGE_ID,
// KONTINUOUS_BRANCH, KONTINUOUS_NAMESPACE, KONTINUOUS_COMMIT,
// KONTINUOUS_URL, KONTINUOUS_ARTIFACT_URL, KONTINUOUS_INTERNAL_REGISTRY)
// and any server-side vars. The template sees TemplateValues(values,
// spec.template.vars): a template may use the spec's own vars, whose
// values may in turn use the KONTINUOUS_* values and other vars (to a
// depth of a few references; a cycle is an error). Stage vars are not
// template values of the spec.
//
// Errors are a *ValidationError (errors.Is ErrInvalid) listing every
// problem, or ErrTooLarge.
func Load(raw []byte, values map[string]string) (*Definition, error) {
	if len(raw) > MaxSpecBytes {
		return nil, fmt.Errorf("%w: %d bytes, the limit is %d", ErrTooLarge, len(raw), MaxSpecBytes)
	}
	out := raw
	var vars map[string]string
	if bytes.Contains(raw, []byte("{{")) { // else rendering changes nothing
		vars = specVars(raw, values)
		var err error
		if out, err = Render(raw, TemplateValues(values, vars)); err != nil {
			return nil, placeTemplateError(raw, err)
		}
	}
	d, err := Parse(out)
	if err != nil {
		return nil, err
	}
	if err := d.Validate(); err != nil {
		return nil, err
	}
	// The vars used as template values must be the vars the spec ends up
	// with; they differ only when vars refer to each other too deeply.
	var p problems
	for _, k := range sortedKeys(d.Spec.Template.Vars) {
		if v, ok := vars[k]; ok && v != d.Spec.Template.Vars[k] {
			p.add(join("spec.template.vars", k), "", "refers to other vars in a cycle or too deeply to resolve")
		}
	}
	if err := p.err(); err != nil {
		return nil, err
	}
	return d, nil
}

// specVars finds spec.template.vars as they render: each pass renders the
// spec leniently (unknown names are empty) with the vars of the previous
// pass, until they stop changing. Any failure ends the search; the strict
// render that follows reports it.
func specVars(raw []byte, values map[string]string) map[string]string {
	var vars map[string]string
	for range maxVarPasses {
		out, err := render(raw, TemplateValues(values, vars), "zero")
		if err != nil {
			return vars
		}
		d, err := Parse(out)
		if err != nil {
			return vars
		}
		next := d.Spec.Template.Vars
		if maps.Equal(next, vars) {
			break
		}
		vars = next
	}
	return vars
}

// TemplateValues returns the values templates see: values (the server's
// KONTINUOUS_* values and server-side vars), then vars (the spec's, or a
// stage's effective vars) overriding any name not starting with
// KONTINUOUS_, then, for compatibility with the original Kontinuous, each
// KONTINUOUS_NAME also as NAME ({{.BRANCH}}, {{.PIPELINE_ID}}) where no
// value of that name exists. Use it to render deploy files as Load renders
// the spec. The inputs are not modified.
func TemplateValues(values, vars map[string]string) map[string]string {
	out := make(map[string]string, len(values)+len(vars))
	maps.Copy(out, values)
	for k, v := range vars {
		if !strings.HasPrefix(k, reservedPrefix) {
			out[k] = v
		}
	}
	for k, v := range values {
		if short, ok := strings.CutPrefix(k, reservedPrefix); ok && short != "" {
			if _, taken := out[short]; !taken {
				out[short] = v
			}
		}
	}
	return out
}

// Namespace returns the Kubernetes namespace the spec asks for
// (metadata.namespace), or "" when it names none. The server decides
// whether it is allowed and what "" means.
func (d *Definition) Namespace() string { return d.Metadata.Namespace }

// StageVars returns the variables of stage i: the template's vars
// overridden by the stage's, in a new map. It panics if i is out of range,
// like indexing the stages.
func (d *Definition) StageVars(i int) map[string]string {
	s := d.Spec.Template.Stages[i]
	out := make(map[string]string, len(d.Spec.Template.Vars)+len(s.Vars))
	maps.Copy(out, d.Spec.Template.Vars)
	maps.Copy(out, s.Vars)
	return out
}

// StageSecrets returns the secret sets of stage i, each once, in the
// order their keys apply (a later set's key overrides an earlier one's):
// the template's secrets, then the stage's, so the stage's win. It panics
// if i is out of range, like indexing the stages.
func (d *Definition) StageSecrets(i int) []string {
	s := d.Spec.Template.Stages[i]
	var out []string
	for _, name := range d.Spec.Template.Secrets {
		if !slices.Contains(s.Secrets, name) && !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	for _, name := range s.Secrets {
		if !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	return out
}
