package pipeline_test

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/executor/kube"
)

// kubeSpy runs stages on the real kubernetes executor over a fake
// clientset, long enough for the executor to create the stage's Job; it
// keeps that Job and ends the stage as a success (nothing runs pods).
type kubeSpy struct {
	*kube.Executor
	client *fake.Clientset
	jobs   chan *batchv1.Job
}

func (x kubeSpy) RunStage(ctx context.Context, job pipeline.StageJob, log io.Writer, report func(pipeline.StageOutcome)) error {
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- x.Executor.RunStage(cctx, job, log, report) }()
	name := kube.JobName(job.Owner, job.Repo, job.BuildNumber, job.Stage.Index)
	deadline := time.Now().Add(patience)
	for time.Now().Before(deadline) {
		j, err := x.client.BatchV1().Jobs("builds").Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			x.jobs <- j
			cancel() // the server "stops": the executor leaves the Job
			<-done
			return nil
		}
		select {
		case err := <-done:
			cancel()
			return err
		case <-time.After(10 * time.Millisecond):
		}
	}
	cancel()
	<-done
	return context.DeadlineExceeded
}

func secretEnvFrom(j *batchv1.Job) []string {
	var names []string
	for _, c := range append(j.Spec.Template.Spec.InitContainers, j.Spec.Template.Spec.Containers...) {
		for _, ef := range c.EnvFrom {
			if ef.SecretRef != nil {
				names = append(names, ef.SecretRef.Name)
			}
		}
	}
	return names
}

// Finding 10 of issue 13, seen in the kubernetes Job itself: a fork
// build's stage Job has no envFrom of the pipeline's Secrets, while the
// same stage of a build from the repository has.
func TestForkStageJobOnKubernetesHasNoSecretEnvFrom(t *testing.T) {
	f := newFixture(t)
	client := fake.NewClientset(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "creds", Namespace: "builds",
		Labels: map[string]string{kube.LabelPipeline: kube.PipelineLabel("acme", "app")}},
		Data: map[string][]byte{"API_TOKEN": []byte("cluster-secret")}})
	kx, err := kube.New(kube.Config{Client: client, DefaultNamespace: "builds", Resync: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	spy := kubeSpy{Executor: kx, client: client, jobs: make(chan *batchv1.Job, 4)}
	e := f.engine(spy, true)
	sha := f.commit(secretSpec)

	n := f.trigger(e, pipeline.Build{Commit: sha}).Number
	own := <-spy.jobs
	if b := f.waitBuild(n, "done", func(b pipeline.Build) bool { return b.Status.Done() }); b.Status != pipeline.StatusSuccess {
		t.Fatalf("same-repository build: %s %q", b.Status, b.Message)
	}
	if got := secretEnvFrom(own); len(got) != 1 || got[0] != "creds" {
		t.Fatalf("same-repository stage Job envFrom secrets %v, want [creds]", got)
	}

	n = f.trigger(e, pipeline.Build{Event: pipeline.EventPullRequest, Branch: "feature", Commit: sha, Fork: true}).Number
	forkJob := <-spy.jobs
	if b := f.waitBuild(n, "done", func(b pipeline.Build) bool { return b.Status.Done() }); b.Status != pipeline.StatusSuccess {
		t.Fatalf("fork build: %s %q", b.Status, b.Message)
	}
	if got := secretEnvFrom(forkJob); len(got) != 0 {
		t.Fatalf("fork stage Job has secret envFrom %v", got)
	}
	for _, c := range forkJob.Spec.Template.Spec.Containers {
		for _, env := range c.Env {
			if strings.Contains(env.Value, "cluster-secret") || (env.ValueFrom != nil && env.ValueFrom.SecretKeyRef != nil && env.ValueFrom.SecretKeyRef.Name == "creds") {
				t.Fatalf("fork stage Job env %s reads the pipeline secret", env.Name)
			}
		}
	}
}
