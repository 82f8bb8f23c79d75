package spec

import (
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// templateLine matches the reason of a template problem: "template line N: ...".
var templateLine = regexp.MustCompile(`^template line (\d+): (.*)$`)

// placeTemplateError gives each template problem of err (which know only
// their line) the field and stage of raw that hold that line, when the
// unrendered YAML shows them, so that the message names the stage and
// field as every other spec error does.
func placeTemplateError(raw []byte, err error) error {
	ve, ok := err.(*ValidationError)
	if !ok {
		return err
	}
	var doc *yaml.Node
	for i, p := range ve.Problems {
		m := templateLine.FindStringSubmatch(p.Reason)
		if m == nil || p.Field != "" {
			continue
		}
		if doc == nil {
			doc = &yaml.Node{}
			if yaml.Unmarshal(raw, doc) != nil {
				return err // not YAML before rendering: the line must do
			}
		}
		line, _ := strconv.Atoi(m[1])
		if field, stage := locate(doc, line); strings.HasPrefix(field, "spec.") || strings.HasPrefix(field, "metadata.") {
			ve.Problems[i] = FieldError{Field: field, Stage: stage,
				Reason: "has a template error (line " + m[1] + "): " + m[2]}
		}
	}
	return ve
}

// locate returns the path of the field on line that holds a template
// (the first, when several do; else the innermost field on the line), and
// the name of the stage it belongs to, if any.
func locate(doc *yaml.Node, line int) (field, stage string) {
	templated := false
	found := func(p, stg string, k, v *yaml.Node) {
		t := strings.Contains(v.Value, "{{") || (k != nil && strings.Contains(k.Value, "{{"))
		if templated || (field != "" && !t) {
			return
		}
		field, stage, templated = p, stg, t
	}
	var walk func(n *yaml.Node, path, stage string)
	walk = func(n *yaml.Node, path, stg string) {
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, path, stg)
			}
		case yaml.MappingNode:
			if isStagePath(path) {
				for i := 0; i+1 < len(n.Content); i += 2 {
					if n.Content[i].Value == "name" && n.Content[i+1].Kind == yaml.ScalarNode {
						stg = n.Content[i+1].Value
					}
				}
			}
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				p := join(path, k.Value)
				if k.Line == line || onLine(v, line) {
					found(p, stg, k, v)
				}
				walk(v, p, stg)
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				p := path + "[" + strconv.Itoa(i) + "]"
				if onLine(c, line) {
					found(p, stg, nil, c)
				}
				walk(c, p, stg)
			}
		}
	}
	walk(doc, "", "")
	return field, stage
}

// onLine reports whether scalar n spans line (block scalars span several).
func onLine(n *yaml.Node, line int) bool {
	if n.Kind != yaml.ScalarNode {
		return false
	}
	last := n.Line
	if n.Style == yaml.LiteralStyle || n.Style == yaml.FoldedStyle {
		last += strings.Count(strings.TrimRight(n.Value, "\n"), "\n") + 1
	}
	return line >= n.Line && line <= last
}

// isStagePath reports whether path is one stage: spec.template.stages[i].
func isStagePath(path string) bool {
	return strings.HasPrefix(path, stagesPath) && strings.Count(path, "]") == 1 && strings.HasSuffix(path, "]")
}
