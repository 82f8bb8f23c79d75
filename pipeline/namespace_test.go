package pipeline_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/kontinuous/kontinuous/pipeline"
)

// acmeSpec asks for namespace acme, as every original Kontinuous spec
// does; stages is its stage list.
func acmeSpec(stages string) string {
	return `apiVersion: v1alpha1
kind: Pipeline
metadata:
  name: app
  namespace: acme
spec:
  selector:
    matchLabels: {app: app}
  template:
    metadata:
      name: app
    stages:
` + stages
}

const acmeCommand = `      - name: test
        type: command
        params: {command: ["true"]}
`

// nsExec is an executor that runs stages in namespaces (as the kubernetes
// executor does).
type nsExec struct{ *recExec }

func (nsExec) RunsInNamespaces() bool { return true }

// onlyBuilds is a strict server policy: stages run in "builds", nowhere
// else.
func onlyBuilds(c *pipeline.EngineConfig) {
	c.Namespace = func(_ pipeline.Pipeline, requested string) (string, error) {
		if requested == "" || requested == "builds" {
			return "builds", nil
		}
		return "", fmt.Errorf("metadata.namespace %q is not allowed on this server", requested)
	}
}

// TestNamespacePolicyAppliesWhereANamespaceIsUsed: on the local executor
// a spec's metadata.namespace does not fail its command stages (a
// newcomer's first push runs); the policy applies on an executor that
// runs stages in namespaces and to deploy stages.
func TestNamespacePolicyAppliesWhereANamespaceIsUsed(t *testing.T) {
	f := newFixture(t)

	local := newRecExec("local", false)
	e := f.engine(local, true, onlyBuilds)
	n := f.trigger(e, pipeline.Build{Commit: f.commit(acmeSpec(acmeCommand))}).Number
	_, job := waitStarted(t, local)
	if job.Env["KONTINUOUS_NAMESPACE"] != "acme" {
		t.Errorf("local: KONTINUOUS_NAMESPACE = %q, want acme", job.Env["KONTINUOUS_NAMESPACE"])
	}
	if b := f.waitBuild(n, "done", func(b pipeline.Build) bool { return b.Status.Done() }); b.Status != pipeline.StatusSuccess {
		t.Fatalf("local command stage with metadata.namespace acme: %s %q %q", b.Status, b.Message, b.Stages[0].Message)
	}

	// A deploy stage uses the namespace: the policy applies, on any
	// executor, before anything runs.
	deploy := acmeSpec(`      - name: ship
        type: deploy
        params: {deploy_file: k8s/app.yml}
`)
	n = f.trigger(e, pipeline.Build{Commit: f.commit(deploy)}).Number
	b := f.waitBuild(n, "done", func(b pipeline.Build) bool { return b.Status.Done() })
	if b.Status != pipeline.StatusFail || !strings.Contains(b.Stages[0].Message, "not allowed") {
		t.Fatalf("local deploy stage to acme: %s stage %q", b.Status, b.Stages[0].Message)
	}
	if got := local.jobCount(); got != 1 {
		t.Fatalf("the executor ran %d stages, want 1 (the deploy must not run)", got)
	}
	stop(t, e)

	// An executor that runs stages in namespaces: the policy applies to
	// every stage.
	kube := newRecExec("kubernetes", false)
	e2 := f.engine(nsExec{kube}, true, onlyBuilds)
	n = f.trigger(e2, pipeline.Build{Commit: f.commit(acmeSpec(acmeCommand))}).Number
	b = f.waitBuild(n, "done", func(b pipeline.Build) bool { return b.Status.Done() })
	if b.Status != pipeline.StatusFail || !strings.Contains(b.Message, "not allowed") {
		t.Fatalf("namespaced executor, command stage to acme: %s %q", b.Status, b.Message)
	}
	if kube.jobCount() != 0 {
		t.Fatalf("the namespaced executor ran %d stages, want 0", kube.jobCount())
	}
}
