package spec

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v2"
)

// Limits on input sizes.
const (
	// MaxSpecBytes is the largest .pipeline.yml Parse accepts, before or
	// after rendering.
	MaxSpecBytes = 1 << 20
	// MaxRenderBytes is the largest template Render accepts and the most
	// it writes.
	MaxRenderBytes = 4 << 20
)

// The only apiVersion and kind a spec may have.
const (
	APIVersion = "v1alpha1"
	Kind       = "Pipeline"
)

// Stage types.
const (
	TypeCommand       = "command"
	TypeDockerBuild   = "docker_build"
	TypeDockerPublish = "docker_publish"
	TypeDeploy        = "deploy"
	TypeWait          = "wait"
)

// NotifSlack is the only notification type: a Slack message when a build
// ends. The Slack URL, channel and user name come from the secret keys
// slackurl, slackchannel and slackuser unless Notif.Metadata renames them
// (keys url, channel, username).
const NotifSlack = "slack"

// Definition is a parsed .pipeline.yml. Its JSON form (field tags) is the
// YAML's, so it can be marshalled back.
type Definition struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Metadata   Metadata `json:"metadata"`
	Spec       Spec     `json:"spec"`
}

// Metadata names a pipeline or its template. Unknown keys are ignored.
type Metadata struct {
	Name string `json:"name,omitempty"`
	// Namespace is the Kubernetes namespace the spec asks for; the server
	// decides whether it is allowed. Empty: the server's choice.
	Namespace string            `json:"namespace,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
}

// Spec is the body of a pipeline.
type Spec struct {
	Selector Selector `json:"selector"`
	Template Template `json:"template"`
}

// Selector is kept for compatibility with the original format; Kontinuous
// does not use it.
type Selector struct {
	MatchLabels map[string]string `json:"matchLabels,omitempty"`
}

// Template holds what a build runs.
type Template struct {
	Metadata Metadata `json:"metadata"`
	// Notif lists the notifications sent when a build ends.
	Notif []Notif `json:"notif,omitempty"`
	// Secrets names secret sets whose keys become environment variables
	// of every stage.
	Secrets []string `json:"secrets,omitempty"`
	// Vars are environment variables of every stage and template values.
	Vars map[string]string `json:"vars,omitempty"`
	// Stages run in order.
	Stages []Stage `json:"stages"`
}

// Notif is a notification target.
type Notif struct {
	Type string `json:"type"`
	// Secrets names the secret sets holding the target's settings.
	Secrets []string `json:"secrets,omitempty"`
	// Metadata maps setting names (url, channel, username) to the secret
	// keys that hold them.
	Metadata map[string]string `json:"metadata,omitempty"`
}

// Stage is one step of a pipeline. Params is kept as decoded: scalars as
// the strings written, lists as []any, mappings as map[string]any, null as
// nil. The typed accessors Command, DockerBuild, DockerPublish, Deploy, Wait
// and Timeout check and convert it.
type Stage struct {
	Name      string            `json:"name"`
	Type      string            `json:"type"`
	Params    map[string]any    `json:"params,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
	Vars      map[string]string `json:"vars,omitempty"`
	Secrets   []string          `json:"secrets,omitempty"`
	Artifacts []string          `json:"artifacts,omitempty"`
}

// Parse decodes a .pipeline.yml (YAML, or JSON) into a Definition. It checks
// the structure: unknown fields are errors (except inside metadata), so are
// duplicate keys, and a field that must be a string, list or mapping must
// be one. Scalars are read as written: vars: {GO: 1.10, X: y} gives "1.10"
// and "y", not YAML 1.1's number and boolean. It does not check meaning;
// call Validate for that, or use Load. It never panics.
//
// Errors are a *ValidationError listing every problem (errors.Is ErrInvalid),
// or ErrTooLarge when data exceeds MaxSpecBytes.
func Parse(data []byte) (*Definition, error) {
	if len(data) > MaxSpecBytes {
		return nil, fmt.Errorf("%w: %d bytes, the limit is %d", ErrTooLarge, len(data), MaxSpecBytes)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, invalid("the pipeline spec is empty")
	}
	doc, err := decodeYAML(data)
	if err != nil {
		return nil, err
	}
	var d decoder
	def := d.definition(doc)
	if err := d.err(); err != nil {
		return nil, err
	}
	return def, nil
}

// decodeYAML turns YAML into plain values: every scalar as the text
// written (so 1.10, yes, y and on stay "1.10", "yes", "y" and "on"; YAML
// 1.1 would make them numbers and booleans), null as nil, sequences as
// []any, mappings as map[string]any with keys as written. Duplicate keys
// and more than one document are errors.
func decodeYAML(data []byte) (doc any, err error) {
	defer func() {
		// The YAML library is third-party code fed untrusted input; Parse
		// promises not to panic, so a panic in it becomes a parse error.
		if r := recover(); r != nil {
			doc, err = nil, invalid(fmt.Sprintf("the pipeline spec is not valid YAML: %v", r))
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.SetStrict(true)
	var root yamlValue
	switch err := dec.Decode(&root); {
	case errors.Is(err, io.EOF):
		return nil, invalid("the pipeline spec is empty")
	case err != nil:
		return nil, yamlError(err)
	}
	var next yamlValue
	switch err := dec.Decode(&next); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return nil, yamlError(err)
	case next.v != nil:
		return nil, invalid("the pipeline spec must be one YAML document, not several (remove the second ---)")
	}
	return root.v, nil
}

// maxYAMLErrors bounds the YAML type errors reported.
const maxYAMLErrors = 10

// yamlError reports a YAML syntax or type error, keeping the first
// maxYAMLErrors of the latter.
func yamlError(err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return invalid("the pipeline spec is not valid YAML: " + strings.TrimPrefix(err.Error(), "yaml: "))
	}
	var p problems
	for i, msg := range te.Errors {
		if i == maxYAMLErrors {
			p.add("", "", fmt.Sprintf("and %d more YAML errors", len(te.Errors)-i))
			break
		}
		p.add("", "", "the pipeline spec is not valid YAML: "+msg)
	}
	return p.err()
}

// yamlValue decodes any YAML node as decodeYAML describes. yaml.v2 does not
// call UnmarshalYAML for nulls, which leaves v nil.
type yamlValue struct{ v any }

// UnmarshalText implements encoding.TextUnmarshaler: yaml.v2 uses it for
// quoted scalars that read like null ("null", "~"), for which it skips
// UnmarshalYAML.
func (y *yamlValue) UnmarshalText(b []byte) error {
	y.v = string(b)
	return nil
}

// UnmarshalYAML implements yaml.Unmarshaler. It finds the node's kind with
// attempts that fail at once or do not descend, then decodes it once, so
// the error is the node's own and the work is linear.
func (y *yamlValue) UnmarshalYAML(unmarshal func(any) error) error {
	var s string
	if err := unmarshal(&s); err == nil {
		y.v = s
		return nil
	}
	var probe []skip
	if err := unmarshal(&probe); err == nil {
		var seq []yamlValue
		if err := unmarshal(&seq); err != nil {
			return err
		}
		list := make([]any, len(seq))
		for i, e := range seq {
			list[i] = e.v
		}
		y.v = list
		return nil
	}
	var m map[string]yamlValue
	if err := unmarshal(&m); err != nil {
		return err
	}
	obj := make(map[string]any, len(m))
	for k, e := range m {
		obj[k] = e.v
	}
	y.v = obj
	return nil
}

// skip decodes any node into nothing, without descending.
type skip struct{}

// UnmarshalYAML implements yaml.Unmarshaler.
func (skip) UnmarshalYAML(func(any) error) error { return nil }

// UnmarshalText implements encoding.TextUnmarshaler, for the scalars
// yaml.v2 does not hand to UnmarshalYAML (see yamlValue.UnmarshalText).
func (skip) UnmarshalText([]byte) error { return nil }

// decoder walks decoded YAML into a Definition, recording every type error
// with its path.
type decoder struct {
	p problems
}

func (d *decoder) err() error { return d.p.err() }

func (d *decoder) fail(path, reason string) { d.p.add(path, "", reason) }

// fields calls fn for each key of an object, failing unknown keys when
// known is non-nil. A nil value is an absent object.
func (d *decoder) fields(path string, v any, known []string, fn func(key string, v any)) {
	if v == nil {
		return
	}
	m, ok := v.(map[string]any)
	if !ok {
		d.fail(path, "must be a mapping, not "+kindOf(v))
		return
	}
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if k == "" {
			// YAML 1.1 reads ~, null, Null and NULL as null, also as keys.
			d.fail(path, `has an empty or null key (write "NULL" in quotes for a key named NULL)`)
			continue
		}
		if known != nil && !slices.Contains(known, k) {
			d.fail(join(path, k), "is not a known field (known: "+strings.Join(known, ", ")+")")
			continue
		}
		fn(k, m[k])
	}
}

func (d *decoder) definition(v any) *Definition {
	def := &Definition{}
	if _, ok := v.(map[string]any); !ok {
		d.fail("", "the pipeline spec must be a YAML mapping, not "+kindOf(v))
		return def
	}
	d.fields("", v, []string{"apiVersion", "kind", "metadata", "spec"}, func(k string, v any) {
		switch k {
		case "apiVersion":
			def.APIVersion = d.str(k, v)
		case "kind":
			def.Kind = d.str(k, v)
		case "metadata":
			def.Metadata = d.metadata(k, v)
		case "spec":
			def.Spec = d.spec(k, v)
		}
	})
	return def
}

func (d *decoder) metadata(path string, v any) Metadata {
	var m Metadata
	// Lenient: metadata may carry anything (annotations...); only the
	// fields Kontinuous reads are type-checked.
	d.fields(path, v, nil, func(k string, v any) {
		switch k {
		case "name":
			m.Name = d.str(join(path, k), v)
		case "namespace":
			m.Namespace = d.str(join(path, k), v)
		case "labels":
			m.Labels = d.strMap(join(path, k), v)
		}
	})
	return m
}

func (d *decoder) spec(path string, v any) Spec {
	var s Spec
	d.fields(path, v, []string{"selector", "template"}, func(k string, v any) {
		switch k {
		case "selector":
			d.fields(join(path, k), v, []string{"matchLabels"}, func(k2 string, v any) {
				s.Selector.MatchLabels = d.strMap(join(path, k, k2), v)
			})
		case "template":
			s.Template = d.template(join(path, k), v)
		}
	})
	return s
}

func (d *decoder) template(path string, v any) Template {
	var t Template
	d.fields(path, v, []string{"metadata", "notif", "secrets", "vars", "stages"}, func(k string, v any) {
		p := join(path, k)
		switch k {
		case "metadata":
			t.Metadata = d.metadata(p, v)
		case "notif":
			for i, n := range d.list(p, v) {
				t.Notif = append(t.Notif, d.notif(index(p, i), n))
			}
		case "secrets":
			t.Secrets = d.strList(p, v)
		case "vars":
			t.Vars = d.strMap(p, v)
		case "stages":
			for i, s := range d.list(p, v) {
				t.Stages = append(t.Stages, d.stage(index(p, i), s))
			}
		}
	})
	return t
}

func (d *decoder) notif(path string, v any) Notif {
	var n Notif
	if v == nil {
		d.fail(path, "must be a mapping, not null")
		return n
	}
	d.fields(path, v, []string{"type", "secrets", "metadata"}, func(k string, v any) {
		p := join(path, k)
		switch k {
		case "type":
			n.Type = d.str(p, v)
		case "secrets":
			n.Secrets = d.strList(p, v)
		case "metadata":
			n.Metadata = d.strMap(p, v)
		}
	})
	return n
}

func (d *decoder) stage(path string, v any) Stage {
	var s Stage
	if v == nil {
		d.fail(path, "must be a mapping, not null")
		return s
	}
	first := len(d.p.list)
	defer func() {
		for i := first; i < len(d.p.list); i++ {
			d.p.list[i].Stage = s.Name
		}
	}()
	d.fields(path, v, []string{"name", "type", "params", "labels", "vars", "secrets", "artifacts"}, func(k string, v any) {
		p := join(path, k)
		switch k {
		case "name":
			s.Name = d.str(p, v)
		case "type":
			s.Type = d.str(p, v)
		case "params":
			d.fields(p, v, nil, func(k string, v any) {
				if s.Params == nil {
					s.Params = map[string]any{}
				}
				s.Params[k] = v
			})
		case "labels":
			s.Labels = d.strMap(p, v)
		case "vars":
			s.Vars = d.strMap(p, v)
		case "secrets":
			s.Secrets = d.strList(p, v)
		case "artifacts":
			s.Artifacts = d.strList(p, v)
		}
	})
	return s
}

// str accepts a string or null.
func (d *decoder) str(path string, v any) string {
	switch v := v.(type) {
	case nil:
		return ""
	case string:
		return v
	}
	d.fail(path, mustBeString(v))
	return ""
}

// list accepts a sequence or null.
func (d *decoder) list(path string, v any) []any {
	switch v := v.(type) {
	case nil:
		return nil
	case []any:
		return v
	}
	d.fail(path, "must be a list, not "+kindOf(v))
	return nil
}

func (d *decoder) strList(path string, v any) []string {
	var out []string
	for i, e := range d.list(path, v) {
		if s, ok := e.(string); ok {
			out = append(out, s)
		} else {
			d.fail(index(path, i), mustBeString(e))
		}
	}
	return out
}

func (d *decoder) strMap(path string, v any) map[string]string {
	var out map[string]string
	d.fields(path, v, nil, func(k string, v any) {
		s, ok := v.(string)
		if !ok && v != nil { // a null value is "", as for a field
			d.fail(join(path, k), mustBeString(v))
			return
		}
		if out == nil {
			out = map[string]string{}
		}
		out[k] = s
	})
	return out
}

// kindOf names the YAML kind of a decoded value.
func kindOf(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "a string"
	case []any:
		return "a list"
	case map[string]any:
		return "a mapping"
	}
	return fmt.Sprintf("%T", v)
}

func mustBeString(v any) string { return "must be a string, not " + kindOf(v) }

var plainKey = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_-]*$`)

// join appends keys to a field path: "spec" + "template" → "spec.template";
// odd keys are quoted: `vars["a b"]`.
func join(path string, keys ...string) string {
	for _, k := range keys {
		switch {
		case !plainKey.MatchString(k):
			path += "[" + strconv.Quote(k) + "]"
		case path == "":
			path = k
		default:
			path += "." + k
		}
	}
	return path
}

func index(path string, i int) string { return path + "[" + strconv.Itoa(i) + "]" }

func quote(s string) string { return strconv.Quote(s) }
