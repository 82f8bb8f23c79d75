package spec_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kontinuous/kontinuous/pipeline/spec"
)

func TestRenderSubstitutesValues(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
	}{
		{"field", "image: {{.IMAGE}}:{{ .TAG }}", "image: org/app:abc"},
		{"root variable", "{{with .TAG}}{{$.IMAGE}}:{{.}}{{end}}", "org/app:abc"},
		{"if else on comparison", `{{if eq .BRANCH "main"}}prod{{else if ne .BRANCH ""}}dev{{end}}`, "prod"},
		{"boolean functions", `{{if and .TAG (not (eq .TAG "x")) (or .NONE_EMPTY .TAG)}}yes{{end}}`, "yes"},
		{"literal braces", `--format '{{"{{"}}.Id}}'`, "--format '{{.Id}}'"},
		{"comment", "a{{/* note */}}b", "ab"},
		{"trim markers", "a  {{- .TAG -}}  b", "aabcb"},
		{"no actions", "plain: text\n", "plain: text\n"},
		{"empty", "", ""},
	}
	vals := map[string]string{"IMAGE": "org/app", "TAG": "abc", "BRANCH": "main", "NONE_EMPTY": ""}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := spec.Render([]byte(tt.in), vals)
			if err != nil {
				t.Fatalf("Render: %v", err)
			}
			if string(got) != tt.want {
				t.Errorf("Render = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestRenderRefusesWhatItCannotBound(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
	}{
		{"missing key names key and line", "a: 1\nb: {{.NOPE}}\n",
			`template line 2: no value named "NOPE" (templates see the vars and the KONTINUOUS_* values)`},
		{"no env function", "home: {{env \"HOME\"}}\n", `template line 1: function "env" not defined`},
		{"no sprig", "x: {{ .A | upper }}\n", `template line 1: function "upper" not defined`},
		{"range", "{{range 1000000000}}{{end}}", "template line 1: {{range}} is not allowed"},
		{"range over values", "x\n{{range .}}{{range .}}{{end}}{{end}}", "template line 2: {{range}} is not allowed"},
		{"variables", "{{$a := .A}}{{$a}}", "template line 1: declaring variables is not allowed"},
		{"printf", `{{printf "%01000000d" 0}}`, `template line 1: function "printf" is not allowed`},
		{"nested print", `{{if (print .A)}}{{end}}`, `template line 1: function "print" is not allowed`},
		{"call", `{{call .A}}`, `template line 1: function "call" is not allowed`},
		{"index", `{{index . "A"}}`, `template line 1: function "index" is not allowed`},
		{"js escaper", `{{js .A}}`, `template line 1: function "js" is not allowed`},
		{"define", `{{define "x"}}a{{end}}{{template "x"}}`, "template: {{define}} and {{block}} are not allowed"},
		{"block", `{{block "x" .}}a{{end}}`, "template: {{define}} and {{block}} are not allowed"},
		{"syntax error", "{{.A", "template line 1: unclosed action"},
		{"field of a string", "{{.A.B}}", "template line 1: at <.A.B>: can't evaluate field B in type string"},
		{"every check at once", "{{range .}}{{end}}\n{{printf \"x\"}}", "template line 1: {{range}} is not allowed; template line 2: function \"printf\" is not allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := spec.Render([]byte(tt.in), map[string]string{"A": "a"})
			if err == nil {
				t.Fatal("Render succeeded, want an error")
			}
			if !errors.Is(err, spec.ErrInvalid) || err.Error() != tt.want {
				t.Errorf("Render error = %q, want %q", err, tt.want)
			}
		})
	}
}

func TestRenderCapsOutput(t *testing.T) {
	// 1000 actions, each expanding to 8 KiB: 8 MiB if unbounded.
	in := []byte(strings.Repeat("{{.A}}", 1000))
	_, err := spec.Render(in, map[string]string{"A": strings.Repeat("x", 8<<10)})
	if !errors.Is(err, spec.ErrTooLarge) {
		t.Errorf("Render error = %v, want ErrTooLarge", err)
	}
	_, err = spec.Render(make([]byte, spec.MaxRenderBytes+1), nil)
	if !errors.Is(err, spec.ErrTooLarge) {
		t.Errorf("Render of an oversized template: error = %v, want ErrTooLarge", err)
	}
}

func TestTemplateValuesMergeAndAlias(t *testing.T) {
	got := spec.TemplateValues(
		map[string]string{"KONTINUOUS_BRANCH": "main", "KONTINUOUS_URL": "http://k", "KONTINUOUS_": "odd", "SERVER_VAR": "server", "SHARED": "server"},
		map[string]string{"SHARED": "spec", "URL": "mine", "KONTINUOUS_BRANCH": "forged"},
	)
	want := map[string]string{
		"KONTINUOUS_BRANCH": "main", // vars cannot replace server values
		"KONTINUOUS_URL":    "http://k",
		"KONTINUOUS_":       "odd",
		"SERVER_VAR":        "server",
		"SHARED":            "spec", // the spec's vars override server-side vars
		"URL":               "mine", // a var wins over the short alias
		"BRANCH":            "main", // short alias of KONTINUOUS_BRANCH
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("TemplateValues mismatch (-want +got):\n%s", diff)
	}
}

func TestLoadRendersWithVarsAndServerValues(t *testing.T) {
	d, err := spec.Load(readTestdata(t, "templated.yml"), values)
	if err != nil {
		t.Fatal(err)
	}
	wantVars := map[string]string{"REGISTRY": "quay.io", "IMAGE": "quay.io/org/app", "TAG": "abc123"}
	if diff := cmp.Diff(wantVars, d.Spec.Template.Vars); diff != "" {
		t.Errorf("Vars mismatch (-want +got):\n%s", diff)
	}
	var names []string
	for _, s := range d.Spec.Template.Stages {
		names = append(names, s.Name)
	}
	if diff := cmp.Diff([]string{"Test", "Publish main", "Deploy", "Echo"}, names); diff != "" {
		t.Errorf("stage names mismatch (-want +got):\n%s", diff)
	}
	c, err := d.Spec.Template.Stages[3].Command()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"echo", "quay.io/org/app:abc123", "{{.Id}}"}, c.Argv()); diff != "" {
		t.Errorf("Argv mismatch (-want +got):\n%s", diff)
	}

	// On another branch the {{if}} drops the Deploy stage.
	other := map[string]string{"KONTINUOUS_BRANCH": "dev", "KONTINUOUS_COMMIT": "def"}
	d, err = spec.Load(readTestdata(t, "templated.yml"), other)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(d.Spec.Template.Stages); n != 3 {
		t.Errorf("stages on dev = %d, want 3", n)
	}
}

func TestLoadReportsTemplateAndSpecProblems(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
	}{
		{"missing value", header + "      - {name: \"{{.NOPE}}\", type: wait}\n",
			`spec.template.stages[0] ({{.NOPE}}): name has a template error (line 7): no value named "NOPE" (templates see the vars and the KONTINUOUS_* values)`},
		{"env is not available", header + "      - {name: \"{{env \\\"AUTH_SECRET\\\"}}\", type: wait}\n",
			`spec.template.stages[0] ({{env "AUTH_SECRET"}}): name has a template error (line 7): function "env" not defined`},
		{"stage vars are not template values", header + "      - {name: \"{{.X}}\", type: wait, vars: {X: y}}\n",
			`spec.template.stages[0] ({{.X}}): name has a template error (line 7): no value named "X" (templates see the vars and the KONTINUOUS_* values)`},
		{"names the stage and field of a param", header + "      - name: leak\n        type: command\n        params:\n          command: [\"echo\", \"{{env \\\"HOME\\\"}}\"]\n",
			`spec.template.stages[0] (leak): params.command[1] has a template error (line 10): function "env" not defined`},
		{"in a block scalar", header + "      - name: script\n        type: command\n        params:\n          command:\n            - sh\n            - -c\n            - |\n              echo one\n              echo {{.MISSING}}\n",
			`spec.template.stages[0] (script): params.command[2] has a template error (line 15): no value named "MISSING" (templates see the vars and the KONTINUOUS_* values)`},
		{"not YAML before rendering: the line", "{{.KONTINUOUS_BRANCH}}: {{.NOPE}}\n",
			`template line 1: no value named "NOPE" (templates see the vars and the KONTINUOUS_* values)`},
		{"rendered spec validated", header + "      - {name: \"{{.KONTINUOUS_BRANCH}}\", type: \"{{.BRANCH}}\"}\n",
			`spec.template.stages[0] (main): type "main" is not a stage type (one of command, docker_build, docker_publish, deploy, wait)`},
		{"rendered spec parsed", "{{.KONTINUOUS_BRANCH}}: [\n", "the pipeline spec is not valid YAML: line 1: did not find expected node content"},
		{"vars in a cycle", "apiVersion: v1alpha1\nkind: Pipeline\nspec:\n  template:\n    vars: {A: \"x{{.B}}\", B: \"y{{.A}}\"}\n    stages: [{name: a, type: wait}]\n",
			"spec.template.vars.A refers to other vars in a cycle or too deeply to resolve; spec.template.vars.B refers to other vars in a cycle or too deeply to resolve"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := spec.Load([]byte(tt.in), values)
			if !errors.Is(err, spec.ErrInvalid) || err.Error() != tt.want {
				t.Errorf("Load error = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestLoadResolvesVarsReferringToVars(t *testing.T) {
	in := "apiVersion: v1alpha1\nkind: Pipeline\nspec:\n  template:\n" +
		"    vars: {A: \"{{.B}}-a\", B: \"{{.C}}-b\", C: \"{{.KONTINUOUS_COMMIT}}\"}\n" +
		"    stages: [{name: \"{{.A}}\", type: wait}]\n"
	d, err := spec.Load([]byte(in), values)
	if err != nil {
		t.Fatal(err)
	}
	if got := d.Spec.Template.Stages[0].Name; got != "abc123-b-a" {
		t.Errorf("stage name = %q, want abc123-b-a", got)
	}
}
