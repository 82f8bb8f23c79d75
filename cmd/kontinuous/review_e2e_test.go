package main

import (
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/pipelinetest/fakegithub"
)

// End-to-end checks of review findings, through the real server.

func TestRunFromStageNeedsEveryEarlierStageToHaveSucceeded(t *testing.T) {
	w := newWorld(t)
	w.createPipeline()
	spec := specHead + `    stages:
      - name: breaks
        type: command
        params: {command: ["false"]}
      - name: after
        type: command
        params: {command: ["true"]}
`
	_, r := w.push(map[string]string{".pipeline.yml": spec}, "d-1")
	expect(t, r, http.StatusCreated)
	b := w.waitBuild(1, done)
	if b.Status != pipeline.StatusFail || b.Stages[0].Status != pipeline.StatusFail {
		t.Fatalf("build %s stage %s", b.Status, b.Stages[0].Status)
	}
	carol := token(t, "carol", 1003, "tok-carol")
	// Stage 1 failed: re-running from stage 2 would skip it.
	expect(t, w.do("POST", "/api/v1/pipelines/acme/app/builds/1/stages/2/run", carol, nil), http.StatusConflict)
	if after := w.waitBuild(1, done); after.Status != pipeline.StatusFail || after.Stages[1].Status != pipeline.StatusSkipped {
		t.Fatalf("a refused re-run changed the build: %s stages %+v", after.Status, after.Stages)
	}
	// From the failed stage itself it runs again (and fails again).
	expect(t, w.do("POST", "/api/v1/pipelines/acme/app/builds/1/stages/1/run", carol, nil), http.StatusOK)
	again := w.waitBuild(1, func(nb pipeline.Build) bool { return nb.Status.Done() && nb.Stages[0].Started > b.Stages[0].Started })
	if again.Status != pipeline.StatusFail {
		t.Fatalf("re-run: %s", again.Status)
	}
}

func TestWebhookForARecreatedRepositoryOfTheSameNameMakesNoBuild(t *testing.T) {
	w := newWorld(t)
	w.createPipeline()
	repo := w.gh.Repo("acme", "app")
	sha := repo.Commit("main", map[string]string{"x": "y"}, "c")
	body := fakegithub.PushPayload(repo, "main", "", sha, "alice")
	// acme/app deleted and created again: same name, another id (a
	// signed delivery, e.g. from a hook the new repository copied).
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatal(err)
	}
	m["repository"].(map[string]any)["id"] = repo.ID + 1000
	other, _ := json.Marshal(m)
	expect(t, w.deliver("push", "recreated-1", other, w.hookSecret()), http.StatusBadRequest)
	r := w.do("GET", "/api/v1/pipelines/acme/app/builds", token(t, "alice", 1001, "tok-alice"), nil)
	expect(t, r, http.StatusOK)
	if strings.TrimSpace(string(r.body)) != "[]" {
		t.Fatalf("builds stored after a delivery for another repository: %s", r.body)
	}
}

func TestCancelAnswersWithTheCanceledBuild(t *testing.T) {
	w := newWorld(t)
	w.createPipeline()
	spec := specHead + `    stages:
      - name: slow
        type: command
        params: {command: ["sh", "-c", "echo started; sleep 30"]}
`
	_, r := w.push(map[string]string{".pipeline.yml": spec}, "d-1")
	expect(t, r, http.StatusCreated)
	w.waitBuild(1, func(b pipeline.Build) bool {
		return len(b.Stages) == 1 && b.Stages[0].Status == pipeline.StatusRunning && strings.Contains(w.stageLog(1, 1), "started")
	})
	r = w.do("POST", "/api/v1/pipelines/acme/app/builds/1/cancel", token(t, "carol", 1003, "tok-carol"), nil)
	expect(t, r, http.StatusOK)
	var b pipeline.Build
	r.json(t, &b)
	if b.Status != pipeline.StatusCanceled || b.Stages[0].Status != pipeline.StatusCanceled {
		t.Fatalf("cancel answered build %s stage %s", b.Status, b.Stages[0].Status)
	}
}

func TestForkPullRequestFailsOnTheLocalExecutorByDefault(t *testing.T) {
	// No sandbox: it would hide the marker from a stage that did run.
	w := newWorld(t, "--local-isolation", "none")
	w.createPipeline()
	marker := w.dir + "/fork-ran"
	spec := specHead + `    stages:
      - name: show
        type: command
        params: {command: ["sh", "-c", "touch ` + marker + `"]}
`
	repo := w.gh.Repo("acme", "app")
	sha := repo.Commit("feature", map[string]string{".pipeline.yml": spec}, "pr")
	r := w.deliver("pull_request", "pr-fork", fakegithub.PullRequestPayload(repo, "opened", 9, "feature", sha, true), w.hookSecret())
	expect(t, r, http.StatusCreated)
	var b pipeline.Build
	r.json(t, &b)
	b = w.waitBuild(b.Number, done)
	if b.Status != pipeline.StatusFail || len(b.Stages) != 0 {
		t.Fatalf("fork build %s with %d stages", b.Status, len(b.Stages))
	}
	var raw map[string]any
	r = w.do("GET", "/api/v1/pipelines/acme/app/builds/1", token(t, "alice", 1001, "tok-alice"), nil)
	r.json(t, &raw)
	if raw["message"] != pipeline.ForkRefusedMessage {
		t.Fatalf("fork build message %q", raw["message"])
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("the fork's stage ran on the server")
	}
}
