package kube

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"
)

func TestJobNamesAreDNSSafeShortAndDeterministic(t *testing.T) {
	long := strings.Repeat("a", 39)
	tests := []struct {
		owner, repo  string
		build, stage int
	}{
		{"acaleph", "kontinuous", 1, 0},
		{"Acaleph", "Kontinuous", 12, 3},
		{"under_score", "dots.and-dashes", 99999, 42},
		{long, strings.Repeat("r", 100), 2147483647, 999},
		{"-x-", "_._", 1, 1},
		{"日本", "リポ", 3, 2},
	}
	for _, tc := range tests {
		t.Run(tc.owner+"/"+tc.repo, func(t *testing.T) {
			clone, err := CloneSecretName(tc.owner, tc.repo, tc.build)
			if err != nil {
				t.Fatal(err)
			}
			for _, name := range []string{
				JobName(tc.owner, tc.repo, tc.build, tc.stage),
				clone,
			} {
				if len(name) > 63 {
					t.Errorf("%q is %d characters, more than 63", name, len(name))
				}
				if errs := validation.IsDNS1123Label(name); len(errs) > 0 {
					t.Errorf("%q is not a DNS label: %v", name, errs)
				}
			}
			if a, b := JobName(tc.owner, tc.repo, tc.build, tc.stage), JobName(tc.owner, tc.repo, tc.build, tc.stage); a != b {
				t.Errorf("JobName not deterministic: %q vs %q", a, b)
			}
			for k, v := range Labels(tc.owner, tc.repo, tc.build, tc.stage) {
				if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
					t.Errorf("label %s=%q is invalid: %v", k, v, errs)
				}
			}
		})
	}
}

func TestJobNamesKeepPipelinesBuildsAndStagesApart(t *testing.T) {
	names := map[string]string{}
	add := func(what, name string) {
		t.Helper()
		if prev, ok := names[name]; ok {
			t.Errorf("%s and %s share the name %q", prev, what, name)
		}
		names[name] = what
	}
	add("a_b/r b1 s1", JobName("a_b", "r", 1, 1))
	add("a.b/r b1 s1", JobName("a.b", "r", 1, 1))
	add("a/b-r b1 s1", JobName("a", "b-r", 1, 1))
	add("a-b/r b1 s1", JobName("a-b", "r", 1, 1))
	add("a_b/r b1 s2", JobName("a_b", "r", 1, 2))
	add("a_b/r b2 s1", JobName("a_b", "r", 2, 1))
	add("a_b/r b11 s1", JobName("a_b", "r", 11, 1))
	long := strings.Repeat("x", 60)
	add("long1", JobName(long+"1", "r", 1, 1))
	add("long2", JobName(long+"2", "r", 1, 1))

	// Owner and repo match case-insensitively, as on GitHub: one name.
	if JobName("Acaleph", "Kontinuous", 1, 1) != JobName("acaleph", "kontinuous", 1, 1) {
		t.Error("names differ by the case of owner/repo")
	}
	if got := JobName("acaleph", "kontinuous", 7, 2); !strings.HasPrefix(got, "acaleph-kontinuous-") || !strings.HasSuffix(got, "-7-2") {
		t.Errorf("JobName = %q, want acaleph-kontinuous-<hash>-7-2", got)
	}
}

func TestPipelineLabelIsReadableWhenItFits(t *testing.T) {
	if got := PipelineLabel("Acaleph", "kontinuous"); got != "acaleph.kontinuous" {
		t.Errorf("PipelineLabel = %q, want acaleph.kontinuous", got)
	}
	a, b := PipelineLabel(strings.Repeat("o", 39), strings.Repeat("r", 60)+"1"), PipelineLabel(strings.Repeat("o", 39), strings.Repeat("r", 60)+"2")
	if a == b {
		t.Errorf("long pipelines share the label %q", a)
	}
}
