package spec

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"text/template"
	"text/template/parse"
)

// templateName appears in text/template's messages, which are rewritten to
// "template line N: ...".
const templateName = "spec"

// allowedFuncs are the text/template builtins a template may call. The
// rest are refused: print/printf/println and the escapers can blow up
// output through nesting, call and index serve no purpose on string values.
// No function reaches the environment, files or the network.
var allowedFuncs = map[string]bool{
	"and": true, "or": true, "not": true,
	"eq": true, "ne": true, "lt": true, "le": true, "gt": true, "ge": true,
}

// errOutputLimit is returned by limitedBuffer when full.
var errOutputLimit = errors.New("output limit reached")

// Render expands the Go template in data with values and returns the
// result. values is all a template sees: {{.NAME}} is values["NAME"] and
// a name that is not there is an error naming it and its line. There is no
// env function, nor any other way to read the environment, files or the
// network (see TemplateValues for the values Load provides).
//
// Templates are a bounded subset of text/template: text, {{.NAME}},
// {{$.NAME}}, string/number/boolean literals, comments, parentheses and
// pipes, {{if}}/{{else}}/{{with}}, and the functions and, or, not, eq, ne,
// lt, le, gt, ge. Not allowed: {{range}}, {{define}}/{{template}}/{{block}},
// variables ({{$x := ...}}) and the other builtins. So rendering takes
// time linear in the template, and the output is capped at MaxRenderBytes
// (ErrTooLarge); the input too.
//
// To keep "{{" literally, write {{"{{"}}, e.g. --format '{{"{{"}}.Id}}'.
func Render(data []byte, values map[string]string) ([]byte, error) {
	return render(data, values, "error")
}

// render is Render with a missingkey option: "error" or "zero".
func render(data []byte, values map[string]string, missingkey string) ([]byte, error) {
	if len(data) > MaxRenderBytes {
		return nil, fmt.Errorf("%w: template is %d bytes, the limit is %d", ErrTooLarge, len(data), MaxRenderBytes)
	}
	t, err := template.New(templateName).Option("missingkey=" + missingkey).Parse(string(data))
	if err != nil {
		return nil, templateError(err)
	}
	if err := checkTemplate(t); err != nil {
		return nil, err
	}
	if values == nil {
		values = map[string]string{}
	}
	out := &limitedBuffer{max: MaxRenderBytes}
	if err := t.Execute(out, values); err != nil {
		if errors.Is(err, errOutputLimit) {
			return nil, fmt.Errorf("%w: rendered output exceeds %d bytes", ErrTooLarge, MaxRenderBytes)
		}
		return nil, templateError(err)
	}
	return out.buf.Bytes(), nil
}

var (
	// text/template messages: "template: spec:3:14: executing "spec" at <.FOO>: ..."
	// or "template: spec:3: function "env" not defined".
	tmplPos    = regexp.MustCompile(`^template: ` + templateName + `:(\d+)(?::\d+)?: (?:executing "` + templateName + `" at <([^>]*)>: )?(.*)$`)
	missingKey = regexp.MustCompile(`^map has no entry for key "(.*)"$`)
	oneLine    = strings.NewReplacer("\n", " ")
)

// templateError turns a text/template error into a *ValidationError that
// names the line.
func templateError(err error) error {
	msg := oneLine.Replace(err.Error())
	m := tmplPos.FindStringSubmatch(msg)
	if m == nil {
		return invalid("template: " + strings.TrimPrefix(msg, "template: "))
	}
	line, at, reason := m[1], m[2], m[3]
	if k := missingKey.FindStringSubmatch(reason); k != nil {
		reason = "no value named " + quote(k[1]) + " (templates see the vars and the KONTINUOUS_* values)"
	} else if at != "" {
		reason = "at <" + at + ">: " + reason
	}
	return invalid("template line " + line + ": " + reason)
}

// checkTemplate refuses the parts of text/template that make rendering
// time or output unbounded, and every function but allowedFuncs.
func checkTemplate(t *template.Template) error {
	if len(t.Templates()) > 1 {
		return invalid("template: {{define}} and {{block}} are not allowed")
	}
	if t.Tree == nil || t.Root == nil {
		return nil
	}
	c := &checker{tree: t.Tree}
	c.node(t.Root)
	return c.p.err()
}

type checker struct {
	tree *parse.Tree
	p    problems
}

func (c *checker) fail(n parse.Node, what string) {
	loc, _ := c.tree.ErrorContext(n) // "spec:3:14"; the context snippet is not needed
	line := "?"
	if parts := strings.Split(loc, ":"); len(parts) >= 2 {
		line = parts[1]
	}
	c.p.add("", "", "template line "+line+": "+what+" is not allowed")
}

func (c *checker) node(n parse.Node) {
	switch n := n.(type) {
	case *parse.ListNode:
		if n == nil {
			return
		}
		for _, e := range n.Nodes {
			c.node(e)
		}
	case *parse.TextNode, *parse.CommentNode:
	case *parse.ActionNode:
		c.pipe(n.Pipe)
	case *parse.IfNode:
		c.pipe(n.Pipe)
		c.node(n.List)
		c.node(n.ElseList)
	case *parse.WithNode:
		c.pipe(n.Pipe)
		c.node(n.List)
		c.node(n.ElseList)
	case *parse.RangeNode:
		c.fail(n, "{{range}}")
	case *parse.TemplateNode:
		c.fail(n, "{{template}}")
	default:
		c.fail(n, fmt.Sprintf("%q", n.String()))
	}
}

func (c *checker) pipe(p *parse.PipeNode) {
	if p == nil {
		return
	}
	if len(p.Decl) > 0 {
		c.fail(p, "declaring variables")
		return
	}
	for _, cmd := range p.Cmds {
		for _, a := range cmd.Args {
			c.arg(a)
		}
	}
}

func (c *checker) arg(n parse.Node) {
	switch n := n.(type) {
	case *parse.FieldNode, *parse.DotNode, *parse.StringNode, *parse.NumberNode,
		*parse.BoolNode, *parse.NilNode, *parse.VariableNode:
		// Without declarations the only variable is $, the values.
	case *parse.IdentifierNode:
		if !allowedFuncs[n.Ident] {
			c.fail(n, "function "+quote(n.Ident))
		}
	case *parse.PipeNode:
		c.pipe(n)
	case *parse.ChainNode:
		c.arg(n.Node)
	default:
		c.fail(n, fmt.Sprintf("%q", n.String()))
	}
}

// limitedBuffer is a bytes.Buffer that refuses to grow past max.
type limitedBuffer struct {
	buf bytes.Buffer
	max int
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if b.buf.Len()+len(p) > b.max {
		return 0, errOutputLimit
	}
	return b.buf.Write(p)
}
