package pipeline_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/kontinuous/kontinuous/pipeline"
)

// forkSpec has a command stage with dependencies and secrets, then a
// deploy stage, then a command stage that must never run for a fork.
const forkSpec = specHead + `    secrets: [creds]
    stages:
      - name: test
        type: command
        params: {command: ["true"], dependencies: [k8s/db.yml]}
      - name: ship
        type: deploy
        params: {deploy_file: k8s/app.yml}
      - name: after
        type: command
        params: {command: ["true"]}
`

// Finding 10 of issue 13: on every executor a fork build gets no secrets,
// its command stages lose their dependencies (saying so in the log) and
// its deploy stage fails before any executor sees it; the same commit
// built from the repository itself keeps all three.
func TestForkBuildsGetNoSecretsNoDependenciesAndNoDeploy(t *testing.T) {
	f := newFixture(t)
	const value = "fork-must-not-see-this"
	if err := f.store.PutSecret(t.Context(), "acme", "app", pipeline.SecretSet{Name: "creds", Data: map[string]string{"API_TOKEN": value}}); err != nil {
		t.Fatal(err)
	}
	// ForkSecrets (a stored flag of old) does not open the door either.
	if _, err := f.store.UpdatePipeline(t.Context(), "acme", "app", func(p *pipeline.Pipeline) error {
		p.ForkSecrets = true
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	sha := f.commit(forkSpec)
	fork := pipeline.Build{Event: pipeline.EventPullRequest, Branch: "feature", Commit: sha, Fork: true}

	for _, kind := range []string{"local", "kubernetes"} {
		t.Run(kind, func(t *testing.T) {
			inner := newRecExec(kind, false)
			var x pipeline.Executor = inner
			if kind == "kubernetes" {
				x = refExec{inner} // secrets by reference, as the kube executor
			}
			e := f.engine(x, true, func(c *pipeline.EngineConfig) { c.AllowForkBuilds = true })
			defer stop(t, e)

			n := f.trigger(e, fork).Number
			b := f.waitBuild(n, "done", func(b pipeline.Build) bool { return b.Status.Done() })
			if b.Status != pipeline.StatusFail || b.Stages[1].Status != pipeline.StatusFail ||
				b.Stages[1].Message != pipeline.ForkDeployMessage || !strings.Contains(b.Message, pipeline.ForkDeployMessage) {
				t.Fatalf("fork build: %s %q; deploy stage %s %q", b.Status, b.Message, b.Stages[1].Status, b.Stages[1].Message)
			}
			if b.Stages[0].Status != pipeline.StatusSuccess || b.Stages[2].Status != pipeline.StatusSkipped {
				t.Fatalf("fork build stages: %s, %s, %s", b.Stages[0].Status, b.Stages[1].Status, b.Stages[2].Status)
			}
			inner.mu.Lock()
			jobs := slices.Clone(inner.jobs)
			inner.mu.Unlock()
			if len(jobs) != 1 || jobs[0].Stage.Type != "command" {
				t.Fatalf("executor ran %d stages for the fork build, want only the command stage", len(jobs))
			}
			job := jobs[0]
			if len(job.SecretNames) != 0 {
				t.Fatalf("fork stage got secret names %v", job.SecretNames)
			}
			for k, v := range job.Env {
				if strings.Contains(v, value) {
					t.Fatalf("fork stage env %s holds the secret", k)
				}
			}
			if _, ok := job.Stage.Params["dependencies"]; ok {
				t.Fatalf("fork stage kept its dependencies: %v", job.Stage.Params)
			}
			if log := f.stageLog(n, 1); !strings.Contains(log, "dependencies are not applied for pull requests from forks") {
				t.Fatalf("fork stage log does not say its dependencies were dropped:\n%s", log)
			}
			// The build record keeps the spec's stage as written.
			if _, ok := b.Stages[0].Params["dependencies"]; !ok {
				t.Fatalf("stored stage lost its dependencies: %v", b.Stages[0].Params)
			}

			// The same commit from the repository itself: secrets,
			// dependencies and the deploy stage all reach the executor.
			n = f.trigger(e, pipeline.Build{Commit: sha}).Number
			b = f.waitBuild(n, "done", func(b pipeline.Build) bool { return b.Status.Done() })
			if b.Status != pipeline.StatusSuccess {
				t.Fatalf("same-repository build: %s %q", b.Status, b.Message)
			}
			inner.mu.Lock()
			jobs = slices.Clone(inner.jobs[1:])
			inner.mu.Unlock()
			if len(jobs) != 3 || jobs[1].Stage.Type != "deploy" {
				t.Fatalf("same-repository build ran %d stages, want 3 with the deploy", len(jobs))
			}
			if !slices.Equal(jobs[0].SecretNames, []string{"creds"}) {
				t.Fatalf("same-repository stage secret names %v", jobs[0].SecretNames)
			}
			if _, ok := jobs[0].Stage.Params["dependencies"]; !ok {
				t.Fatalf("same-repository stage lost its dependencies")
			}
		})
	}
}
