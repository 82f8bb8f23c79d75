package spec_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kontinuous/kontinuous/pipeline/spec"
)

// validate parses in (which must parse) and returns Validate's messages.
func validate(t *testing.T, in []byte) []string {
	t.Helper()
	d, err := spec.Parse(in)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	err = d.Validate()
	if err == nil {
		return nil
	}
	return problems(t, err)
}

func TestParseKeepsScalarsAsWritten(t *testing.T) {
	d, err := spec.Parse(withStages(`      - name: 1.10
        type: command
        params: {command: [echo, yes, 010, 1e3, ~, "null"], require: on}
        vars: {GO: 1.10, X: y, ON: yes, N: 010, EMPTY: "", NONE: ~}
`))
	if err != nil {
		t.Fatal(err)
	}
	s := d.Spec.Template.Stages[0]
	if s.Name != "1.10" {
		t.Errorf("Name = %q, want 1.10", s.Name)
	}
	// NONE: ~ is null, read as "".
	want := map[string]string{"GO": "1.10", "X": "y", "ON": "yes", "N": "010", "EMPTY": "", "NONE": ""}
	if diff := cmp.Diff(want, s.Vars); diff != "" {
		t.Errorf("Vars mismatch (-want +got):\n%s", diff)
	}
	wantParams := map[string]any{"command": []any{"echo", "yes", "010", "1e3", nil, "null"}, "require": "on"}
	if diff := cmp.Diff(wantParams, s.Params); diff != "" {
		t.Errorf("Params mismatch (-want +got):\n%s", diff)
	}
}

func TestValidateAcceptsMinimalSpec(t *testing.T) {
	if got := validate(t, withStages("      - {name: Approve, type: wait}\n")); got != nil {
		t.Errorf("problems = %q, want none", got)
	}
}

func TestValidateReportsDocumentProblems(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"missing apiVersion, kind and stages", "metadata: {name: a}\n", []string{
			"apiVersion is required (v1alpha1)",
			"kind is required (Pipeline)",
			"spec.template.stages must list at least one stage",
		}},
		{"wrong apiVersion and kind", "apiVersion: v1\nkind: Deployment\n" + header[len("apiVersion: v1alpha1\nkind: Pipeline\n"):] + "      - {name: a, type: wait}\n", []string{
			`apiVersion must be "v1alpha1", not "v1"`,
			`kind must be "Pipeline", not "Deployment"`,
		}},
		{"bad namespace", "apiVersion: v1alpha1\nkind: Pipeline\nmetadata: {namespace: Prod_1}\nspec: {template: {stages: [{name: a, type: wait}]}}\n", []string{
			`metadata.namespace must be a Kubernetes namespace name (lower-case letters, digits and '-', at most 63), not "Prod_1"`,
		}},
		{"bad labels", "apiVersion: v1alpha1\nkind: Pipeline\nmetadata: {labels: {\"-x\": a, \"Example.com/app\": b, ok: \"has space\"}}\nspec: {selector: {matchLabels: {\"a/b/c\": d}}, template: {metadata: {labels: {" + strings.Repeat("k", 64) + ": v}}, stages: [{name: a, type: wait}]}}\n", []string{
			`metadata.labels["-x"] is not a valid label key (letters, digits, '-', '_' and '.', at most 63)`,
			`metadata.labels["Example.com/app"] has an invalid prefix: a label key is [dns-subdomain/]name`,
			`metadata.labels.ok has an invalid value "has space" (letters, digits, '-', '_' and '.', at most 63)`,
			`spec.selector.matchLabels["a/b/c"] has an invalid prefix: a label key is [dns-subdomain/]name`,
			"spec.template.metadata.labels." + strings.Repeat("k", 64) + ` is not a valid label key (letters, digits, '-', '_' and '.', at most 63)`,
		}},
		{"bad notif", "apiVersion: v1alpha1\nkind: Pipeline\nspec: {template: {notif: [{type: email}, {secrets: [Slack_Creds]}], stages: [{name: a, type: wait}]}}\n", []string{
			`spec.template.notif[0].type must be "slack", not "email"`,
			"spec.template.notif[1].type is required (slack)",
			`spec.template.notif[1].secrets[0] must be a secret name (lower-case letters, digits, '-' and '.'), not "Slack_Creds"`,
		}},
		{"bad template secrets and vars", "apiVersion: v1alpha1\nkind: Pipeline\nspec: {template: {secrets: [ok, \"\", \"../x\"], vars: {1X: a, \"A-B\": b, KONTINUOUS_BRANCH: c, kontinuous_url: d, fine_1: e}, stages: [{name: a, type: wait}]}}\n", []string{
			`spec.template.secrets[1] must be a secret name (lower-case letters, digits, '-' and '.'), not ""`,
			`spec.template.secrets[2] must be a secret name (lower-case letters, digits, '-' and '.'), not "../x"`,
			"spec.template.vars.1X is not a valid variable name (letters, digits and '_', not starting with a digit)",
			"spec.template.vars.A-B is not a valid variable name (letters, digits and '_', not starting with a digit)",
			"spec.template.vars.KONTINUOUS_BRANCH is reserved: names starting with KONTINUOUS_ are set by the server",
			"spec.template.vars.kontinuous_url is reserved: names starting with KONTINUOUS_ are set by the server",
		}},
		{"too many stages", header + strings.Repeat("      - {type: wait}\n", 101), nil}, // checked below
	}
	for _, tt := range tests {
		if tt.want == nil {
			continue
		}
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, validate(t, []byte(tt.in))); diff != "" {
				t.Errorf("problems mismatch (-want +got):\n%s", diff)
			}
		})
	}
	t.Run("too many stages", func(t *testing.T) {
		var b strings.Builder
		b.WriteString(header)
		for i := range 101 {
			b.WriteString("      - {name: s" + string(rune('a'+i%26)) + strings.Repeat("x", i/26) + ", type: wait}\n")
		}
		got := validate(t, []byte(b.String()))
		want := []string{"spec.template.stages must list at most 100 stages, not 101"}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("problems mismatch (-want +got):\n%s", diff)
		}
	})
}

func TestValidateReportsStageProblems(t *testing.T) {
	tests := []struct {
		name   string
		stages string
		want   []string
	}{
		{"missing name and type", "      - {params: {}}\n", []string{
			"spec.template.stages[0]: name is required",
			"spec.template.stages[0]: type is required (one of command, docker_build, docker_publish, deploy, wait)",
		}},
		{"blank name", "      - {name: \"  \", type: wait}\n", []string{
			"spec.template.stages[0]: name is required",
		}},
		{"long name", "      - {name: " + strings.Repeat("n", 101) + ", type: wait}\n", []string{
			"spec.template.stages[0]: name must be at most 100 characters",
		}},
		{"control characters in name", "      - {name: \"a\\tb\", type: wait}\n", []string{
			"spec.template.stages[0] (a\tb): name must not contain control characters",
		}},
		{"unknown type", "      - {name: Lint, type: shell}\n", []string{
			`spec.template.stages[0] (Lint): type "shell" is not a stage type (one of command, docker_build, docker_publish, deploy, wait)`,
		}},
		{"duplicate names", "      - {name: Build, type: wait}\n      - {name: Test, type: wait}\n      - {name: Build, type: wait}\n", []string{
			"spec.template.stages[2] (Build): name is already used by spec.template.stages[0]",
		}},
		{"unknown param", "      - {name: Build, type: docker_build, params: {dockerfile_nmae: x, image: y}}\n", []string{
			"spec.template.stages[0] (Build): params.dockerfile_nmae is not a param of type docker_build (known: dockerfile_path, dockerfile_name, timeout; use vars for environment variables)",
			"spec.template.stages[0] (Build): params.image is not a param of type docker_build (known: dockerfile_path, dockerfile_name, timeout; use vars for environment variables)",
		}},
		{"command without command", "      - {name: Test, type: command, params: {image: golang}}\n", []string{
			"spec.template.stages[0] (Test): params.command is required for type command",
		}},
		{"command without params", "      - {name: Test, type: command}\n", []string{
			"spec.template.stages[0] (Test): params.command is required for type command",
		}},
		{"empty command", "      - {name: Test, type: command, params: {command: []}}\n      - {name: T2, type: command, params: {command: \"  \"}}\n      - {name: T3, type: command, params: {command: [\"\", x]}}\n", []string{
			"spec.template.stages[0] (Test): params.command must not be empty",
			"spec.template.stages[1] (T2): params.command must not be empty",
			"spec.template.stages[2] (T3): params.command[0] must not be empty",
		}},
		{"command of wrong types", "      - {name: Test, type: command, params: {command: [go, [x], {a: b}], args: {a: b}, image: [x], working_dir: [y], dependencies: 3x}}\n", []string{
			"spec.template.stages[0] (Test): params.command[1] must be a string, not a list",
			"spec.template.stages[0] (Test): params.command[2] must be a string, not a mapping",
			"spec.template.stages[0] (Test): params.args must be a list of strings or a string, not a mapping",
			"spec.template.stages[0] (Test): params.image must be a string, not a list",
			"spec.template.stages[0] (Test): params.working_dir must be a string, not a list",
		}},
		{"command paths and image", "      - {name: Test, type: command, params: {command: make, image: \"-v /:/host\", working_dir: ../up, dependencies: [/etc/k8s.yml, a/../../b.yml, ok.yml]}}\n", []string{
			"spec.template.stages[0] (Test): params.image is not a Docker image reference",
			`spec.template.stages[0] (Test): params.working_dir must stay inside the repository, not "../up"`,
			`spec.template.stages[0] (Test): params.dependencies[0] must be a path relative to the repository root, not "/etc/k8s.yml"`,
			`spec.template.stages[0] (Test): params.dependencies[1] must stay inside the repository, not "a/../../b.yml"`,
		}},
		{"bad timeouts", "      - {name: A, type: command, params: {command: x, timeout: 10}}\n      - {name: B, type: wait, params: {timeout: -1m}}\n      - {name: C, type: deploy, params: {deploy_file: a.yml, timeout: 25h}}\n      - {name: D, type: docker_build, params: {timeout: [1m]}}\n      - {name: E, type: docker_build, params: {timeout: 0s}}\n", []string{
			`spec.template.stages[0] (A): params.timeout must be a duration such as "10m" or "1h30m", not "10"`,
			`spec.template.stages[1] (B): params.timeout must be positive, not "-1m"`,
			`spec.template.stages[2] (C): params.timeout must be at most 24h0m0s, not "25h"`,
			`spec.template.stages[3] (D): params.timeout must be a duration such as "10m" or "1h30m", not a list`,
			`spec.template.stages[4] (E): params.timeout must be positive, not "0s"`,
		}},
		{"wait message must be a string", "      - {name: Approve, type: wait, params: {message: [a]}}\n", []string{
			"spec.template.stages[0] (Approve): params.message must be a string, not a list",
		}},
		{"docker_build paths", "      - {name: Build, type: docker_build, params: {dockerfile_path: /abs, dockerfile_name: docker/Dockerfile}}\n", []string{
			`spec.template.stages[0] (Build): params.dockerfile_path must be a path relative to the repository root, not "/abs"`,
			"spec.template.stages[0] (Build): params.dockerfile_name must be a file name, not a path (put the directory in dockerfile_path)",
		}},
		{"docker_publish needs an image name", "      - {name: P1, type: docker_publish, params: {external_registry: quay.io}}\n      - {name: P2, type: docker_publish}\n", []string{
			"spec.template.stages[0] (P1): params.external_image_name is required when external_registry is set",
			"spec.template.stages[1] (P2): params.external_image_name is required for type docker_publish",
		}},
		{"docker_publish bad values", "      - {name: P, type: docker_publish, params: {external_registry: \"quay.io/x\", external_image_name: Org/App, require_credentials: maybe}}\n", []string{
			`spec.template.stages[0] (P): params.require_credentials must be "TRUE" or "FALSE", not "maybe"`,
			"spec.template.stages[0] (P): params.external_registry must be a registry host[:port], e.g. quay.io",
			"spec.template.stages[0] (P): params.external_image_name must be an image repository name such as org/app (lower case, no registry)",
		}},
		{"deploy needs a file or dir", "      - {name: Deploy, type: deploy}\n      - {name: D2, type: deploy, params: {deploy_file: /etc/passwd, deploy_dir: ..}}\n", []string{
			"spec.template.stages[0] (Deploy): params.deploy_file or params.deploy_dir is required for type deploy",
			`spec.template.stages[1] (D2): params.deploy_file must be a path relative to the repository root, not "/etc/passwd"`,
			`spec.template.stages[1] (D2): params.deploy_dir must stay inside the repository, not ".."`,
		}},
		{"stage labels vars secrets artifacts", "      - {name: S, type: wait, labels: {\"a b\": c}, vars: {KONTINUOUS_X: y}, secrets: [UPPER], artifacts: [out/, /tmp/x, ../y]}\n", []string{
			`spec.template.stages[0] (S): labels["a b"] is not a valid label key (letters, digits, '-', '_' and '.', at most 63)`,
			"spec.template.stages[0] (S): vars.KONTINUOUS_X is reserved: names starting with KONTINUOUS_ are set by the server",
			`spec.template.stages[0] (S): secrets[0] must be a secret name (lower-case letters, digits, '-' and '.'), not "UPPER"`,
			`spec.template.stages[0] (S): artifacts[1] must be a path relative to the repository root, not "/tmp/x"`,
			`spec.template.stages[0] (S): artifacts[2] must stay inside the repository, not "../y"`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, validate(t, withStages(tt.stages))); diff != "" {
				t.Errorf("problems mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestValidationErrorJoinsEveryProblem(t *testing.T) {
	d, err := spec.Parse([]byte("kind: Pipeline\n"))
	if err != nil {
		t.Fatal(err)
	}
	err = d.Validate()
	want := "apiVersion is required (v1alpha1); spec.template.stages must list at least one stage"
	if err == nil || err.Error() != want {
		t.Errorf("Validate() = %v, want %q", err, want)
	}
}
