package kube

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"sigs.k8s.io/yaml"

	"github.com/kontinuous/kontinuous/pipeline"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

const (
	testCommit = "0123456789abcdef0123456789abcdef01234567"
	testToken  = "ghs_0123456789SECRETtoken"
	// testEnvSecret is a pipeline secret's value found in StageJob.Env.
	testEnvSecret = "env-secret-value-never-in-jobs"
	// testKubeSecret is a value of the Kubernetes Secret deploy-creds.
	testKubeSecret = "kube-secret-value-masked"
)

// pipelineSecrets are the Kubernetes Secrets stageJob's stages name, in
// the test executor's namespaces.
func pipelineSecrets() []runtime.Object {
	ours := map[string]string{LabelPipeline: PipelineLabel("Acaleph", "kontinuous")}
	var objs []runtime.Object
	for _, ns := range []string{"builds", "team-a"} {
		objs = append(objs,
			&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "deploy-creds", Namespace: ns, Labels: ours},
				Data: map[string][]byte{"API_TOKEN": []byte(testKubeSecret)}},
			&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "dockerhub", Namespace: ns, Labels: ours},
				Data: map[string][]byte{"dockeruser": []byte("acaleph"), "dockerpass": []byte("hub-password")}},
			// Another pipeline's Secret, and one nobody gave a pipeline.
			&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "other-creds", Namespace: ns,
				Labels: map[string]string{LabelPipeline: "acaleph.other"}},
				Data: map[string][]byte{"API_TOKEN": []byte("other-pipelines-token")}},
			&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "unlabelled", Namespace: ns},
				Data: map[string][]byte{"API_TOKEN": []byte("nobodys-token")}})
	}
	return objs
}

// stageJob is a build's stage as the engine hands it to the executor.
func stageJob(typ string, params map[string]any) pipeline.StageJob {
	return pipeline.StageJob{
		Owner: "Acaleph", Repo: "kontinuous", BuildNumber: 7, BuildID: "b-7",
		Commit: testCommit, Branch: "main",
		CloneURL:  "https://github.com/Acaleph/kontinuous.git",
		CloneUser: "x-access-token", CloneToken: testToken,
		Stage: pipeline.Stage{Name: "Stage " + typ, Type: typ, Index: 2, Params: params,
			Started: 1700000000000000000, Vars: map[string]string{"GO_VERSION": "1.22"}},
		Env: map[string]string{
			"KONTINUOUS_PIPELINE_ID": "acaleph/kontinuous",
			"KONTINUOUS_BUILD_ID":    "7",
			"KONTINUOUS_STAGE_ID":    "2",
			"KONTINUOUS_BRANCH":      "main",
			"KONTINUOUS_COMMIT":      testCommit,
			"KONTINUOUS_NAMESPACE":   "builds",
			"GO_VERSION":             "1.22",
			// A secret value an engine that inlines secrets would add:
			// it must never reach the Job.
			"API_TOKEN": testEnvSecret,
		},
		SecretNames: []string{"deploy-creds", "dockerhub"},
		Timeout:     10 * time.Minute,
		Namespace:   "builds",
	}
}

func newTestExecutor(t *testing.T, client *fake.Clientset) *Executor {
	t.Helper()
	e, err := New(Config{Client: client, DefaultNamespace: "builds", AllowedNamespaces: []string{"team-a"},
		Resync: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestJobSpecPerStageTypeMatchesGolden(t *testing.T) {
	withRegistry := func(j pipeline.StageJob) pipeline.StageJob {
		j.Env["KONTINUOUS_INTERNAL_REGISTRY"] = "registry.kontinuous.svc:5000"
		return j
	}
	tests := []struct {
		name string
		job  pipeline.StageJob
	}{
		{"command", stageJob("command", map[string]any{
			"command": []any{"go", "test", "./..."}, "args": []any{"-race"},
			"image": "golang:1.22", "working_dir": "src/app", "timeout": "5m"})},
		{"command-built-image", withRegistry(stageJob("command", map[string]any{"command": "make test"}))},
		{"command-no-token-no-secrets", func() pipeline.StageJob {
			j := stageJob("command", map[string]any{"command": []any{"true"}, "working_dir": "/tmp"})
			j.CloneToken, j.SecretNames, j.Timeout = "", nil, 0
			return j
		}()},
		{"docker-build", withRegistry(stageJob("docker_build", map[string]any{
			"dockerfile_path": "docker", "dockerfile_name": "Dockerfile.ci"}))},
		{"docker-build-no-registry", stageJob("docker_build", nil)},
		{"docker-publish", withRegistry(stageJob("docker_publish", map[string]any{
			"external_registry": "quay.io", "external_image_name": "acaleph/kontinuous"}))},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestExecutor(t, fake.NewClientset())
			ns, err := e.namespace(tc.job)
			if err != nil {
				t.Fatal(err)
			}
			in := jobInput{namespace: ns, timeout: e.timeout(tc.job)}
			if tc.job.CloneToken != "" {
				// CloneSecretName's shape, with a fixed random part.
				in.secretName = "acaleph-kontinuous-79e65f19-7-clone-0123456789abcdef"
			}
			j, image, err := e.buildJob(tc.job, in)
			if err != nil {
				t.Fatal(err)
			}
			got, err := yaml.Marshal(struct {
				DockerImage string       `json:"dockerImage"`
				Job         *batchv1.Job `json:"job"`
			}{image, j})
			if err != nil {
				t.Fatal(err)
			}
			for _, secret := range []string{testToken, testEnvSecret, "API_TOKEN"} {
				if bytes.Contains(got, []byte(secret)) {
					t.Fatalf("the Job spec contains a secret %q:\n%s", secret, got)
				}
			}
			golden := filepath.Join("testdata", "jobs", tc.name+".yaml")
			if *update {
				if err := os.MkdirAll(filepath.Dir(golden), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("Job spec differs from %s (go test -update rewrites it):\n%s", golden, got)
			}
		})
	}
}

func TestJobSpecRefusesBadInput(t *testing.T) {
	tests := []struct {
		name string
		job  pipeline.StageJob
		want string
	}{
		{"secret name not a Kubernetes name", func() pipeline.StageJob {
			j := stageJob("command", map[string]any{"command": "true"})
			j.SecretNames = []string{"Bad_Name"}
			return j
		}(), `"Bad_Name" is not a Kubernetes Secret name`},
		{"command without command", stageJob("command", map[string]any{"image": "alpine"}), "params.command is required"},
		{"publish without internal registry", stageJob("docker_publish", map[string]any{"external_image_name": "org/app"}), "internal registry"},
		{"unknown type", stageJob("shell", nil), `"shell" does not run as a Job`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestExecutor(t, fake.NewClientset())
			_, _, err := e.buildJob(tc.job, jobInput{namespace: "builds", timeout: time.Minute})
			if !errors.Is(err, pipeline.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrInvalid containing %q", err, tc.want)
			}
		})
	}
}

func TestRunStageRefusesANamespaceNotAllowed(t *testing.T) {
	client := fake.NewClientset()
	e := newTestExecutor(t, client)
	job := stageJob("command", map[string]any{"command": "true"})
	job.Namespace = "kube-system"
	err := e.RunStage(t.Context(), job, io.Discard, nil)
	if !errors.Is(err, pipeline.ErrInvalid) || !strings.Contains(err.Error(), "kube-system") {
		t.Fatalf("err = %v, want ErrInvalid naming kube-system", err)
	}
	if n := len(client.Actions()); n != 0 {
		t.Errorf("the executor made %d API calls for a refused namespace", n)
	}
}

func TestJudgeMapsJobAndPodStates(t *testing.T) {
	failed := func(reason, msg string) *batchv1.Job {
		return &batchv1.Job{Status: batchv1.JobStatus{Conditions: []batchv1.JobCondition{
			{Type: batchv1.JobFailureTarget, Status: corev1.ConditionTrue, Reason: reason},
			{Type: batchv1.JobFailed, Status: corev1.ConditionTrue, Reason: reason, Message: msg},
		}}}
	}
	running := &batchv1.Job{}
	waiting := func(init bool, reason, msg string) *corev1.Pod {
		cs := corev1.ContainerStatus{Name: "stage", Image: "golang:nope",
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: msg}}}
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p"}}
		if init {
			cs.Name = "clone"
			p.Status.InitContainerStatuses = []corev1.ContainerStatus{cs}
		} else {
			p.Status.ContainerStatuses = []corev1.ContainerStatus{cs}
		}
		return p
	}
	exited := func(init bool, code int32, reason string) *corev1.Pod {
		cs := corev1.ContainerStatus{Name: "stage",
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: code, Reason: reason}}}
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p"}}
		if init {
			cs.Name = "clone"
			p.Status.InitContainerStatuses = []corev1.ContainerStatus{cs}
		} else {
			p.Status.ContainerStatuses = []corev1.ContainerStatus{cs}
		}
		return p
	}
	tests := []struct {
		name string
		job  *batchv1.Job
		pod  *corev1.Pod
		typ  string
		done bool
		kill bool
		msg  string // "" with done: success
	}{
		{"no pod yet", running, nil, "command", false, false, ""},
		{"pod running", running, &corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodRunning}}, "command", false, false, ""},
		{"complete", &batchv1.Job{Status: batchv1.JobStatus{Conditions: []batchv1.JobCondition{
			{Type: batchv1.JobSuccessCriteriaMet, Status: corev1.ConditionTrue},
			{Type: batchv1.JobComplete, Status: corev1.ConditionTrue}}}}, nil, "command", true, false, ""},
		{"complete condition false", &batchv1.Job{Status: batchv1.JobStatus{Conditions: []batchv1.JobCondition{
			{Type: batchv1.JobComplete, Status: corev1.ConditionFalse}}}}, nil, "command", false, false, ""},
		{"image pull back-off", running, waiting(false, "ImagePullBackOff", "Back-off pulling image \"golang:nope\""), "command", true, true,
			`cannot pull image "golang:nope" of container stage (ImagePullBackOff): Back-off pulling image "golang:nope"`},
		{"err image pull on the clone", running, waiting(true, "ErrImagePull", "not found"), "command", true, true,
			`cannot pull image "golang:nope" of container clone (ErrImagePull): not found`},
		{"missing secret", running, waiting(false, "CreateContainerConfigError", `secret "deploy-creds" not found`), "command", true, true,
			`cannot start container stage (CreateContainerConfigError): secret "deploy-creds" not found`},
		{"container creating is not a failure", running, waiting(false, "ContainerCreating", ""), "command", false, false, ""},
		{"deadline exceeded", failed("DeadlineExceeded", "Job was active longer than specified deadline"), nil, "command", true, false,
			"stage timed out after 10m0s"},
		{"command exit code", failed("BackoffLimitExceeded", "Job has reached the specified backoff limit"), exited(false, 2, "Error"), "command", true, false,
			"command exited with code 2"},
		{"oom killed build", failed("BackoffLimitExceeded", ""), exited(false, 137, "OOMKilled"), "docker_build", true, false,
			"docker build exited with code 137: OOMKilled"},
		{"clone failed", failed("BackoffLimitExceeded", ""), exited(true, 128, "Error"), "command", true, false,
			"cloning the repository failed (exit code 128)"},
		{"evicted", failed("BackoffLimitExceeded", ""), &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p"},
			Status: corev1.PodStatus{Phase: corev1.PodFailed, Reason: "Evicted", Message: "low on memory"}}, "command", true, false,
			"pod p failed: Evicted: low on memory"},
		{"failed without pod", failed("PodFailurePolicy", "policy matched"), nil, "command", true, false,
			"job failed: PodFailurePolicy: policy matched"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := judge(tc.job, tc.pod, tc.typ, 10*time.Minute)
			if v.done != tc.done || v.kill != tc.kill {
				t.Fatalf("judge = %+v, want done=%v kill=%v", v, tc.done, tc.kill)
			}
			switch {
			case tc.msg == "" && v.err != nil:
				t.Fatalf("err = %v, want success", v.err)
			case tc.msg != "" && (v.err == nil || v.err.Error() != tc.msg):
				t.Fatalf("err = %v, want %q", v.err, tc.msg)
			}
		})
	}
	if err := judge(failed("DeadlineExceeded", ""), nil, "command", time.Minute).err; !errors.Is(err, ErrTimedOut) {
		t.Errorf("a deadline failure is %v, want ErrTimedOut", err)
	}
}

// cluster plays the job controller and the kubelet on a fake clientset.
type cluster struct {
	t      *testing.T
	client *fake.Clientset
	mu     sync.Mutex
	logs   map[string]string // container → log the kubelet serves
}

func newCluster(t *testing.T) *cluster {
	c := &cluster{t: t, client: fake.NewClientset(pipelineSecrets()...), logs: map[string]string{}}
	// The API server gives created objects a UID and a creation time. The
	// UIDs end in a serial number, unique in the test, which runPod's pod
	// names use (pods of a deleted Job stay here: no garbage collector).
	var serial atomic.Int64
	c.client.PrependReactor("create", "*", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if o, ok := a.(k8stesting.CreateAction).GetObject().(metav1.Object); ok {
			if o.GetUID() == "" {
				o.SetUID(types.UID(fmt.Sprintf("uid-%s-%05d", o.GetName(), serial.Add(1))))
			}
			o.SetCreationTimestamp(metav1.Now())
		}
		return false, nil, nil
	})
	// The fake's tracker does not implement deletecollection: delete the
	// Secrets the label selector matches, as the API server does.
	c.client.PrependReactor("delete-collection", "secrets", func(a k8stesting.Action) (bool, runtime.Object, error) {
		sel := a.(k8stesting.DeleteCollectionAction).GetListRestrictions().Labels
		list, err := c.client.Tracker().List(corev1.SchemeGroupVersion.WithResource("secrets"),
			corev1.SchemeGroupVersion.WithKind("Secret"), a.GetNamespace())
		if err != nil {
			return true, nil, err
		}
		for _, s := range list.(*corev1.SecretList).Items {
			if sel.Matches(labels.Set(s.Labels)) {
				if err := c.client.Tracker().Delete(corev1.SchemeGroupVersion.WithResource("secrets"), s.Namespace, s.Name); err != nil {
					return true, nil, err
				}
			}
		}
		return true, nil, nil
	})
	c.client.PrependReactor("get", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		g, ok := a.(k8stesting.GenericAction)
		if !ok || a.GetSubresource() != "log" {
			return false, nil, nil
		}
		opts := g.GetValue().(*corev1.PodLogOptions)
		c.mu.Lock()
		defer c.mu.Unlock()
		return true, &runtime.Unknown{Raw: []byte(c.logs[opts.Container])}, nil
	})
	return c
}

// waitCloneSecret waits until the clone Secret Job j's pod reads is owned
// by j (the executor creates it before the Job, then hands it over) and
// returns it. Its name is CloneSecretName's, with a random part.
func (c *cluster) waitCloneSecret(j *batchv1.Job) *corev1.Secret {
	c.t.Helper()
	name := jobCloneSecret(j)
	prefix := "acaleph-kontinuous-79e65f19-" + j.Labels[LabelBuild] + "-clone-"
	if !strings.HasPrefix(name, prefix) || len(name) != len(prefix)+16 {
		c.t.Fatalf("clone secret name %q, want %s and 16 random hex digits", name, prefix)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		s, err := c.client.CoreV1().Secrets(j.Namespace).Get(c.t.Context(), name, metav1.GetOptions{})
		if err == nil && len(s.OwnerReferences) == 1 && s.OwnerReferences[0].UID == j.UID &&
			s.OwnerReferences[0].Kind == "Job" && s.OwnerReferences[0].Name == j.Name {
			if s.Labels[LabelRole] != RoleCloneToken || s.Labels[LabelPipeline] != j.Labels[LabelPipeline] || s.Labels[LabelBuild] != j.Labels[LabelBuild] {
				c.t.Fatalf("clone secret labels %v", s.Labels)
			}
			return s
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("clone secret %s never owned by job %s: %+v, %v", name, j.Name, s, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitJob waits for the executor to create its Job.
func (c *cluster) waitJob(ns, name string) *batchv1.Job {
	c.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		j, err := c.client.BatchV1().Jobs(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err == nil {
			return j
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.t.Fatalf("job %s/%s was not created", ns, name)
	return nil
}

// runPod creates the Job's pod with its containers in the given states.
func (c *cluster) runPod(j *batchv1.Job, phase corev1.PodPhase, initState, stageState corev1.ContainerState) *corev1.Pod {
	c.t.Helper()
	suffix := "abcde"
	if len(j.UID) >= 5 {
		suffix = string(j.UID[len(j.UID)-5:])
	}
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: j.Name + "-" + suffix, Namespace: j.Namespace,
			Labels:          map[string]string{labelJobName: j.Name, labelControllerUID: string(j.UID)},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "batch/v1", Kind: "Job", Name: j.Name, UID: j.UID}}},
		Spec: j.Spec.Template.Spec,
		Status: corev1.PodStatus{Phase: phase,
			InitContainerStatuses: []corev1.ContainerStatus{{Name: "clone", State: initState}},
			ContainerStatuses:     []corev1.ContainerStatus{{Name: "stage", Image: j.Spec.Template.Spec.Containers[0].Image, State: stageState}}},
	}
	p, err := c.client.CoreV1().Pods(j.Namespace).Create(context.Background(), p, metav1.CreateOptions{})
	if err != nil {
		c.t.Fatal(err)
	}
	return p
}

func (c *cluster) setCondition(j *batchv1.Job, typ batchv1.JobConditionType, reason string) {
	c.t.Helper()
	cur, err := c.client.BatchV1().Jobs(j.Namespace).Get(context.Background(), j.Name, metav1.GetOptions{})
	if err != nil {
		c.t.Fatal(err)
	}
	cur.Status.Conditions = append(cur.Status.Conditions, batchv1.JobCondition{Type: typ, Status: corev1.ConditionTrue, Reason: reason})
	if _, err := c.client.BatchV1().Jobs(j.Namespace).UpdateStatus(context.Background(), cur, metav1.UpdateOptions{}); err != nil {
		c.t.Fatal(err)
	}
}

var (
	terminated0 = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0, Reason: "Completed"}}
	runningNow  = corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.Now()}}
)

// syncBuffer is a log that tests read while the executor writes.
type syncBuffer struct {
	mu     sync.Mutex
	b      bytes.Buffer
	writes int
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writes++
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// outcomes records what RunStage reported.
type outcomes struct {
	mu   sync.Mutex
	list []pipeline.StageOutcome
}

func (o *outcomes) report(out pipeline.StageOutcome) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.list = append(o.list, out)
}

func (o *outcomes) last() pipeline.StageOutcome {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.list) == 0 {
		return pipeline.StageOutcome{}
	}
	return o.list[len(o.list)-1]
}

// runAsync runs RunStage in a goroutine.
func runAsync(ctx context.Context, e *Executor, job pipeline.StageJob, log *syncBuffer, rep *outcomes) <-chan error {
	done := make(chan error, 1)
	go func() { done <- e.RunStage(ctx, job, log, rep.report) }()
	return done
}

func waitResult(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(15 * time.Second):
		t.Fatal("RunStage did not return")
		return nil
	}
}

func TestRunStageStreamsLogsAndSucceedsWhenTheJobCompletes(t *testing.T) {
	c := newCluster(t)
	c.logs["clone"] = "2024-05-01T10:00:00.000000001Z checked out " + testCommit + "\n"
	c.logs["stage"] = "2024-05-01T10:00:01.5Z ok  \tpkg\t0.1s\n2024-05-01T10:00:02Z PASS\n"
	e := newTestExecutor(t, c.client)
	job := stageJob("command", map[string]any{"command": []any{"go", "test"}, "image": "golang:1.22"})
	var log syncBuffer
	var rep outcomes
	done := runAsync(t.Context(), e, job, &log, &rep)

	name := JobName(job.Owner, job.Repo, job.BuildNumber, job.Stage.Index)
	j := c.waitJob("builds", name)
	if j.Labels[LabelPipeline] != "acaleph.kontinuous" || j.Labels[LabelBuild] != "7" || j.Labels[LabelStage] != "2" {
		t.Errorf("job labels = %v", j.Labels)
	}
	s := c.waitCloneSecret(j)
	if string(s.Data["token"]) != testToken {
		t.Error("the clone secret does not hold the token")
	}
	pod := c.runPod(j, corev1.PodSucceeded, terminated0, terminated0)
	c.setCondition(j, batchv1.JobComplete, "")
	if err := waitResult(t, done); err != nil {
		t.Fatalf("RunStage = %v, want success", err)
	}
	// The stage ended: its clone Secret is gone.
	if _, err := c.client.CoreV1().Secrets("builds").Get(t.Context(), s.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("clone secret after the stage ended: %v, want not found", err)
	}
	want := "checked out " + testCommit + "\nok  \tpkg\t0.1s\nPASS\n"
	if got := log.String(); got != want {
		t.Errorf("log = %q, want %q (clone then stage, timestamps stripped)", got, want)
	}
	if log.writes != 3 {
		t.Errorf("log got %d writes, want one per line (3)", log.writes)
	}
	got := rep.last()
	if got.PodNamespace != "builds" || got.JobName != name || got.PodName != pod.Name || got.DockerImage != "golang:1.22" {
		t.Errorf("last outcome = %+v", got)
	}
}

func TestRunStageStreamsFakeClientsetLogs(t *testing.T) {
	// The fake clientset's own GetLogs answer, with no reactor: proves
	// lines without kubelet timestamps are passed on as they are.
	client := fake.NewClientset(pipelineSecrets()...)
	e := newTestExecutor(t, client)
	c := &cluster{t: t, client: client}
	job := stageJob("command", map[string]any{"command": "true"})
	var log syncBuffer
	var rep outcomes
	done := runAsync(t.Context(), e, job, &log, &rep)
	j := c.waitJob("builds", JobName(job.Owner, job.Repo, job.BuildNumber, job.Stage.Index))
	c.runPod(j, corev1.PodSucceeded, terminated0, terminated0)
	c.setCondition(j, batchv1.JobComplete, "")
	if err := waitResult(t, done); err != nil {
		t.Fatal(err)
	}
	if got := log.String(); got != "fake logs\nfake logs\n" {
		t.Errorf("log = %q, want the clone's and the stage's fake logs", got)
	}
}

func TestRunStageFailsWithTheExitCodeWhenTheJobFails(t *testing.T) {
	c := newCluster(t)
	e := newTestExecutor(t, c.client)
	job := stageJob("command", map[string]any{"command": "false"})
	var log syncBuffer
	var rep outcomes
	done := runAsync(t.Context(), e, job, &log, &rep)
	j := c.waitJob("builds", JobName(job.Owner, job.Repo, job.BuildNumber, job.Stage.Index))
	c.runPod(j, corev1.PodFailed, terminated0, corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 3, Reason: "Error"}})
	c.setCondition(j, batchv1.JobFailed, "BackoffLimitExceeded")
	err := waitResult(t, done)
	if err == nil || err.Error() != "command exited with code 3" {
		t.Fatalf("RunStage = %v, want the exit code", err)
	}
}

func TestRunStageFailsAndDeletesTheJobOnImagePullBackOff(t *testing.T) {
	c := newCluster(t)
	e := newTestExecutor(t, c.client)
	job := stageJob("command", map[string]any{"command": "true", "image": "nope/nope:1"})
	var log syncBuffer
	var rep outcomes
	done := runAsync(t.Context(), e, job, &log, &rep)
	j := c.waitJob("builds", JobName(job.Owner, job.Repo, job.BuildNumber, job.Stage.Index))
	c.runPod(j, corev1.PodPending, terminated0, corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{
		Reason: "ImagePullBackOff", Message: `Back-off pulling image "nope/nope:1"`}})
	err := waitResult(t, done)
	if err == nil || !strings.Contains(err.Error(), `cannot pull image "nope/nope:1"`) {
		t.Fatalf("RunStage = %v, want an image pull failure", err)
	}
	if _, err := c.client.BatchV1().Jobs("builds").Get(t.Context(), j.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the Job of a stage that cannot pull its image still exists (get: %v)", err)
	}
}

func TestRunStageCancelDeletesTheJobWithBackgroundPropagation(t *testing.T) {
	c := newCluster(t)
	e := newTestExecutor(t, c.client)
	var policy *metav1.DeletionPropagation
	var mu sync.Mutex
	c.client.PrependReactor("delete", "jobs", func(a k8stesting.Action) (bool, runtime.Object, error) {
		mu.Lock()
		defer mu.Unlock()
		opts := a.(k8stesting.DeleteAction).GetDeleteOptions()
		policy = opts.PropagationPolicy
		return false, nil, nil
	})
	job := stageJob("command", map[string]any{"command": "sleep 1000"})
	ctx, cancel := context.WithCancelCause(t.Context())
	var log syncBuffer
	var rep outcomes
	done := runAsync(ctx, e, job, &log, &rep)
	j := c.waitJob("builds", JobName(job.Owner, job.Repo, job.BuildNumber, job.Stage.Index))
	c.runPod(j, corev1.PodRunning, terminated0, runningNow)
	cancel(pipeline.ErrBuildCanceled)
	if err := waitResult(t, done); !errors.Is(err, context.Canceled) {
		t.Fatalf("RunStage = %v, want context.Canceled", err)
	}
	if _, err := c.client.BatchV1().Jobs("builds").Get(t.Context(), j.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the canceled stage's Job still exists (get: %v)", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if policy == nil || *policy != metav1.DeletePropagationBackground {
		t.Errorf("propagation policy = %v, want Background", policy)
	}
}

func TestRunStageTimesOutAndDeletesTheJob(t *testing.T) {
	c := newCluster(t)
	e := newTestExecutor(t, c.client)
	job := stageJob("command", map[string]any{"command": "sleep 1000"})
	job.Timeout = 100 * time.Millisecond
	// The job controller here never enforces activeDeadlineSeconds: the
	// executor's own deadline (timeout + grace) must stop the stage.
	start := time.Now()
	var log syncBuffer
	var rep outcomes
	e.grace = 200 * time.Millisecond
	done := runAsync(t.Context(), e, job, &log, &rep)
	j := c.waitJob("builds", JobName(job.Owner, job.Repo, job.BuildNumber, job.Stage.Index))
	err := waitResult(t, done)
	if !errors.Is(err, ErrTimedOut) || err.Error() != "stage timed out after 100ms" {
		t.Fatalf("RunStage = %v, want a timeout", err)
	}
	if time.Since(start) < 300*time.Millisecond {
		t.Errorf("the stage ended before its timeout and grace")
	}
	if _, err := c.client.BatchV1().Jobs("builds").Get(t.Context(), j.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the timed-out stage's Job still exists (get: %v)", err)
	}
	if got := *j.Spec.ActiveDeadlineSeconds; got != 1 {
		t.Errorf("activeDeadlineSeconds = %d, want the timeout rounded up (1)", got)
	}
}

func TestRunStageAdoptsTheJobOfTheSameRunAndReplacesAStaleOne(t *testing.T) {
	for _, tc := range []struct {
		name     string
		run      int64 // the existing Job's run
		want     int64 // the run RunStage asks for
		finished bool  // the existing Job has completed
		adopted  bool
	}{
		{"same run is adopted", 1700000000000000000, 1700000000000000000, true, true},
		{"earlier run is replaced", 1600000000000000000, 1700000000000000000, true, false},
		{"unfinished job of another run is adopted", 0, 1700000000000000000, false, true},
		{"finished job of an unknown run is replaced", 0, 0, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t)
			e := newTestExecutor(t, c.client)
			job := stageJob("command", map[string]any{"command": "true"})
			job.Stage.Started = tc.want
			// A Job left by a server that stopped while it ran.
			old := job
			old.Stage.Started = tc.run
			want, _, err := e.buildJob(old, jobInput{namespace: "builds", timeout: time.Minute})
			if err != nil {
				t.Fatal(err)
			}
			existing, err := c.client.BatchV1().Jobs("builds").Create(t.Context(), want, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			var oldPod *corev1.Pod
			if tc.finished {
				oldPod = c.runPod(existing, corev1.PodSucceeded, terminated0, terminated0)
				c.setCondition(existing, batchv1.JobComplete, "")
			} else {
				oldPod = c.runPod(existing, corev1.PodRunning, terminated0, runningNow)
			}

			var log syncBuffer
			var rep outcomes
			done := runAsync(t.Context(), e, job, &log, &rep)
			if tc.adopted {
				if !tc.finished {
					waitOutcome(t, &rep, oldPod.Name)
					c.setCondition(existing, batchv1.JobComplete, "")
				}
				if err := waitResult(t, done); err != nil {
					t.Fatalf("RunStage = %v, want the adopted Job's success", err)
				}
				if got := rep.last().PodName; got != oldPod.Name {
					t.Errorf("pod name = %q, want the adopted Job's pod", got)
				}
				return
			}
			// The stale Job is replaced by a new one with a new UID.
			deadline := time.Now().Add(10 * time.Second)
			var j *batchv1.Job
			for time.Now().Before(deadline) {
				j, err = c.client.BatchV1().Jobs("builds").Get(t.Context(), want.Name, metav1.GetOptions{})
				if err == nil && j.UID != existing.UID {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			if j == nil || j.UID == existing.UID {
				t.Fatal("the stale Job was not replaced")
			}
			if want := fmt.Sprint(tc.want); j.Annotations[annoRun] != want {
				t.Errorf("new Job run = %q, want %s", j.Annotations[annoRun], want)
			}
			c.runPod(j, corev1.PodSucceeded, terminated0, terminated0)
			c.setCondition(j, batchv1.JobComplete, "")
			if err := waitResult(t, done); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestRunStageRefusesAJobOfTheSameNameItDidNotMake(t *testing.T) {
	c := newCluster(t)
	e := newTestExecutor(t, c.client)
	job := stageJob("command", map[string]any{"command": "true"})
	name := JobName(job.Owner, job.Repo, job.BuildNumber, job.Stage.Index)
	if _, err := c.client.BatchV1().Jobs("builds").Create(t.Context(), &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "builds", Labels: map[string]string{"app": "other"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	err := e.RunStage(t.Context(), job, io.Discard, nil)
	if !errors.Is(err, pipeline.ErrConflict) {
		t.Fatalf("RunStage = %v, want ErrConflict", err)
	}
	if _, err := c.client.BatchV1().Jobs("builds").Get(t.Context(), name, metav1.GetOptions{}); err != nil {
		t.Errorf("the foreign Job was touched: %v", err)
	}
}

func TestCleanupBuildDeletesTheCloneSecretsByLabel(t *testing.T) {
	c := newCluster(t)
	e := newTestExecutor(t, c.client)
	job := stageJob("command", map[string]any{"command": "true"})
	job.Namespace = "team-a"
	var names []string
	for range 2 {
		name, err := CloneSecretName(job.Owner, job.Repo, job.BuildNumber)
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(names, name) {
			t.Fatalf("CloneSecretName repeated %q", name)
		}
		names = append(names, name)
		if err := e.createCloneSecret(t.Context(), job, "team-a", name); err != nil {
			t.Fatal(err)
		}
	}
	// Another build's clone Secret stays.
	other := job
	other.BuildNumber = 8
	otherName, err := CloneSecretName(other.Owner, other.Repo, other.BuildNumber)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.createCloneSecret(t.Context(), other, "team-a", otherName); err != nil {
		t.Fatal(err)
	}
	if err := e.CleanupBuild(t.Context(), job.Owner, job.Repo, job.BuildNumber); err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		if _, err := c.client.CoreV1().Secrets("team-a").Get(t.Context(), name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("secret %s still exists after CleanupBuild: %v", name, err)
		}
	}
	if _, err := c.client.CoreV1().Secrets("team-a").Get(t.Context(), otherName, metav1.GetOptions{}); err != nil {
		t.Errorf("another build's clone secret: %v", err)
	}
	// The pipeline's own Secrets stay.
	if _, err := c.client.CoreV1().Secrets("team-a").Get(t.Context(), "deploy-creds", metav1.GetOptions{}); err != nil {
		t.Errorf("pipeline secret: %v", err)
	}
	// After a restart the executor does not remember; it looks everywhere.
	restarted := newTestExecutor(t, c.client)
	if err := restarted.CleanupBuild(t.Context(), other.Owner, other.Repo, other.BuildNumber); err != nil {
		t.Fatal(err)
	}
	if _, err := c.client.CoreV1().Secrets("team-a").Get(t.Context(), otherName, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("a restarted executor's CleanupBuild left the secret: %v", err)
	}
}

// Finding 11 of issue 13: the build namespaces are shared by every
// pipeline; a stage may only name Secrets labelled for its pipeline, never
// another pipeline's, an unlabelled one, or a clone-token Secret.
func TestRunStageRefusesSecretsNotLabelledForThePipeline(t *testing.T) {
	c := newCluster(t)
	e := newTestExecutor(t, c.client)
	clone := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "acaleph-kontinuous-79e65f19-6-clone-00112233aabbccdd", Namespace: "builds",
		Labels: map[string]string{LabelPipeline: "acaleph.kontinuous", LabelBuild: "6", LabelRole: RoleCloneToken}},
		Data: map[string][]byte{"token": []byte("another-builds-clone-token")}}
	if _, err := c.client.CoreV1().Secrets("builds").Create(t.Context(), clone, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"other-creds", "unlabelled", clone.Name} {
		t.Run(name, func(t *testing.T) {
			job := stageJob("command", map[string]any{"command": "true"})
			job.SecretNames = []string{"deploy-creds", name}
			var log syncBuffer
			err := e.RunStage(t.Context(), job, &log, nil)
			if !errors.Is(err, pipeline.ErrInvalid) {
				t.Fatalf("RunStage = %v, want ErrInvalid", err)
			}
			msg := pipeline.PublicMessage(err)
			for _, want := range []string{`Secret "` + name + `"`, "is not this pipeline's", "kontinuous.io/pipeline=acaleph.kontinuous"} {
				if !strings.Contains(msg, want) {
					t.Errorf("message %q does not say %q", msg, want)
				}
			}
			for _, v := range []string{"other-pipelines-token", "nobodys-token", "another-builds-clone-token"} {
				if strings.Contains(msg, v) || strings.Contains(log.String(), v) {
					t.Errorf("a refused Secret's value leaked")
				}
			}
			jobs, err := c.client.BatchV1().Jobs("builds").List(t.Context(), metav1.ListOptions{})
			if err != nil || len(jobs.Items) != 0 {
				t.Errorf("jobs = %d, %v; want none", len(jobs.Items), err)
			}
			secrets, err := c.client.CoreV1().Secrets("builds").List(t.Context(), metav1.ListOptions{LabelSelector: CloneSecretSelector(job.Owner, job.Repo, job.BuildNumber)})
			if err != nil || len(secrets.Items) != 0 {
				t.Errorf("clone secrets of the refused stage = %d, %v; want none", len(secrets.Items), err)
			}
		})
	}
}

func TestLogCopySkipsLinesAnEarlierAttemptWrote(t *testing.T) {
	var buf syncBuffer
	s := &streamer{out: &lineWriter{w: &buf}}
	first := "2024-05-01T10:00:00.1Z one\n2024-05-01T10:00:00.2Z two\n"
	last, err := s.copy(strings.NewReader(first), time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	// The resumed stream starts at the second (SinceTime has seconds
	// only), so it repeats one and two.
	again := "2024-05-01T10:00:00.1Z one\n2024-05-01T10:00:00.2Z two\n2024-05-01T10:00:00.35Z three\nno timestamp\n" +
		"2024-05-01T10:00:01Z " + strings.Repeat("x", maxLine+10) + "\n"
	if _, err := s.copy(strings.NewReader(again), last); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) < 5 || lines[0] != "one" || lines[1] != "two" || lines[2] != "three" || lines[3] != "no timestamp" {
		t.Fatalf("lines = %q", lines[:min(len(lines), 4)])
	}
	if n := len(strings.Join(lines[4:], "")); n != maxLine+10 {
		t.Errorf("a long line lost bytes: %d of %d", n, maxLine+10)
	}
}

func TestRunStageFailsBeforeCreatingAJobWhenAReferencedSecretIsMissing(t *testing.T) {
	c := newCluster(t)
	e := newTestExecutor(t, c.client)
	job := stageJob("command", map[string]any{"command": "true"})
	job.SecretNames = []string{"deploy-creds", "not-created"}
	err := e.RunStage(t.Context(), job, io.Discard, nil)
	if !errors.Is(err, pipeline.ErrInvalid) {
		t.Fatalf("RunStage = %v, want ErrInvalid", err)
	}
	msg := pipeline.PublicMessage(err)
	for _, want := range []string{`Secret "not-created"`, `namespace "builds"`, "kubectl -n builds create secret generic not-created"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q does not say %q", msg, want)
		}
	}
	jobs, err := c.client.BatchV1().Jobs("builds").List(t.Context(), metav1.ListOptions{})
	if err != nil || len(jobs.Items) != 0 {
		t.Errorf("jobs = %v, %v; want none", jobs, err)
	}
}

func TestRunStageMasksReferencedSecretValuesAndNeverInlinesThem(t *testing.T) {
	c := newCluster(t)
	c.logs["stage"] = "2024-05-01T10:00:01Z token is " + testKubeSecret + "\n2024-05-01T10:00:02Z pass hub-password done\n"
	e := newTestExecutor(t, c.client)
	if !e.SecretsByReference() {
		t.Fatal("SecretsByReference = false")
	}
	job := stageJob("command", map[string]any{"command": "env"})
	var log syncBuffer
	var rep outcomes
	done := runAsync(t.Context(), e, job, &log, &rep)
	j := c.waitJob("builds", JobName(job.Owner, job.Repo, job.BuildNumber, job.Stage.Index))
	raw, err := yaml.Marshal(j)
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{testEnvSecret, testKubeSecret, "hub-password", testToken} {
		if bytes.Contains(raw, []byte(secret)) {
			t.Errorf("the created Job contains the secret %q", secret)
		}
	}
	c.runPod(j, corev1.PodSucceeded, terminated0, terminated0)
	c.setCondition(j, batchv1.JobComplete, "")
	if err := waitResult(t, done); err != nil {
		t.Fatal(err)
	}
	if got, want := log.String(), "token is ********\npass ******** done\n"; got != want {
		t.Errorf("log = %q, want %q", got, want)
	}
}

func TestPlainEnvKeepsOnlyKontinuousValuesAndStageVars(t *testing.T) {
	job := pipeline.StageJob{
		Stage: pipeline.Stage{Vars: map[string]string{"GO_VERSION": "1.22", "REGION": "eu"}},
		Env: map[string]string{
			"KONTINUOUS_BUILD_ID":    "7",
			"GO_VERSION":             "1.22",
			"REGION":                 "secret-overrode-the-var", // a secret key named like a var
			"API_TOKEN":              "secret",
			"KONTINUOUS_CLONE_TOKEN": "ghs_x",
		},
	}
	env, dropped := plainEnv(job)
	if fmt.Sprint(env) != "map[GO_VERSION:1.22 KONTINUOUS_BUILD_ID:7]" {
		t.Errorf("env = %v", env)
	}
	if fmt.Sprint(dropped) != "[API_TOKEN KONTINUOUS_CLONE_TOKEN REGION]" {
		t.Errorf("dropped = %v", dropped)
	}
}

func TestRunStageLeavesTheJobRunningWhenTheServerStopsOrLosesTheBuild(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cause error // nil: a plain cancel, the server stopping
	}{
		{"server stopping", nil},
		{"taken over by another instance", pipeline.ErrTakenOver},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t)
			e := newTestExecutor(t, c.client)
			job := stageJob("command", map[string]any{"command": "sleep 1000"})
			ctx, cancel := context.WithCancelCause(t.Context())
			var log syncBuffer
			var rep outcomes
			done := runAsync(ctx, e, job, &log, &rep)
			j := c.waitJob("builds", JobName(job.Owner, job.Repo, job.BuildNumber, job.Stage.Index))
			c.runPod(j, corev1.PodRunning, terminated0, runningNow)
			cancel(tc.cause)
			if err := waitResult(t, done); !errors.Is(err, context.Canceled) {
				t.Fatalf("RunStage = %v, want context.Canceled", err)
			}
			for _, a := range c.client.Actions() {
				if a.GetVerb() == "delete" && a.GetResource().Resource == "jobs" {
					t.Fatalf("the Job was deleted; the next server must find it running")
				}
			}
			// The server that drives the build next adopts it.
			cur, err := c.client.BatchV1().Jobs("builds").Get(t.Context(), j.Name, metav1.GetOptions{})
			if err != nil || cur.UID != j.UID {
				t.Fatalf("job after RunStage ended: %v, %v", cur, err)
			}
			next := runAsync(t.Context(), newTestExecutor(t, c.client), job, &syncBuffer{}, &outcomes{})
			c.setCondition(j, batchv1.JobComplete, "")
			if err := waitResult(t, next); err != nil {
				t.Fatalf("adopting RunStage = %v, want the Job's success", err)
			}
		})
	}
}

// waitOutcome waits until RunStage has reported pod.
func waitOutcome(t *testing.T, rep *outcomes, pod string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for rep.last().PodName != pod {
		if time.Now().After(deadline) {
			t.Fatalf("RunStage never reported pod %s (last %+v)", pod, rep.last())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
