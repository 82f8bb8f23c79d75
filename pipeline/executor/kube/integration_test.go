package kube

// Integration tests against a real control plane (etcd, kube-apiserver with
// RBAC, kube-controller-manager, kube-scheduler, KWOK), provisioned by
// scripts/kube-testenv on first use. The executor always runs with the
// token of a ServiceAccount bound only to the Roles shipped in
// docs/kubernetes/rbac.yaml, so every test here also proves those Roles
// sufficient; the admin client only sets tests up and checks results.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/spec"
	"github.com/kontinuous/kontinuous/scripts/kube-testenv/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// kubeTest is one test's corner of the cluster: a build namespace with
// the shipped Roles bound to a ServiceAccount of a server namespace, and
// clients authenticated as that ServiceAccount.
type kubeTest struct {
	env      *testenv.Env
	admin    kubernetes.Interface
	ns       string // where stages run
	serverNS string // where the server's ServiceAccount lives
	saConfig *rest.Config
}

func randomSuffix() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return hex.EncodeToString(b)
}

func newKubeTest(t *testing.T) *kubeTest {
	t.Helper()
	env := testenv.Require(t)
	kt := &kubeTest{env: env, admin: env.Admin(), ns: "builds-" + randomSuffix(), serverNS: "kontinuous-" + randomSuffix()}
	t.Cleanup(func() {
		if t.Failed() {
			ctx := context.Background()
			if evs, err := kt.admin.CoreV1().Events(kt.ns).List(ctx, metav1.ListOptions{}); err == nil {
				for _, ev := range evs.Items {
					t.Logf("event: %s %s/%s: %s: %s", ev.Type, ev.InvolvedObject.Kind, ev.InvolvedObject.Name, ev.Reason, ev.Message)
				}
			}
			if pods, err := kt.admin.CoreV1().Pods(kt.ns).List(ctx, metav1.ListOptions{}); err == nil {
				for _, p := range pods.Items {
					t.Logf("pod %s: node %q phase %s conditions %+v", p.Name, p.Spec.NodeName, p.Status.Phase, p.Status.Conditions)
				}
			}
			for _, p := range []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"} {
				t.Logf("--- end of the %s log:\n%s", p, env.LogTail(p))
			}
		}
	})
	ctx := t.Context()
	for _, ns := range []string{kt.ns, kt.serverNS} {
		if _, err := kt.admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			// Best effort: the control plane goes away with the test binary.
			_ = kt.admin.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{})
		})
	}
	kt.applyShippedRBAC(t, kt.ns)
	// The Kubernetes Secrets testPipeline's stages name: an operator
	// creates them in the build namespace.
	for name, data := range map[string]string{"deploy-creds": "API_TOKEN", "lint-token": "LINT_TOKEN"} {
		if _, err := kt.admin.CoreV1().Secrets(kt.ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name,
			Labels: map[string]string{LabelPipeline: PipelineLabel("Acaleph", "kontinuous")}},
			StringData: map[string]string{data: "value-of-" + name}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	tok, err := env.ServiceAccountToken(ctx, kt.serverNS, "kontinuous")
	if err != nil {
		t.Fatal(err)
	}
	kt.saConfig = env.Config(tok)
	return kt
}

// applyShippedRBAC applies docs/kubernetes/rbac.yaml to ns, with the
// subjects' namespace set to the test's server namespace.
func (kt *kubeTest) applyShippedRBAC(t *testing.T, ns string) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "..", "docs", "kubernetes", "rbac.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := kt.env.ApplyRoles(t.Context(), raw, ns, kt.serverNS); err != nil {
		t.Fatalf("rbac.yaml: %v", err)
	}
}

// executor returns an executor acting as the ServiceAccount; wrap, if not
// nil, wraps its HTTP transport.
func (kt *kubeTest) executor(t *testing.T, wrap func(http.RoundTripper) http.RoundTripper) *Executor {
	t.Helper()
	rc := rest.CopyConfig(kt.saConfig)
	if wrap != nil {
		rc.WrapTransport = wrap
	}
	kc, dc, err := NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	e, err := New(Config{Client: kc, Dynamic: dc, DefaultNamespace: kt.ns, Resync: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// buildJobs turns a .pipeline.yml into the StageJobs the engine would hand
// the executor, the way the engine does: spec.Load with the KONTINUOUS_*
// values, each stage's vars in Env and its secrets by name.
func (kt *kubeTest) buildJobs(t *testing.T, raw string, build int) []pipeline.StageJob {
	t.Helper()
	values := map[string]string{
		"KONTINUOUS_PIPELINE_ID": "acaleph/kontinuous",
		"KONTINUOUS_BUILD_ID":    fmt.Sprint(build),
		"KONTINUOUS_BRANCH":      "main",
		"KONTINUOUS_NAMESPACE":   kt.ns,
		"KONTINUOUS_COMMIT":      testCommit,
		"KONTINUOUS_URL":         "http://kontinuous.test",
	}
	def, err := spec.Load([]byte(raw), values)
	if err != nil {
		t.Fatal(err)
	}
	var jobs []pipeline.StageJob
	for i, s := range def.Spec.Template.Stages {
		env := map[string]string{"KONTINUOUS_STAGE_ID": fmt.Sprint(i + 1)}
		for k, v := range values {
			env[k] = v
		}
		for k, v := range def.StageVars(i) {
			env[k] = v
		}
		jobs = append(jobs, pipeline.StageJob{
			Owner: "Acaleph", Repo: "kontinuous", BuildNumber: build, BuildID: fmt.Sprint(build),
			Commit: testCommit, Branch: "main",
			CloneURL: "https://github.com/Acaleph/kontinuous.git", CloneUser: "x-access-token", CloneToken: testToken,
			Stage: pipeline.Stage{Name: s.Name, Type: s.Type, Index: i + 1, Params: s.Params, Labels: s.Labels,
				Vars: def.StageVars(i), Secrets: def.StageSecrets(i), Started: time.Now().UnixNano()},
			Env:         env,
			SecretNames: def.StageSecrets(i),
			Timeout:     2 * time.Minute,
		})
	}
	return jobs
}

const testPipeline = `apiVersion: v1alpha1
kind: Pipeline
metadata:
  name: kontinuous
spec:
  selector:
    matchLabels: {app: kontinuous}
  template:
    metadata:
      name: kontinuous
    secrets: [deploy-creds]
    vars:
      GO_VERSION: "1.22"
    stages:
      - name: Test
        type: command
        params:
          command: [go, test, ./...]
          image: "golang:{{.GO_VERSION}}"
        vars:
          STAGE_VAR: test
      - name: Build
        type: docker_build
      - name: Approve
        type: wait
        params: {message: "Ship it?"}
      - name: Lint
        type: command
        secrets: [lint-token]
        params:
          command: [false]
`

func TestKubePipelineStagesRunAsLabelledJobsAndJobResultsDriveTheStages(t *testing.T) {
	t.Parallel()
	kt := newKubeTest(t)
	e := kt.executor(t, nil)
	jobs := kt.buildJobs(t, testPipeline, 3)

	type result struct {
		err error
		out pipeline.StageOutcome
		log string
	}
	results := map[string]result{}
	for _, job := range jobs {
		if job.Stage.Type == spec.TypeWait {
			continue // the engine's business
		}
		var log syncBuffer
		var rep outcomes
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		err := e.RunStage(ctx, job, &log, rep.report)
		cancel()
		results[job.Stage.Name] = result{err, rep.last(), log.String()}
	}

	if r := results["Test"]; r.err != nil {
		t.Errorf("Test stage: %v, want success (log %q)", r.err, r.log)
	}
	if r := results["Build"]; r.err != nil {
		t.Errorf("Build stage: %v, want success (log %q)", r.err, r.log)
	}
	if r := results["Lint"]; r.err == nil || r.err.Error() != "command exited with code 1" {
		t.Errorf("Lint stage: %v, want the failing command's exit code", r.err)
	}

	for _, tc := range []struct {
		stage   string
		index   int
		secrets []string
		env     map[string]string
	}{
		{"Test", 1, []string{"deploy-creds"}, map[string]string{"GO_VERSION": "1.22", "STAGE_VAR": "test", "KONTINUOUS_BUILD_ID": "3", "KONTINUOUS_STAGE_ID": "1"}},
		{"Build", 2, nil, map[string]string{"GO_VERSION": "1.22", "KONTINUOUS_BUILD_ID": "3"}},
		{"Lint", 4, []string{"deploy-creds", "lint-token"}, map[string]string{"GO_VERSION": "1.22", "KONTINUOUS_STAGE_ID": "4"}},
	} {
		t.Run(tc.stage, func(t *testing.T) {
			r := results[tc.stage]
			name := JobName("Acaleph", "kontinuous", 3, tc.index)
			if r.out.PodNamespace != kt.ns || r.out.JobName != name || !strings.HasPrefix(r.out.PodName, name+"-") {
				t.Errorf("outcome = %+v, want job %s and its pod in %s", r.out, name, kt.ns)
			}
			j, err := kt.admin.BatchV1().Jobs(kt.ns).Get(t.Context(), name, metav1.GetOptions{})
			if err != nil {
				t.Fatalf("job %s in %s: %v", name, kt.ns, err)
			}
			want := map[string]string{LabelPipeline: "acaleph.kontinuous", LabelBuild: "3", LabelStage: fmt.Sprint(tc.index)}
			for k, v := range want {
				if j.Labels[k] != v {
					t.Errorf("label %s = %q, want %q", k, j.Labels[k], v)
				}
			}
			c := j.Spec.Template.Spec.Containers[0]
			env := map[string]string{}
			for _, ev := range c.Env {
				env[ev.Name] = ev.Value
			}
			for k, v := range tc.env {
				if env[k] != v {
					t.Errorf("env %s = %q, want %q", k, env[k], v)
				}
			}
			var secrets []string
			for _, ef := range c.EnvFrom {
				secrets = append(secrets, ef.SecretRef.Name)
			}
			if fmt.Sprint(secrets) != fmt.Sprint(tc.secrets) {
				t.Errorf("envFrom secrets = %v, want %v", secrets, tc.secrets)
			}
			if *j.Spec.BackoffLimit != 0 || *j.Spec.ActiveDeadlineSeconds != 120 || j.Spec.TTLSecondsAfterFinished == nil {
				t.Errorf("backoffLimit %d, activeDeadlineSeconds %d, ttl %v", *j.Spec.BackoffLimit, *j.Spec.ActiveDeadlineSeconds, j.Spec.TTLSecondsAfterFinished)
			}
			pods, err := kt.admin.CoreV1().Pods(kt.ns).List(t.Context(), metav1.ListOptions{LabelSelector: LabelStage + "=" + fmt.Sprint(tc.index)})
			if err != nil || len(pods.Items) != 1 || pods.Items[0].Name != r.out.PodName {
				t.Errorf("pods labelled stage %d: %v, %v; want the reported pod", tc.index, pods, err)
			}
		})
	}

	// Each stage's clone Secret went when the stage ended; CleanupBuild
	// (deletecollection by label, with the executor's own rights) finds
	// nothing left and succeeds.
	sel := metav1.ListOptions{LabelSelector: CloneSecretSelector("Acaleph", "kontinuous", 3)}
	if l, err := kt.admin.CoreV1().Secrets(kt.ns).List(t.Context(), sel); err != nil || len(l.Items) != 0 {
		t.Errorf("clone secrets after the stages ended: %v, %v; want none", l, err)
	}
	if err := e.CleanupBuild(t.Context(), "Acaleph", "kontinuous", 3); err != nil {
		t.Fatal(err)
	}
}

// waitPod waits until rep has seen the stage's pod running.
func waitPod(t *testing.T, kt *kubeTest, rep *outcomes) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if name := rep.last().PodName; name != "" {
			p, err := kt.admin.CoreV1().Pods(kt.ns).Get(t.Context(), name, metav1.GetOptions{})
			if err == nil && p.Status.Phase == corev1.PodRunning {
				return name
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("the stage's pod did not start running")
	return ""
}

func TestKubeCancelDeletesTheJobAndItsPod(t *testing.T) {
	t.Parallel()
	kt := newKubeTest(t)
	e := kt.executor(t, nil)
	job := kt.buildJobs(t, strings.Replace(testPipeline, "command: [false]", "command: [sleep, 1h]", 1), 4)[3]
	ctx, cancel := context.WithCancelCause(t.Context())
	var log syncBuffer
	var rep outcomes
	done := runAsync(ctx, e, job, &log, &rep)
	pod := waitPod(t, kt, &rep)
	cancel(pipeline.ErrBuildCanceled)
	if err := waitResult(t, done); !errors.Is(err, context.Canceled) {
		t.Fatalf("RunStage = %v, want context.Canceled", err)
	}
	name := JobName("Acaleph", "kontinuous", 4, 4)
	if _, err := kt.admin.BatchV1().Jobs(kt.ns).Get(t.Context(), name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("job after cancel: %v, want not found", err)
	}
	// Background propagation: the garbage collector removes the pod.
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := kt.admin.CoreV1().Pods(kt.ns).Get(t.Context(), pod, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pod %s still there 30s after its Job was deleted (%v)", pod, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// cuttable is a transport that can be cut, like a server that died.
type cuttable struct {
	rt  http.RoundTripper
	cut *atomic.Bool
}

func (c cuttable) RoundTrip(r *http.Request) (*http.Response, error) {
	if c.cut.Load() {
		return nil, errors.New("test: connection cut")
	}
	return c.rt.RoundTrip(r)
}

func TestKubeRestartedExecutorAdoptsTheRunningJob(t *testing.T) {
	t.Parallel()
	kt := newKubeTest(t)
	var cut atomic.Bool
	first := kt.executor(t, func(rt http.RoundTripper) http.RoundTripper { return cuttable{rt, &cut} })
	job := kt.buildJobs(t, strings.Replace(testPipeline, "command: [false]", "command: [sleep, 6s]", 1), 5)[3]

	ctx, cancel := context.WithCancel(t.Context())
	var log1 syncBuffer
	var rep1 outcomes
	done := runAsync(ctx, first, job, &log1, &rep1)
	pod := waitPod(t, kt, &rep1)
	name := JobName("Acaleph", "kontinuous", 5, 4)
	before, err := kt.admin.BatchV1().Jobs(kt.ns).Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The first server dies: its connection goes, then it stops.
	cut.Store(true)
	cancel()
	if err := waitResult(t, done); !errors.Is(err, context.Canceled) {
		t.Fatalf("first RunStage = %v", err)
	}

	second := kt.executor(t, nil)
	var log2 syncBuffer
	var rep2 outcomes
	ctx2, cancel2 := context.WithTimeout(t.Context(), time.Minute)
	defer cancel2()
	if err := second.RunStage(ctx2, job, &log2, rep2.report); err != nil {
		t.Fatalf("adopting RunStage = %v, want the Job's success", err)
	}
	after, err := kt.admin.BatchV1().Jobs(kt.ns).Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if after.UID != before.UID {
		t.Error("the restarted executor made a new Job instead of adopting the running one")
	}
	if !jobComplete(after) {
		t.Errorf("adopted job conditions = %+v, want Complete", after.Status.Conditions)
	}
	if got := rep2.last().PodName; got != pod {
		t.Errorf("adopted pod = %q, want %q", got, pod)
	}
}

func jobComplete(j *batchv1.Job) bool {
	for _, c := range j.Status.Conditions {
		if c.Type == batchv1.JobComplete && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

func TestKubeShippedRoleGrantsNoMoreThanTheExecutorNeeds(t *testing.T) {
	t.Parallel()
	kt := newKubeTest(t)
	sa, err := kubernetes.NewForConfig(kt.saConfig)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	forbidden := []struct {
		what string
		call func() error
	}{
		{"list secrets in the build namespace", func() error {
			_, err := sa.CoreV1().Secrets(kt.ns).List(ctx, metav1.ListOptions{})
			return err
		}},
		{"create a job in another namespace", func() error {
			_, err := sa.BatchV1().Jobs("default").Create(ctx, &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "x"}}, metav1.CreateOptions{})
			return err
		}},
		{"read a secret in another namespace", func() error {
			_, err := sa.CoreV1().Secrets("kube-system").Get(ctx, "x", metav1.GetOptions{})
			return err
		}},
		{"create pods directly", func() error {
			_, err := sa.CoreV1().Pods(kt.ns).Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "x"},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "x", Image: "x"}}}}, metav1.CreateOptions{})
			return err
		}},
		{"update a job", func() error {
			_, err := sa.BatchV1().Jobs(kt.ns).Update(ctx, &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "x"}}, metav1.UpdateOptions{})
			return err
		}},
		{"change its own rights", func() error {
			_, err := sa.RbacV1().Roles(kt.ns).Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "x"}}, metav1.CreateOptions{})
			return err
		}},
	}
	for _, tc := range forbidden {
		if err := tc.call(); !apierrors.IsForbidden(err) {
			t.Errorf("%s: %v, want Forbidden", tc.what, err)
		}
	}

	// And a namespace the Role is not bound in fails the stage with a
	// forbidden error, not a hang.
	other := "unbound-" + randomSuffix()
	if _, err := kt.admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: other}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	kc, dc, err := NewForConfig(kt.saConfig)
	if err != nil {
		t.Fatal(err)
	}
	e, err := New(Config{Client: kc, Dynamic: dc, DefaultNamespace: other})
	if err != nil {
		t.Fatal(err)
	}
	job := kt.buildJobs(t, testPipeline, 6)[0]
	if err := e.RunStage(ctx, job, &syncBuffer{}, nil); !errors.Is(err, pipeline.ErrForbidden) {
		t.Errorf("RunStage in an unbound namespace = %v, want ErrForbidden", err)
	}
}

// gitRepo makes a repository with files committed and returns its path
// (a clone URL go-git reads) and the commit.
func gitRepo(t *testing.T, files map[string]string) (string, string) {
	t.Helper()
	dir := t.TempDir()
	git := func(args ...string) string {
		cmd := exec.Command("git", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com",
			"GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com", "GIT_CONFIG_GLOBAL=/dev/null")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	git("init", "-q", "-b", "main")
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	git("add", ".")
	git("commit", "-q", "-m", "manifests")
	return dir, git("rev-parse", "HEAD")
}

func TestKubeDeployAppliesRenderedManifestsToThePipelineNamespaceOnly(t *testing.T) {
	t.Parallel()
	kt := newKubeTest(t)
	e := kt.executor(t, nil)
	app := `apiVersion: v1
kind: ConfigMap
metadata:
  name: app-config
data:
  branch: "{{.KONTINUOUS_BRANCH}}"
  greeting: "{{.GREETING}}"
  build: "{{.BUILD_ID}}"
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: app
spec:
  replicas: 1
  selector: {matchLabels: {app: app}}
  template:
    metadata: {labels: {app: app}}
    spec:
      containers:
        - name: app
          image: "example/app:{{.KONTINUOUS_COMMIT}}"
`
	dir, commit := gitRepo(t, map[string]string{
		"k8s/app.yaml":           app,
		"k8s/notes.txt":          "not a manifest",
		"bad/elsewhere.yaml":     "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: sneaky, namespace: kube-system}\n",
		"bad/cluster-scope.yaml": "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: sneaky}\n",
	})
	deployJob := func(params map[string]any) pipeline.StageJob {
		return pipeline.StageJob{
			Owner: "Acaleph", Repo: "kontinuous", BuildNumber: 8, Commit: commit, Branch: "main",
			CloneURL: dir, Namespace: kt.ns,
			Stage: pipeline.Stage{Name: "Deploy", Type: "deploy", Index: 5, Params: params,
				Vars: map[string]string{"GREETING": "hello"}},
			Env: map[string]string{"KONTINUOUS_BRANCH": "main", "KONTINUOUS_COMMIT": commit,
				"KONTINUOUS_BUILD_ID": "8", "GREETING": "hello"},
		}
	}

	var log syncBuffer
	var rep outcomes
	if err := e.RunStage(t.Context(), deployJob(map[string]any{"deploy_dir": "k8s"}), &log, rep.report); err != nil {
		t.Fatalf("deploy: %v", err)
	}
	cm, err := kt.admin.CoreV1().ConfigMaps(kt.ns).Get(t.Context(), "app-config", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if cm.Data["branch"] != "main" || cm.Data["greeting"] != "hello" || cm.Data["build"] != "8" {
		t.Errorf("configmap data = %v, want rendered values", cm.Data)
	}
	managed := false
	for _, f := range cm.ManagedFields {
		managed = managed || (f.Manager == FieldManager && f.Operation == metav1.ManagedFieldsOperationApply)
	}
	if !managed {
		t.Errorf("configmap not server-side applied by %q: %+v", FieldManager, cm.ManagedFields)
	}
	d, err := kt.admin.AppsV1().Deployments(kt.ns).Get(t.Context(), "app", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if img := d.Spec.Template.Spec.Containers[0].Image; img != "example/app:"+commit {
		t.Errorf("deployment image = %q", img)
	}
	if !strings.Contains(log.String(), "applied ConfigMap "+kt.ns+"/app-config") || !strings.Contains(log.String(), "applied Deployment "+kt.ns+"/app") {
		t.Errorf("deploy log = %q", log.String())
	}
	if rep.last().PodNamespace != kt.ns {
		t.Errorf("outcome = %+v", rep.last())
	}

	// Applying again is idempotent.
	if err := e.RunStage(t.Context(), deployJob(map[string]any{"deploy_file": "k8s/app.yaml"}), &syncBuffer{}, nil); err != nil {
		t.Fatalf("second deploy: %v", err)
	}

	for _, tc := range []struct{ file, want string }{
		{"bad/elsewhere.yaml", `names namespace "kube-system"`},
		{"bad/cluster-scope.yaml", "cluster-scoped"},
	} {
		err := e.RunStage(t.Context(), deployJob(map[string]any{"deploy_file": tc.file}), &syncBuffer{}, nil)
		if !errors.Is(err, pipeline.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("deploy %s = %v, want ErrInvalid saying %q", tc.file, err, tc.want)
		}
	}
	if _, err := kt.admin.CoreV1().ConfigMaps("kube-system").Get(t.Context(), "sneaky", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("a manifest naming kube-system was applied there: %v", err)
	}
}

func TestShippedManifestsAreAcceptedByTheAPIServer(t *testing.T) {
	t.Parallel()
	env := testenv.Require(t)
	dyn, err := dynamic.NewForConfig(env.Config(env.AdminToken))
	if err != nil {
		t.Fatal(err)
	}
	admin := env.Admin()
	if _, err := admin.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kontinuous"}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for _, file := range []string{"kontinuous.yaml", "etcd.yaml", "rbac.yaml"} {
		raw, err := os.ReadFile(filepath.Join("..", "..", "..", "docs", "kubernetes", file))
		if err != nil {
			t.Fatal(err)
		}
		objs, err := decodeManifests(raw)
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		for _, o := range objs {
			gvr := resourceFor(t, o)
			ns := o.GetNamespace()
			if ns == "" {
				ns = "kontinuous"
			}
			// Server-side dry run: the API server validates everything
			// (schema, defaults, admission) and stores nothing.
			if _, err := dyn.Resource(gvr).Namespace(ns).Create(t.Context(), o, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}, FieldValidation: "Strict"}); err != nil {
				t.Errorf("%s: %s %s: %v", file, o.GetKind(), o.GetName(), err)
			}
			kinds[o.GetKind()]++
		}
	}
	want := map[string]int{"ServiceAccount": 1, "Deployment": 1, "Service": 2, "StatefulSet": 1, "Role": 2, "RoleBinding": 2, "NetworkPolicy": 1}
	if fmt.Sprint(kinds) != fmt.Sprint(want) {
		t.Errorf("manifests hold %v, want %v", kinds, want)
	}
}

func resourceFor(t *testing.T, o *unstructured.Unstructured) schema.GroupVersionResource {
	t.Helper()
	gv := o.GroupVersionKind().GroupVersion()
	plural := map[string]string{"ServiceAccount": "serviceaccounts", "Deployment": "deployments", "Service": "services",
		"StatefulSet": "statefulsets", "Role": "roles", "RoleBinding": "rolebindings", "NetworkPolicy": "networkpolicies"}[o.GetKind()]
	if plural == "" {
		t.Fatalf("unexpected kind %s in the shipped manifests", o.GetKind())
	}
	return gv.WithResource(plural)
}

func TestKubePreflightFindsTheShippedRoleSufficientAndWarnsWhereItIsNotBound(t *testing.T) {
	t.Parallel()
	kt := newKubeTest(t)
	other := "unbound-" + randomSuffix()
	if _, err := kt.admin.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: other}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = kt.admin.CoreV1().Namespaces().Delete(context.Background(), other, metav1.DeleteOptions{}) // best effort
	})
	kc, dc, err := NewForConfig(kt.saConfig)
	if err != nil {
		t.Fatal(err)
	}
	e, err := New(Config{Client: kc, Dynamic: dc, DefaultNamespace: kt.ns, AllowedNamespaces: []string{other}})
	if err != nil {
		t.Fatal(err)
	}
	warnings, err := e.Preflight(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], `namespace "`+other+`"`) || !strings.Contains(warnings[0], "create jobs") {
		t.Errorf("warnings = %q, want one for %s only (the shipped Role is bound in %s)", warnings, other, kt.ns)
	}

	// An API server that does not answer is an error.
	rc := rest.CopyConfig(kt.saConfig)
	rc.Host = "https://127.0.0.1:1"
	kc, dc, err = NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	e, err = New(Config{Client: kc, Dynamic: dc, DefaultNamespace: kt.ns})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := e.Preflight(ctx); err == nil || !strings.Contains(err.Error(), "cannot reach the Kubernetes API server") {
		t.Errorf("Preflight against a closed port = %v", err)
	}
}
