package spec_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"sigs.k8s.io/yaml"

	"github.com/kontinuous/kontinuous/pipeline/spec"
)

// values is what the server would pass to Load.
var values = map[string]string{
	"KONTINUOUS_PIPELINE_ID":       "p-1",
	"KONTINUOUS_BUILD_ID":          "7",
	"KONTINUOUS_BRANCH":            "main",
	"KONTINUOUS_COMMIT":            "abc123",
	"KONTINUOUS_NAMESPACE":         "default",
	"KONTINUOUS_URL":               "http://127.0.0.1:3005",
	"KONTINUOUS_ARTIFACT_URL":      "",
	"KONTINUOUS_INTERNAL_REGISTRY": "registry.local:5000",
}

// header is a valid spec up to its stages list.
const header = `apiVersion: v1alpha1
kind: Pipeline
metadata: {name: app}
spec:
  template:
    stages:
`

// withStages returns a spec whose stages are the given YAML list items
// (already indented by 6 spaces).
func withStages(stages string) []byte { return []byte(header + stages) }

func readTestdata(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// problems returns the messages of a *ValidationError, failing otherwise.
func problems(t *testing.T, err error) []string {
	t.Helper()
	var ve *spec.ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("error = %v (%T), want a *spec.ValidationError", err, err)
	}
	if !errors.Is(err, spec.ErrInvalid) {
		t.Errorf("errors.Is(%v, ErrInvalid) = false", err)
	}
	var msgs []string
	for _, p := range ve.Problems {
		msgs = append(msgs, p.Error())
	}
	return msgs
}

func TestLoadAcceptsExampleSpecs(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.yml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no example specs: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			d, err := spec.Load(readTestdata(t, filepath.Base(f)), values)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			for i, s := range d.Spec.Template.Stages {
				var err error
				switch s.Type {
				case spec.TypeCommand:
					_, err = s.Command()
				case spec.TypeDockerBuild:
					_, err = s.DockerBuild()
				case spec.TypeDockerPublish:
					_, err = s.DockerPublish()
				case spec.TypeDeploy:
					_, err = s.Deploy()
				case spec.TypeWait:
					_, err = s.Wait()
				}
				if err != nil {
					t.Errorf("stage %d accessor: %v", i, err)
				}
			}
		})
	}
}

func TestParseReadsEveryField(t *testing.T) {
	d, err := spec.Parse(readTestdata(t, "full.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Validate(); err != nil {
		t.Fatal(err)
	}
	want := &spec.Definition{
		APIVersion: "v1alpha1",
		Kind:       "Pipeline",
		Metadata:   spec.Metadata{Name: "my-app", Namespace: "acaleph"},
		Spec: spec.Spec{
			Selector: spec.Selector{MatchLabels: map[string]string{"app": "my-app"}},
			Template: spec.Template{
				Metadata: spec.Metadata{Name: "my-app", Labels: map[string]string{"app": "my-app"}},
				Notif: []spec.Notif{{
					Type:     "slack",
					Secrets:  []string{"slack-creds"},
					Metadata: map[string]string{"url": "slackurl", "channel": "slackchannel", "username": "slackuser"},
				}},
				Secrets: []string{"deploy-creds"},
				Vars:    map[string]string{"FOO": "bar", "GO_VERSION": "1.22"},
				Stages: []spec.Stage{
					{
						Name: "Test", Type: "command",
						Params: map[string]any{
							"command":      []any{"go", "test", "./..."},
							"args":         []any{"-race"},
							"image":        "golang:1.22",
							"working_dir":  "/src",
							"dependencies": []any{"k8s/redis.yml"},
							"timeout":      "10m",
						},
						Vars:      map[string]string{"X": "y", "FOO": "baz"},
						Secrets:   []string{"other"},
						Labels:    map[string]string{"tier": "test"},
						Artifacts: []string{"coverage.out"},
					},
					{Name: "Build", Type: "docker_build", Params: map[string]any{"dockerfile_path": ".", "dockerfile_name": "Dockerfile"}},
					{Name: "Publish", Type: "docker_publish", Params: map[string]any{"external_registry": "quay.io", "external_image_name": "org/app", "require_credentials": "TRUE"}},
					{Name: "Approve", Type: "wait", Params: map[string]any{"message": "Deploy to prod?"}},
					{Name: "Deploy", Type: "deploy", Params: map[string]any{"deploy_file": "k8s/app.yml", "deploy_dir": "k8s"}},
				},
			},
		},
	}
	if diff := cmp.Diff(want, d); diff != "" {
		t.Errorf("Parse(full.yml) mismatch (-want +got):\n%s", diff)
	}
	if got := d.Namespace(); got != "acaleph" {
		t.Errorf("Namespace() = %q, want acaleph", got)
	}

	cmd, err := d.Spec.Template.Stages[0].Command()
	if err != nil {
		t.Fatal(err)
	}
	wantCmd := spec.CommandParams{
		Command: []string{"go", "test", "./..."}, Args: []string{"-race"},
		Image: "golang:1.22", WorkingDir: "/src", Dependencies: []string{"k8s/redis.yml"},
		Timeout: 10 * time.Minute,
	}
	if diff := cmp.Diff(wantCmd, cmd); diff != "" {
		t.Errorf("Command() mismatch (-want +got):\n%s", diff)
	}
	if got, want := cmd.Argv(), []string{"go", "test", "./...", "-race"}; !slices.Equal(got, want) {
		t.Errorf("Argv() = %q, want %q", got, want)
	}
	pub, err := d.Spec.Template.Stages[2].DockerPublish()
	if err != nil {
		t.Fatal(err)
	}
	if want := (spec.DockerPublishParams{ExternalRegistry: "quay.io", ExternalImageName: "org/app", RequireCredentials: true}); pub != want {
		t.Errorf("DockerPublish() = %+v, want %+v", pub, want)
	}
	w, err := d.Spec.Template.Stages[3].Wait()
	if err != nil || w.Message != "Deploy to prod?" {
		t.Errorf("Wait() = %+v, %v", w, err)
	}
	dep, err := d.Spec.Template.Stages[4].Deploy()
	if err != nil || dep != (spec.DeployParams{DeployFile: "k8s/app.yml", DeployDir: "k8s"}) {
		t.Errorf("Deploy() = %+v, %v", dep, err)
	}
}

func TestParseRoundTripsThroughJSONTags(t *testing.T) {
	d, err := spec.Parse(readTestdata(t, "full.yml"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := yaml.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	d2, err := spec.Parse(out)
	if err != nil {
		t.Fatalf("Parse(Marshal(d)): %v\n%s", err, out)
	}
	if diff := cmp.Diff(d, d2); diff != "" {
		t.Errorf("round trip mismatch (-first +second):\n%s", diff)
	}
}

func TestParseReportsStructureAndTypeErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string // nil: Parse succeeds
	}{
		{"empty document", "  \n", []string{"the pipeline spec is empty"}},
		{"not a mapping", "- a\n- b\n", []string{"the pipeline spec must be a YAML mapping, not a list"}},
		{"unknown top-level field", "apiVersion: v1alpha1\nkind: Pipeline\nspecs: {}\n",
			[]string{"specs is not a known field (known: apiVersion, kind, metadata, spec)"}},
		{"unknown template field", "spec: {template: {stage: []}}\n",
			[]string{"spec.template.stage is not a known field (known: metadata, notif, secrets, vars, stages)"}},
		{"unknown stage field", "spec: {template: {stages: [{name: a, type: wait, parms: {}}]}}\n",
			[]string{"spec.template.stages[0] (a): parms is not a known field (known: name, type, params, labels, vars, secrets, artifacts)"}},
		{"unknown metadata field is fine", "metadata: {name: a, annotations: {x: y}, generation: 3}\n", nil},
		{"scalars are read as written", "spec: {template: {vars: {GO: 1.10, X: y, ON: yes, N: 010}}}\n", nil},
		{"stages not a list", "spec: {template: {stages: {name: a}}}\n", []string{"spec.template.stages must be a list, not a mapping"}},
		{"null stage", "spec: {template: {stages: [~]}}\n", []string{"spec.template.stages[0] must be a mapping, not null"}},
		{"stage is a string", "spec: {template: {stages: [build]}}\n", []string{"spec.template.stages[0] must be a mapping, not a string"}},
		{"secret not a string", "spec: {template: {secrets: [a, {b: c}]}}\n", []string{"spec.template.secrets[1] must be a string, not a mapping"}},
		{"params not a mapping", "spec: {template: {stages: [{name: a, type: wait, params: [x]}]}}\n",
			[]string{"spec.template.stages[0] (a): params must be a mapping, not a list"}},
		{"label value not a string", "metadata: {labels: {v: [2]}}\n",
			[]string{`metadata.labels.v must be a string, not a list`}},
		{"null key", "spec: {template: {vars: {NULL: a}}}\n",
			[]string{`spec.template.vars has an empty or null key (write "NULL" in quotes for a key named NULL)`}},
		{"odd key is quoted in path", "spec: {template: {vars: {\"a b\": {}}}}\n",
			[]string{`spec.template.vars["a b"] must be a string, not a mapping`}},
		{"every problem at once", "kinds: x\nspec: {template: {vars: [a], stages: [1, {name: b, type: [x]}]}}\n", []string{
			"kinds is not a known field (known: apiVersion, kind, metadata, spec)",
			"spec.template.stages[0] must be a mapping, not a string",
			"spec.template.stages[1] (b): type must be a string, not a list",
			"spec.template.vars must be a mapping, not a list",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := spec.Parse([]byte(tt.in))
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Parse succeeded, want an error")
			}
			got := problems(t, err)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("problems mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseReportsYAMLErrors(t *testing.T) {
	tests := map[string]string{
		"syntax error":         "apiVersion: v1alpha1\n  kind: [\n",
		"duplicate keys":       "kind: Pipeline\nkind: Pipeline\n",
		"unquoted {{ action}}": "spec: {template: {vars: {A: {{.X}}}}}\n",
		"deep bad key":         strings.Repeat("[", 500) + "{? [a] : b}" + strings.Repeat("]", 500),
	}
	for name, in := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := spec.Parse([]byte(in))
			got := problems(t, err)
			// The library's wording is not ours to pin; the prefix is.
			if len(got) != 1 || !strings.HasPrefix(got[0], "the pipeline spec is not valid YAML: ") {
				t.Errorf("problems = %q, want one YAML error", got)
			}
		})
	}
}

func TestParseReportsFirstYAMLErrorsOnly(t *testing.T) {
	_, err := spec.Parse([]byte("a: [" + strings.Repeat("{? [a] : b}, ", 25) + "]\n"))
	got := problems(t, err)
	if len(got) != 11 || got[10] != "and 15 more YAML errors" {
		t.Errorf("problems = %q, want 10 and a count of the rest", got)
	}
	for _, p := range got[:10] {
		if p != "the pipeline spec is not valid YAML: line 1: cannot unmarshal !!seq into string" {
			t.Errorf("problem = %q, want the key's own error", p)
		}
	}
}

func TestParseRefusesOversizedSpec(t *testing.T) {
	big := append(withStages("      - {name: a, type: wait}\n"), []byte("# "+strings.Repeat("x", spec.MaxSpecBytes)+"\n")...)
	for name, fn := range map[string]func() error{
		"Parse": func() error { _, err := spec.Parse(big); return err },
		"Load":  func() error { _, err := spec.Load(big, nil); return err },
	} {
		t.Run(name, func(t *testing.T) {
			if err := fn(); !errors.Is(err, spec.ErrTooLarge) {
				t.Errorf("error = %v, want ErrTooLarge", err)
			}
		})
	}
}

func TestParseSurvivesHostileYAML(t *testing.T) {
	laughs := "a: &a [x,x,x,x,x,x,x,x,x,x]\n"
	prev := "a"
	for _, n := range []string{"b", "c", "d", "e", "f", "g", "h", "i"} {
		laughs += n + ": &" + n + " [*" + prev + ",*" + prev + ",*" + prev + ",*" + prev + ",*" + prev + ",*" + prev + ",*" + prev + ",*" + prev + ",*" + prev + ",*" + prev + "]\n"
		prev = n
	}
	tests := map[string]string{
		"billion laughs":     laughs,
		"deep flow nesting":  strings.Repeat("[", 20000) + strings.Repeat("]", 20000),
		"deep block nesting": strings.Repeat("- ", 5000) + "x\n",
		"non-string key":     "? [a, b]\n: c\n",
		"null key":           "~: a\n",
		"binary":             "\x00\xff\xfe{{}}",
		"tabs":               "a:\n\t- b\n",
		"many documents":     "a: 1\n---\nb: 2\n",
		"huge number":        "apiVersion: 1e999999\n",
	}
	// Bounds far above what a sane parse needs (a few MiB, milliseconds)
	// and far below what an unbounded expansion or recursion takes: the
	// test fails on a parser that blows up, never on a slow machine.
	const (
		maxAlloc = 256 << 20
		maxTime  = 2 * time.Minute
	)
	for name, in := range tests {
		t.Run(name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			done := make(chan error, 1)
			go func() {
				d, err := spec.Parse([]byte(in))
				if err == nil {
					err = d.Validate() // either is fine; nothing may panic
					if err != nil && !errors.Is(err, spec.ErrInvalid) {
						err = fmt.Errorf("Validate: %w", err)
					} else {
						err = nil
					}
				}
				done <- err
			}()
			var err error
			select {
			case err = <-done:
			case <-time.After(maxTime):
				t.Fatalf("Parse did not return within %s", maxTime)
			}
			runtime.ReadMemStats(&after)
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > maxAlloc {
				t.Errorf("Parse allocated %d MiB, want at most %d MiB", alloc>>20, maxAlloc>>20)
			} else {
				t.Logf("allocated %d KiB", alloc>>10)
			}
			if err != nil && !errors.Is(err, spec.ErrInvalid) && !errors.Is(err, spec.ErrTooLarge) {
				t.Errorf("error = %v, want ErrInvalid or ErrTooLarge", err)
			}
		})
	}
}
