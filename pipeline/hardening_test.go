package pipeline_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/kontinuous/kontinuous/pipeline"
)

// failStage is an executor whose stage failIndex fails with msg (as an
// executor reports what a stage printed, e.g. a termination message).
type failStage struct {
	failIndex int
	msg       string
}

func (failStage) Name() string    { return "kubernetes" }
func (failStage) Resumable() bool { return false }
func (x failStage) RunStage(_ context.Context, job pipeline.StageJob, log io.Writer, _ func(pipeline.StageOutcome)) error {
	io.WriteString(log, "printed "+x.msg+"\n")
	if job.Stage.Index == x.failIndex {
		return errors.New(x.msg)
	}
	return nil
}
func (failStage) CleanupBuild(context.Context, string, string, int) error { return nil }

// Finding 4: the message and commit status of a stage that named no
// secret mask the secret values an earlier stage of the build was given.
func TestLaterStagesMessageAndStatusMaskTheBuildsSecrets(t *testing.T) {
	f := newFixture(t)
	const value = "b4ild-wide-s3cret"
	if err := f.store.PutSecret(t.Context(), "acme", "app", pipeline.SecretSet{Name: "creds", Data: map[string]string{"API_TOKEN": value}}); err != nil {
		t.Fatal(err)
	}
	sha := f.commit(specHead + `    stages:
      - name: keep
        type: command
        secrets: [creds]
        params: {command: ["true"]}
      - name: show
        type: command
        params: {command: ["true"]}
`)
	e := f.engine(failStage{failIndex: 2, msg: "stage said " + value}, true)
	n := f.trigger(e, pipeline.Build{Commit: sha}).Number
	b := f.waitBuild(n, "FAIL", func(b pipeline.Build) bool { return b.Status.Done() })
	if b.Status != pipeline.StatusFail || len(b.Stages) != 2 {
		t.Fatalf("build %s %q", b.Status, b.Message)
	}
	want := "stage said " + pipeline.Mask
	if m := b.Stages[1].Message; m != want {
		t.Errorf("stage 2 message %q, want %q", m, want)
	}
	if strings.Contains(b.Message, value) || !strings.Contains(b.Message, want) {
		t.Errorf("build message %q", b.Message)
	}
	st := f.waitFinalStatus(sha, "show")
	if strings.Contains(st.Description, value) || !strings.Contains(st.Description, want) {
		t.Errorf("commit status description %q", st.Description)
	}
	if log := f.stageLog(n, 2); strings.Contains(log, value) || !strings.Contains(log, "printed "+want) {
		t.Errorf("stage 2 log:\n%s", log)
	}
}
