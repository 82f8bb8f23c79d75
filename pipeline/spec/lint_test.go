package spec

import (
	"os"
	"strings"
	"testing"
)

func TestLintAcceptsTheExamplesAndListsEveryProblemWithStageAndField(t *testing.T) {
	for _, f := range []string{"minimal.yml", "full.yml", "original.yml", "templated.yml"} {
		raw, err := os.ReadFile("testdata/" + f)
		if err != nil {
			t.Fatal(err)
		}
		if d, probs := Lint(raw); d == nil || len(probs) != 0 {
			t.Errorf("%s: %+v", f, probs)
		}
	}
	bad := `apiVersion: v1alpha1
kind: Pipeline
metadata: {name: app}
spec:
  template:
    stages:
      - name: Test
        type: command
      - name: Build
        type: docker_bulid
      - name: Wait
        type: wait
        params: {timeout: soon}
`
	d, probs := Lint([]byte(bad))
	if d != nil || len(probs) < 3 {
		t.Fatalf("want at least 3 problems, got %d: %+v", len(probs), probs)
	}
	want := map[string]string{"Test": "stages[0]", "Build": "stages[1]", "Wait": "stages[2]"}
	for stage, field := range want {
		found := false
		for _, p := range probs {
			if p.Stage == stage && strings.Contains(p.Field, field) && p.Message != "" && strings.Contains(p.Text, stage) {
				found = true
			}
		}
		if !found {
			t.Errorf("no problem for stage %s (%s): %+v", stage, field, probs)
		}
	}
	if _, probs := Lint([]byte("a: [")); len(probs) != 1 || probs[0].Message == "" {
		t.Errorf("broken YAML: %+v", probs)
	}
	if _, probs := Lint(make([]byte, MaxSpecBytes+1)); len(probs) != 1 || !strings.Contains(probs[0].Message, "too large") {
		t.Errorf("too large: %+v", probs)
	}
}
