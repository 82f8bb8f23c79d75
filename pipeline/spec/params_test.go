package spec_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kontinuous/kontinuous/pipeline/spec"
)

func commandStage(params map[string]any) spec.Stage {
	return spec.Stage{Name: "Test", Type: spec.TypeCommand, Params: params}
}

func TestCommandTakesListAsIsAndSplitsString(t *testing.T) {
	tests := []struct {
		name    string
		command any
		args    any
		want    []string
	}{
		{"list kept as is", []any{"echo", "a b", "$HOME"}, nil, []string{"echo", "a b", "$HOME"}},
		{"string split on white space", "go  test\t./...", nil, []string{"go", "test", "./..."}},
		{"single word", "make", nil, []string{"make"}},
		{"shell only when asked for", []any{"sh", "-c", "make test && make lint"}, nil, []string{"sh", "-c", "make test && make lint"}},
		{"args list appended", []any{"go"}, []any{"test", "./..."}, []string{"go", "test", "./..."}},
		{"args string split", "go", "vet ./...", []string{"go", "vet", "./..."}},
		{"flag with equals", "go test -count=1", nil, []string{"go", "test", "-count=1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			params := map[string]any{"command": tt.command}
			if tt.args != nil {
				params["args"] = tt.args
			}
			c, err := commandStage(params).Command()
			if err != nil {
				t.Fatalf("Command: %v", err)
			}
			if diff := cmp.Diff(tt.want, c.Argv()); diff != "" {
				t.Errorf("Argv mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCommandRefusesStringsThatNeedAShell(t *testing.T) {
	tests := []struct {
		command string
		want    string
	}{
		{`echo "hello world"`, `stage "Test": params.command is a string containing "\"", which needs a shell: write it as a list, e.g. [sh, -c, "..."] to run a shell, or ["echo", "a b"] to pass an argument with spaces`},
		{"make test && make lint", `stage "Test": params.command is a string containing "&", which needs a shell: write it as a list, e.g. [sh, -c, "..."] to run a shell, or ["echo", "a b"] to pass an argument with spaces`},
		{"echo $HOME", `stage "Test": params.command is a string containing "$", which needs a shell: write it as a list, e.g. [sh, -c, "..."] to run a shell, or ["echo", "a b"] to pass an argument with spaces`},
		{"rm *.o", `stage "Test": params.command is a string containing "*", which needs a shell: write it as a list, e.g. [sh, -c, "..."] to run a shell, or ["echo", "a b"] to pass an argument with spaces`},
		{"make test\nmake lint\n", `stage "Test": params.command is a string containing a line break, which needs a shell: write it as a list, e.g. [sh, -c, "..."] to run a shell, or ["echo", "a b"] to pass an argument with spaces`},
		{"CGO_ENABLED=0 go build", `stage "Test": params.command starts with a variable assignment ("CGO_ENABLED=0"): set variables with vars`},
	}
	for _, tt := range tests {
		t.Run(tt.command, func(t *testing.T) {
			_, err := commandStage(map[string]any{"command": tt.command}).Command()
			if err == nil {
				t.Fatal("Command succeeded, want an error")
			}
			if !errors.Is(err, spec.ErrInvalid) || err.Error() != tt.want {
				t.Errorf("Command error = %q, want %q", err, tt.want)
			}
		})
	}
}

func TestAccessorRefusesOtherStageType(t *testing.T) {
	s := spec.Stage{Name: "Build", Type: spec.TypeDockerBuild}
	_, err := s.Command()
	want := `stage "Build": type is "docker_build", not "command"`
	if err == nil || err.Error() != want {
		t.Errorf("Command() error = %v, want %q", err, want)
	}
	for name, fn := range map[string]func() error{
		"DockerPublish": func() error { _, err := s.DockerPublish(); return err },
		"Deploy":        func() error { _, err := s.Deploy(); return err },
		"Wait":          func() error { _, err := s.Wait(); return err },
	} {
		if err := fn(); !errors.Is(err, spec.ErrInvalid) {
			t.Errorf("%s() error = %v, want ErrInvalid", name, err)
		}
	}
	if _, err := s.DockerBuild(); err != nil {
		t.Errorf("DockerBuild() = %v", err)
	}
}

func TestAccessorsReadParamsDecodedFromJSON(t *testing.T) {
	// A Stage rebuilt from stored JSON by other decoders may hold numbers
	// and booleans where Parse keeps text.
	c, err := commandStage(map[string]any{"command": []any{"sleep", 5.0}, "args": []any{true}}).Command()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"sleep", "5", "true"}, c.Argv()); diff != "" {
		t.Errorf("Argv mismatch (-want +got):\n%s", diff)
	}
	p, err := spec.Stage{Name: "P", Type: spec.TypeDockerPublish, Params: map[string]any{
		"external_image_name": "org/app", "require_credentials": false,
	}}.DockerPublish()
	if err != nil || p.RequireCredentials {
		t.Errorf("DockerPublish() = %+v, %v, want RequireCredentials false", p, err)
	}
}

func TestDockerBuildFillsDefaults(t *testing.T) {
	b, err := spec.Stage{Name: "Build", Type: spec.TypeDockerBuild}.DockerBuild()
	if err != nil {
		t.Fatal(err)
	}
	if want := (spec.DockerBuildParams{DockerfilePath: ".", DockerfileName: "Dockerfile"}); b != want {
		t.Errorf("DockerBuild() = %+v, want %+v", b, want)
	}
}

func TestDockerPublishReadsRequireCredentials(t *testing.T) {
	tests := []struct {
		value any
		want  bool
	}{
		{nil, true},
		{"TRUE", true},
		{"true", true},
		{"FALSE", false},
		{"false", false},
		{"False", false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.value), func(t *testing.T) {
			params := map[string]any{"external_image_name": "org/app"}
			if tt.value != nil {
				params["require_credentials"] = tt.value
			}
			p, err := spec.Stage{Name: "P", Type: spec.TypeDockerPublish, Params: params}.DockerPublish()
			if err != nil {
				t.Fatal(err)
			}
			if p.RequireCredentials != tt.want || p.ExternalRegistry != "" || p.ExternalImageName != "org/app" {
				t.Errorf("DockerPublish() = %+v, want RequireCredentials %v", p, tt.want)
			}
		})
	}
}

func TestTimeoutParsesGoDurations(t *testing.T) {
	tests := []struct {
		value   any
		want    time.Duration
		wantErr string
	}{
		{nil, 0, ""},
		{"10m", 10 * time.Minute, ""},
		{"1h30m", 90 * time.Minute, ""},
		{"24h", 24 * time.Hour, ""},
		{"90s", 90 * time.Second, ""},
		{"24h0m1s", 0, `stage "S": params.timeout must be at most 24h0m0s, not "24h0m1s"`},
		{"0", 0, `stage "S": params.timeout must be positive, not "0"`},
		{"600", 0, `stage "S": params.timeout must be a duration such as "10m" or "1h30m", not "600"`},
		{"ten minutes", 0, `stage "S": params.timeout must be a duration such as "10m" or "1h30m", not "ten minutes"`},
		{map[string]any{}, 0, `stage "S": params.timeout must be a duration such as "10m" or "1h30m", not a mapping`},
	}
	for _, tt := range tests {
		for _, typ := range []string{spec.TypeCommand, spec.TypeWait} {
			t.Run(typ+"/"+fmt.Sprint(tt.value), func(t *testing.T) {
				params := map[string]any{"command": "true"}
				if tt.value != nil {
					params["timeout"] = tt.value
				}
				s := spec.Stage{Name: "S", Type: typ, Params: params}
				got, err := s.Timeout()
				if tt.wantErr != "" {
					if err == nil || err.Error() != tt.wantErr {
						t.Errorf("Timeout() error = %v, want %q", err, tt.wantErr)
					}
					return
				}
				if err != nil || got != tt.want {
					t.Errorf("Timeout() = %v, %v, want %v", got, err, tt.want)
				}
				if typ == spec.TypeCommand {
					c, err := s.Command()
					if err != nil || c.Timeout != tt.want {
						t.Errorf("Command().Timeout = %v, %v, want %v", c.Timeout, err, tt.want)
					}
				}
			})
		}
	}
}

func TestStageVarsLetStageOverrideTemplate(t *testing.T) {
	d := &spec.Definition{Spec: spec.Spec{Template: spec.Template{
		Vars:    map[string]string{"A": "template", "B": "template"},
		Secrets: []string{"common", "shared", "common"},
		Stages: []spec.Stage{
			{Name: "one", Vars: map[string]string{"B": "stage", "C": "stage"}, Secrets: []string{"extra", "shared"}},
			{Name: "two"},
		},
	}}}
	if diff := cmp.Diff(map[string]string{"A": "template", "B": "stage", "C": "stage"}, d.StageVars(0)); diff != "" {
		t.Errorf("StageVars(0) mismatch (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]string{"A": "template", "B": "template"}, d.StageVars(1)); diff != "" {
		t.Errorf("StageVars(1) mismatch (-want +got):\n%s", diff)
	}
	// Later sets' keys win, so the stage's come last, each name once.
	if diff := cmp.Diff([]string{"common", "extra", "shared"}, d.StageSecrets(0)); diff != "" {
		t.Errorf("StageSecrets(0) mismatch (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"common", "shared"}, d.StageSecrets(1)); diff != "" {
		t.Errorf("StageSecrets(1) mismatch (-want +got):\n%s", diff)
	}
	d.StageVars(0)["A"] = "changed"
	if d.Spec.Template.Vars["A"] != "template" {
		t.Error("StageVars returned the template's own map")
	}
}
