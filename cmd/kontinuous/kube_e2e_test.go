package main

// End to end with --executor kubernetes: the server as wired by Start,
// the stand-in GitHub, and a real control plane (etcd, kube-apiserver with
// RBAC, controller manager, scheduler, KWOK) from scripts/kube-testenv. The
// server authenticates with a kubeconfig for a ServiceAccount bound only to
// the Roles of docs/kubernetes/rbac.yaml in the build namespace.

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/executor/kube"
	"github.com/kontinuous/kontinuous/scripts/kube-testenv/testenv"
)

// kubeCluster is a build namespace on the test control plane and a
// kubeconfig for the server's ServiceAccount, bound there by rbac.yaml.
type kubeCluster struct {
	env        *testenv.Env
	admin      kubernetes.Interface
	ns         string
	kubeconfig string
}

func newKubeCluster(t *testing.T) *kubeCluster {
	t.Helper()
	env := testenv.Require(t)
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix) // crypto/rand.Read never fails
	kc := &kubeCluster{env: env, admin: env.Admin(), ns: "e2e-builds-" + hex.EncodeToString(suffix)}
	serverNS := "e2e-kontinuous-" + hex.EncodeToString(suffix)
	ctx := t.Context()
	for _, ns := range []string{kc.ns, serverNS} {
		if _, err := kc.admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			// Best effort: the control plane goes away with the test binary.
			_ = kc.admin.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{})
		})
	}
	raw, err := os.ReadFile(filepath.Join("..", "..", "docs", "kubernetes", "rbac.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := env.ApplyRoles(ctx, raw, kc.ns, serverNS); err != nil {
		t.Fatalf("docs/kubernetes/rbac.yaml: %v", err)
	}
	tok, err := env.ServiceAccountToken(ctx, serverNS, "kontinuous")
	if err != nil {
		t.Fatal(err)
	}
	kc.kubeconfig = filepath.Join(t.TempDir(), "kubeconfig")
	if err := env.WriteKubeconfig(kc.kubeconfig, tok); err != nil {
		t.Fatal(err)
	}
	return kc
}

// jobs lists the Jobs of build n of acme/app in the build namespace, by
// the executor's labels.
func (kc *kubeCluster) jobs(t *testing.T, n int) []batchv1.Job {
	t.Helper()
	sel := fmt.Sprintf("%s=%s,%s=%d", kube.LabelPipeline, kube.PipelineLabel("acme", "app"), kube.LabelBuild, n)
	list, err := kc.admin.BatchV1().Jobs(kc.ns).List(t.Context(), metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		t.Fatal(err)
	}
	return list.Items
}

// waitKubeBuild polls build n until cond holds; stages run as Jobs on a
// shared machine, so it allows more time than waitBuild.
func (w *world) waitKubeBuild(n int, cond func(pipeline.Build) bool) pipeline.Build {
	w.t.Helper()
	return w.waitBuildWithin(patience, n, cond)
}

func TestKubernetesExecutorRunsPushedPipelinesAsJobsThroughTheServer(t *testing.T) {
	kc := newKubeCluster(t)
	ctx := t.Context()
	// The operator's Secret in the build namespace is what stages get;
	// the pipeline secret of the same name stored in Kontinuous is never
	// copied into the cluster.
	const kubeValue, storedValue = "operator-made-value-1234", "stored-in-kontinuous-5678"
	if _, err := kc.admin.CoreV1().Secrets(kc.ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "creds",
		Labels: map[string]string{kube.LabelPipeline: kube.PipelineLabel("acme", "app")}},
		StringData: map[string]string{"API_TOKEN": kubeValue}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	w := newWorld(t, "--executor", "kubernetes", "--kubeconfig", kc.kubeconfig, "--kube-namespace", kc.ns, "--stage-timeout", "2m")
	w.createPipeline()
	alice, carol := token(t, "alice", 1001, "tok-alice"), token(t, "carol", 1003, "tok-carol")
	expect(t, w.do("PUT", "/api/v1/pipelines/acme/app/secrets/creds", alice, map[string]any{"data": map[string]string{"API_TOKEN": storedValue}}), http.StatusOK)

	t.Run("command, wait and failing command stages", func(t *testing.T) {
		spec := specHead + `    secrets: [creds]
    vars:
      GREETING: hello
    stages:
      - name: test
        type: command
        params: {command: [echo, "{{.GREETING}}"], image: "alpine:3.20"}
      - name: approve
        type: wait
        params: {message: "ship it?"}
      - name: lint
        type: command
        params: {command: ["false"]}
      - name: never
        type: command
        params: {command: [echo, never]}
`
		_, r := w.push(map[string]string{".pipeline.yml": spec}, "kube-1")
		expect(t, r, http.StatusCreated)
		b := w.waitKubeBuild(1, func(b pipeline.Build) bool { return b.Status == pipeline.StatusWaiting || b.Status.Done() })
		if b.Status != pipeline.StatusWaiting || b.Stages[0].Status != pipeline.StatusSuccess || b.Stages[1].Status != pipeline.StatusWaiting {
			t.Fatalf("build %s (%q) stages %+v, want the command done and waiting for approval", b.Status, b.Message, b.Stages)
		}
		st := b.Stages[0]
		wantJob := kube.JobName("acme", "app", 1, st.Index)
		if st.PodNamespace != kc.ns || st.JobName != wantJob || !strings.HasPrefix(st.PodName, wantJob+"-") {
			t.Errorf("stage reports namespace %q job %q pod %q, want job %s and its pod in %s", st.PodNamespace, st.JobName, st.PodName, wantJob, kc.ns)
		}
		expect(t, w.do("POST", fmt.Sprintf("/api/v1/pipelines/acme/app/builds/1/stages/%d?continue=yes", b.Stages[1].Index), carol, nil), http.StatusOK)
		b = w.waitKubeBuild(1, done)
		if b.Status != pipeline.StatusFail || b.Stages[2].Status != pipeline.StatusFail || b.Stages[3].Status != pipeline.StatusSkipped {
			t.Fatalf("build %s stages %+v, want the failing command to fail the build", b.Status, b.Stages)
		}
		if msg := b.Stages[2].Message; !strings.Contains(msg, "exited with code 1") {
			t.Errorf("failed stage message %q does not give the exit code", msg)
		}

		jobs := kc.jobs(t, 1)
		if len(jobs) != 2 {
			t.Fatalf("%d Jobs for build 1, want 2 (the two stages that ran)", len(jobs))
		}
		byStage := map[string]batchv1.Job{}
		for _, j := range jobs {
			byStage[j.Labels[kube.LabelStage]] = j
		}
		j, ok := byStage[fmt.Sprint(b.Stages[0].Index)]
		if !ok {
			t.Fatalf("no Job labelled with stage %d: %v", b.Stages[0].Index, byStage)
		}
		c := j.Spec.Template.Spec.Containers[0]
		if c.Image != "alpine:3.20" || strings.Join(c.Command, " ") != "echo hello" {
			t.Errorf("stage container runs %s %q, want alpine:3.20 [echo hello]", c.Image, c.Command)
		}
		if len(c.EnvFrom) != 1 || c.EnvFrom[0].SecretRef == nil || c.EnvFrom[0].SecretRef.Name != "creds" {
			t.Errorf("envFrom = %+v, want the Secret creds", c.EnvFrom)
		}
		env := map[string]string{}
		for _, e := range c.Env {
			env[e.Name] = e.Value
		}
		if env["GREETING"] != "hello" || env["KONTINUOUS_NAMESPACE"] != kc.ns || env["KONTINUOUS_BUILD_ID"] == "" {
			t.Errorf("stage env = %v", env)
		}
		raw, err := yaml.Marshal(jobs)
		if err != nil {
			t.Fatal(err)
		}
		for _, secret := range []string{kubeValue, storedValue, "tok-alice"} {
			if strings.Contains(string(raw), secret) {
				t.Errorf("a Job spec holds the secret %q", secret)
			}
		}
		s, err := kc.admin.CoreV1().Secrets(kc.ns).Get(ctx, "creds", metav1.GetOptions{})
		if err != nil || string(s.Data["API_TOKEN"]) != kubeValue {
			t.Errorf("the operator's Secret was changed: %v", err)
		}
		// The per-build clone Secret goes when the build ends.
		deadline := time.Now().Add(30 * time.Second)
		for {
			l, err := kc.admin.CoreV1().Secrets(kc.ns).List(ctx, metav1.ListOptions{LabelSelector: kube.CloneSecretSelector("acme", "app", 1)})
			if err == nil && len(l.Items) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("clone Secret of the ended build still there (%v)", err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})

	t.Run("cancel deletes the running Job", func(t *testing.T) {
		spec := specHead + `    stages:
      - name: slow
        type: command
        params: {command: [sleep, 1h]}
`
		_, r := w.push(map[string]string{".pipeline.yml": spec}, "kube-2")
		expect(t, r, http.StatusCreated)
		b := w.waitKubeBuild(2, func(b pipeline.Build) bool {
			return b.Status.Done() || (len(b.Stages) == 1 && b.Stages[0].PodName != "")
		})
		if b.Status.Done() {
			t.Fatalf("build ended %s (%q) before it could be canceled", b.Status, b.Message)
		}
		name := b.Stages[0].JobName
		if _, err := kc.admin.BatchV1().Jobs(kc.ns).Get(ctx, name, metav1.GetOptions{}); err != nil {
			t.Fatalf("running stage's Job: %v", err)
		}
		expect(t, w.do("POST", "/api/v1/pipelines/acme/app/builds/2/cancel", carol, nil), http.StatusOK)
		b = w.waitKubeBuild(2, func(b pipeline.Build) bool { return b.Stages[0].Status.Done() })
		if b.Status != pipeline.StatusCanceled || b.Stages[0].Status != pipeline.StatusCanceled {
			t.Fatalf("build %s stage %s, want CANCELED", b.Status, b.Stages[0].Status)
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			_, err := kc.admin.BatchV1().Jobs(kc.ns).Get(ctx, name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("Job %s still there after cancel (%v)", name, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})

	t.Run("a namespace that is not allowed fails the build", func(t *testing.T) {
		spec := strings.Replace(specHead, "metadata:\n  name: app\n", "metadata:\n  name: app\n  namespace: kube-system\n", 1) + `    stages:
      - name: sneaky
        type: command
        params: {command: [echo, hi]}
`
		if !strings.Contains(spec, "namespace: kube-system") {
			t.Fatal("test spec lacks its namespace")
		}
		_, r := w.push(map[string]string{".pipeline.yml": spec}, "kube-3")
		expect(t, r, http.StatusCreated)
		b := w.waitKubeBuild(3, done)
		msgs := b.Message
		for _, st := range b.Stages {
			msgs += " " + st.Message
		}
		if b.Status != pipeline.StatusFail || !strings.Contains(msgs, `"kube-system"`) || !strings.Contains(msgs, "not allowed") {
			t.Fatalf("build %s, messages %q; want FAIL saying kube-system is not allowed", b.Status, msgs)
		}
		if jobs, err := kc.admin.BatchV1().Jobs("kube-system").List(ctx, metav1.ListOptions{LabelSelector: kube.LabelPipeline}); err != nil || len(jobs.Items) != 0 {
			t.Errorf("Jobs in kube-system: %v, %v", jobs, err)
		}
		if n := len(kc.jobs(t, 3)); n != 0 {
			t.Errorf("%d Jobs for the refused build, want none", n)
		}
	})
}

func TestKubernetesExecutorRestartedServerAdoptsTheRunningJob(t *testing.T) {
	kc := newKubeCluster(t)
	ctx := t.Context()
	w := newWorld(t, "--executor", "kubernetes", "--kubeconfig", kc.kubeconfig, "--kube-namespace", kc.ns, "--stage-timeout", "2m")
	w.createPipeline()
	spec := specHead + `    stages:
      - name: long
        type: command
        params: {command: [sleep, 6s]}
`
	_, r := w.push(map[string]string{".pipeline.yml": spec}, "kube-restart-1")
	expect(t, r, http.StatusCreated)
	b := w.waitKubeBuild(1, func(b pipeline.Build) bool {
		return b.Status.Done() || (len(b.Stages) == 1 && b.Stages[0].PodName != "")
	})
	if b.Status.Done() {
		t.Fatalf("build ended %s (%q) before the restart", b.Status, b.Message)
	}
	name := b.Stages[0].JobName
	before, err := kc.admin.BatchV1().Jobs(kc.ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("running stage's Job: %v", err)
	}

	// The server stops (SIGTERM, a rolling update) while the Job runs,
	// and starts again on the same etcd: it resumes the build and adopts
	// the Job instead of deleting it or starting another.
	w.stop()
	if _, err := kc.admin.BatchV1().Jobs(kc.ns).Get(ctx, name, metav1.GetOptions{}); err != nil {
		t.Fatalf("the stopping server deleted the running Job: %v", err)
	}
	w.start()
	b = w.waitKubeBuild(1, done)
	if b.Status != pipeline.StatusSuccess || b.Stages[0].Status != pipeline.StatusSuccess {
		t.Fatalf("build %s (%q) stage %+v, want the adopted Job's success", b.Status, b.Message, b.Stages[0])
	}
	after, err := kc.admin.BatchV1().Jobs(kc.ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if after.UID != before.UID {
		t.Error("the restarted server replaced the running Job instead of adopting it")
	}
	if jobs := kc.jobs(t, 1); len(jobs) != 1 {
		t.Errorf("%d Jobs for the build, want the one adopted", len(jobs))
	}
}

func TestKubernetesExecutorRefusesToStartWithoutAReachableCluster(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name       string
		kubeconfig string
		want       string
	}{
		{"no kubeconfig outside a cluster", "", "not running in a cluster"},
		{"unreachable API server", func() string {
			p := filepath.Join(dir, "kubeconfig")
			cfg := "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: \"https://127.0.0.1:1\"}}]\n" +
				"users: [{name: u, user: {token: x}}]\ncontexts: [{name: c, context: {cluster: c, user: u}}]\ncurrent-context: c\n"
			if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
				t.Fatal(err)
			}
			return p
		}(), "cannot reach the Kubernetes API server"},
		{"missing kubeconfig file", filepath.Join(dir, "nope"), "nope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.kubeconfig == "" && os.Getenv("KUBERNETES_SERVICE_HOST") != "" {
				t.Skip("running in a cluster: the in-cluster configuration exists")
			}
			cfg, err := LoadConfig([]string{"--executor", "kubernetes", "--kubeconfig", tc.kubeconfig}, func(string) string { return "" }, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			_, err = newKubeExecutor(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err == nil {
				t.Fatal("newKubeExecutor succeeded")
			}
			msg := err.Error()
			if !strings.Contains(msg, "--kubeconfig (KUBECONFIG)") || !strings.Contains(msg, tc.want) || strings.Contains(msg, "\n") {
				t.Errorf("error %q: want one line naming --kubeconfig (KUBECONFIG) and saying %q", msg, tc.want)
			}
			if d := time.Since(start); d > kubeStartTimeout+5*time.Second {
				t.Errorf("start-up check took %s, want it bounded by %s", d, kubeStartTimeout)
			}
		})
	}
}
