package spec_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"sigs.k8s.io/yaml"

	"github.com/kontinuous/kontinuous/pipeline/spec"
)

// addExampleSeeds adds testdata/*.yml to the seed corpus (the committed
// seeds live in testdata/fuzz/<target>/).
func addExampleSeeds(f *testing.F) {
	f.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "*.yml"))
	if err != nil {
		f.Fatal(err)
	}
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
}

// checkError fails unless err is one this package promises.
func checkError(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, spec.ErrInvalid) && !errors.Is(err, spec.ErrTooLarge) {
		t.Fatalf("error %v (%T) is neither ErrInvalid nor ErrTooLarge", err, err)
	}
	if err.Error() == "" {
		t.Fatal("empty error message")
	}
}

// exercise calls everything a caller may call on a parsed definition.
func exercise(t *testing.T, d *spec.Definition) {
	t.Helper()
	_ = d.Namespace()
	for i, s := range d.Spec.Template.Stages {
		_ = d.StageVars(i)
		_ = d.StageSecrets(i)
		// Only checking that nothing panics: errors are expected here.
		_, _ = s.Command()
		_, _ = s.DockerBuild()
		_, _ = s.DockerPublish()
		_, _ = s.Deploy()
		_, _ = s.Wait()
		_, _ = s.Timeout()
	}
}

func FuzzParse(f *testing.F) {
	addExampleSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := spec.Parse(data)
		if err != nil {
			checkError(t, err)
			return
		}
		if err := d.Validate(); err != nil {
			checkError(t, err)
		}
		exercise(t, d)

		// What Parse returns marshals back to YAML that parses the same.
		out, err := yaml.Marshal(d)
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		d2, err := spec.Parse(out)
		if err != nil {
			t.Fatalf("Parse(Marshal(d)): %v\n%s", err, out)
		}
		if diff := cmp.Diff(d, d2); diff != "" {
			t.Fatalf("round trip mismatch (-first +second):\n%s", diff)
		}
	})
}

func FuzzLoad(f *testing.F) {
	addExampleSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := spec.Load(data, values)
		if err != nil {
			checkError(t, err)
			return
		}
		if err := d.Validate(); err != nil {
			t.Fatalf("Load returned a definition that does not validate: %v", err)
		}
		exercise(t, d)
		for i, s := range d.Spec.Template.Stages {
			if s.Type == spec.TypeCommand {
				if _, err := s.Command(); err != nil {
					t.Fatalf("stage %d: Load validated but Command() fails: %v", i, err)
				}
			}
		}
	})
}
