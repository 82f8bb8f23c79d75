package api

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/kontinuous/kontinuous/pipeline"
)

func TestListJSONIsWhatTheEncoderWritesAndFollowsRevisions(t *testing.T) {
	var c buildJSON
	bs := []pipeline.Build{
		{ID: "a", Number: 2, Status: pipeline.StatusRunning, Branch: "<main>", Revision: 10,
			Stages: []pipeline.Stage{{ID: "a-1", Name: "one", Index: 1, Params: map[string]any{"z": 1, "a": []any{"x"}}}}},
		{ID: "b", Number: 1, Status: pipeline.StatusSuccess}, // no revision
	}
	encode := func(bs []pipeline.Build) (string, string) {
		t.Helper()
		var got, want bytes.Buffer
		if err := c.encodeList(&got, bs); err != nil {
			t.Fatal(err)
		}
		if bs == nil {
			bs = []pipeline.Build{}
		}
		if err := json.NewEncoder(&want).Encode(bs); err != nil {
			t.Fatal(err)
		}
		return got.String(), want.String()
	}
	for _, list := range [][]pipeline.Build{bs, bs[:1], {}, nil} {
		if got, want := encode(list); got != want {
			t.Fatalf("list JSON\n got %s\nwant %s", got, want)
		}
	}
	// Same revision: the remembered bytes, even if the value differed
	// (which the store never does for one revision).
	stale := bs[0]
	stale.Status = pipeline.StatusFail
	if got, _ := encode([]pipeline.Build{stale}); !bytes.Contains([]byte(got), []byte(`"RUNNING"`)) {
		t.Fatalf("same revision re-encoded: %s", got)
	}
	// A new revision is encoded afresh, and an older one never replaces it.
	stale.Revision = 11
	if got, want := encode([]pipeline.Build{stale}); got != want {
		t.Fatalf("new revision\n got %s\nwant %s", got, want)
	}
	old := bs[0]
	encode([]pipeline.Build{old})
	stale.Revision = 11
	if got, want := encode([]pipeline.Build{stale}); got != want {
		t.Fatalf("an older revision replaced a newer one\n got %s\nwant %s", got, want)
	}
	// Builds without a revision are never remembered.
	b := bs[1]
	b.Status = pipeline.StatusFail
	if got, want := encode([]pipeline.Build{b}); got != want {
		t.Fatalf("revision 0 was cached\n got %s\nwant %s", got, want)
	}
}
