package pipeline_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

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

// Finding 13: a fork build's notifications come from the pipeline's
// stored settings only: its spec cannot send a secret's value (here, the
// Slack URL) anywhere.
func TestForkBuildsNotifyFromStoredSettingsOnly(t *testing.T) {
	f := newFixture(t)
	hits := make(chan string, 4)
	slack := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits <- r.URL.Path
	}))
	defer slack.Close()
	if err := f.store.PutSecret(t.Context(), "acme", "app", pipeline.SecretSet{Name: "slack", Data: map[string]string{"slackurl": slack.URL + "/hook"}}); err != nil {
		t.Fatal(err)
	}
	sha := f.commit(specHead + `    notif:
      - type: slack
        secrets: [slack]
    stages:
      - name: one
        type: command
        params: {command: ["true"]}
`)
	e := f.engine(newRecExec("kubernetes", false), true)
	n := f.trigger(e, pipeline.Build{Event: pipeline.EventPullRequest, Branch: "feature", Commit: sha, Fork: true}).Number
	f.waitBuild(n, "done", func(b pipeline.Build) bool { return b.Status.Done() })
	stop(t, e) // waits for the build's end, notification included
	select {
	case p := <-hits:
		t.Fatalf("a fork build notified %s from its spec", p)
	default:
	}
	// The same spec on a build of the repository itself notifies.
	e2 := f.engine(newRecExec("kubernetes", false), true)
	f.trigger(e2, pipeline.Build{Commit: sha})
	select {
	case <-hits:
	case <-time.After(patience):
		t.Fatal("a non-fork build did not notify")
	}
}
