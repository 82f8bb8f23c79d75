package etcdstore

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/kontinuous/kontinuous/pipeline"
)

// Finding 6: vars every stage has are recorded once per build, each
// stage keeps its own, and the build reads back exactly as it was.
func TestBuildRecordKeepsSharedVarsOnce(t *testing.T) {
	big := strings.Repeat("v", 10_000)
	b := pipeline.Build{ID: "b", Number: 1, Stages: []pipeline.Stage{
		{Index: 1, Vars: map[string]string{"BIG": big, "A": "1"}},
		{Index: 2, Vars: map[string]string{"BIG": big, "A": "2", "ONLY2": "x"}},
		{Index: 3, Vars: map[string]string{"BIG": big, "A": "1"}},
	}}
	raw, err := json.Marshal(toBuildRecord(&b))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(raw), big); n != 1 {
		t.Fatalf("the shared var is recorded %d times, want once", n)
	}
	got, err := decodeBuild(raw)
	if err != nil {
		t.Fatal(err)
	}
	for i := range b.Stages {
		if !reflect.DeepEqual(got.Stages[i].Vars, b.Stages[i].Vars) {
			t.Errorf("stage %d vars read back as %v", i+1, got.Stages[i].Vars)
		}
	}
	// Records written before vars were shared read the same.
	old := `{"id":"b","number":1,"stages":[{"index":1,"vars":{"K":"v"}},{"index":2,"vars":null}]}`
	ob, err := decodeBuild([]byte(old))
	if err != nil {
		t.Fatal(err)
	}
	if ob.Stages[0].Vars["K"] != "v" || ob.Stages[1].Vars != nil {
		t.Fatalf("old record read as %+v", ob.Stages)
	}
}
