package testenv

import (
	"os"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestMain(m *testing.M) { os.Exit(Main(m)) }

func TestControlPlaneIsKubernetes135WithAReadyFakeNode(t *testing.T) {
	env := Require(t)
	admin := env.Admin()
	v, err := admin.Discovery().ServerVersion()
	if err != nil {
		t.Fatal(err)
	}
	if v.GitVersion != "v1.35.4" {
		t.Errorf("server version = %s, want v1.35.4", v.GitVersion)
	}
	n, err := admin.CoreV1().Nodes().Get(t.Context(), NodeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ready := false
	for _, c := range n.Status.Conditions {
		ready = ready || (c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue)
	}
	if !ready || len(n.Spec.Taints) != 0 {
		t.Errorf("node ready=%v taints=%v, want ready and schedulable", ready, n.Spec.Taints)
	}
	// Node addresses point at loopback only: the API server reaches the
	// fake kubelet (for logs) on this machine.
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP && a.Address != "127.0.0.1" {
			t.Errorf("node address %s = %s, want 127.0.0.1", a.Type, a.Address)
		}
	}
}

func TestRequireStartsOneSharedControlPlane(t *testing.T) {
	if a, b := Require(t), Require(t); a != b {
		t.Error("Require started a second control plane")
	}
}
