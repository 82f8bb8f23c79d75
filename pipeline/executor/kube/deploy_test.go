package kube

import (
	"errors"
	"strings"
	"testing"

	"k8s.io/client-go/kubernetes/fake"

	"github.com/kontinuous/kontinuous/pipeline"
)

func TestDecodeManifestsSplitsDocumentsAndLists(t *testing.T) {
	in := `# comment only
---
apiVersion: v1
kind: ConfigMap
metadata: {name: a}
---
---
apiVersion: v1
kind: List
items:
  - {apiVersion: v1, kind: Service, metadata: {name: b}}
  - {apiVersion: apps/v1, kind: Deployment, metadata: {name: c}}
---
{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "d"}}
`
	objs, err := decodeManifests([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, o := range objs {
		got = append(got, o.GetKind()+"/"+o.GetName())
	}
	if strings.Join(got, " ") != "ConfigMap/a Service/b Deployment/c Secret/d" {
		t.Errorf("objects = %v", got)
	}
	if _, err := decodeManifests([]byte("kind: [unclosed")); err == nil {
		t.Error("malformed YAML decoded without error")
	}
}

func TestDeployWithoutADynamicClientFailsSayingSo(t *testing.T) {
	e := newTestExecutor(t, fake.NewClientset())
	job := stageJob("deploy", map[string]any{"deploy_file": "k8s/app.yaml"})
	err := e.RunStage(t.Context(), job, &syncBuffer{}, nil)
	if !errors.Is(err, pipeline.ErrNotImplemented) || !strings.Contains(err.Error(), "cannot apply Kubernetes manifests") {
		t.Fatalf("RunStage = %v, want ErrNotImplemented explaining why", err)
	}
}

func TestWaitStagesAreNotRunByTheExecutor(t *testing.T) {
	client := fake.NewClientset()
	e := newTestExecutor(t, client)
	err := e.RunStage(t.Context(), stageJob("wait", map[string]any{"message": "ok?"}), &syncBuffer{}, nil)
	if !errors.Is(err, pipeline.ErrInvalid) {
		t.Fatalf("RunStage(wait) = %v, want ErrInvalid", err)
	}
	if n := len(client.Actions()); n != 0 {
		t.Errorf("a wait stage made %d API calls", n)
	}
}
