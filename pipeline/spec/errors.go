package spec

import (
	"errors"
	"strings"
)

// Sentinels for errors.Is. Every error this package returns is one of them
// (wrapped) and its message is meant for the person who wrote the spec: it
// names the field or template line and never contains secret values (specs
// and template values are not secret).
var (
	// ErrInvalid: the spec or template is malformed. The error is a
	// *ValidationError listing every problem found.
	ErrInvalid = errors.New("invalid pipeline spec")
	// ErrTooLarge: the spec, a template or its rendered output exceeds
	// MaxSpecBytes or MaxRenderBytes.
	ErrTooLarge = errors.New("pipeline spec too large")
)

// FieldError is one problem in a spec.
type FieldError struct {
	// Field is the path of the offending field from the document root, in
	// the spelling of the YAML, e.g. "spec.template.stages[1].params.command"
	// (stage indexes count from 0). It is relative to the stage ("params.command")
	// in errors from Stage accessors, and empty for problems with the
	// document as a whole or with a template.
	Field string
	// Stage is the name of the stage the field belongs to, if any.
	Stage string
	// Reason says what is wrong. It reads after the field name:
	// "is required for type command".
	Reason string
}

const stagesPath = "spec.template.stages["

// Error formats the problem as
// "spec.template.stages[1] (Build): params.command is required for type command".
func (e FieldError) Error() string {
	field := e.Field
	var head string
	switch {
	case strings.HasPrefix(field, stagesPath):
		if j := strings.IndexByte(field, ']'); j > 0 {
			head, field = field[:j+1], strings.TrimPrefix(field[j+1:], ".")
			if e.Stage != "" {
				head += " (" + e.Stage + ")"
			}
		}
	case e.Stage != "":
		head = "stage " + quote(e.Stage)
	}
	switch {
	case head == "":
		return strings.TrimPrefix(field+" "+e.Reason, " ")
	case field == "":
		return head + " " + e.Reason
	}
	return head + ": " + field + " " + e.Reason
}

// ValidationError lists every problem found in a spec. It matches
// ErrInvalid with errors.Is.
type ValidationError struct {
	Problems []FieldError
}

// Error joins the problems with "; ".
func (e *ValidationError) Error() string {
	msgs := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		msgs[i] = p.Error()
	}
	return strings.Join(msgs, "; ")
}

// Unwrap makes errors.Is(err, ErrInvalid) true.
func (e *ValidationError) Unwrap() error { return ErrInvalid }

// problems collects FieldErrors.
type problems struct {
	list []FieldError
}

func (p *problems) add(field, stage, reason string) {
	p.list = append(p.list, FieldError{Field: field, Stage: stage, Reason: reason})
}

// err returns nil or a *ValidationError; never a typed nil.
func (p *problems) err() error {
	if len(p.list) == 0 {
		return nil
	}
	return &ValidationError{Problems: p.list}
}

// invalid returns a *ValidationError with one document-level problem.
func invalid(reason string) error {
	return &ValidationError{Problems: []FieldError{{Reason: reason}}}
}
