package main

// End to end with --executor kubernetes on a real node: the test control
// plane plus a kubelet with containerd and runc (scripts/kube-testenv), so
// stage pods really run: the clone init container fetches the commit from
// the stand-in GitHub, the stage's command runs in a busybox image, its
// output comes from the live container. The server keeps stage pods on that
// node with --kube-node-pool; KWOK's node stays for the other tests.

import (
	"bufio"
	"net/http"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	corev1 "k8s.io/api/core/v1"

	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/executor/kube"
	"github.com/kontinuous/kontinuous/pipeline/pipelinetest/fakegithub"
	"github.com/kontinuous/kontinuous/scripts/kube-testenv/testenv"
)

// newNodeWorld is newWorld with the stand-in GitHub on the node's bridge
// gateway, where pods can clone from it, and the server running stages on
// the real node in the local images.
func newNodeWorld(t *testing.T, kc *kubeCluster) *world {
	t.Helper()
	gh := fakegithub.NewOn(t, testenv.Gateway)
	gh.AddUser("alice", 1001, "tok-alice")
	gh.AddUser("bob", 1002, "tok-bob")
	gh.AddUser("carol", 1003, "tok-carol")
	gh.AddUser("dave", 1004, "tok-dave")
	gh.AddRepo("acme", "app")
	gh.Grant("alice", "acme", "app", "admin")
	gh.Grant("carol", "acme", "app", "push")
	gh.Grant("dave", "acme", "app", "read")
	w := &world{t: t, gh: gh, dir: t.TempDir(), extra: []string{
		"--executor", "kubernetes", "--kubeconfig", kc.kubeconfig, "--kube-namespace", kc.ns,
		"--stage-timeout", "2m", "--kube-node-pool", testenv.NodePool,
		// On the bridge too, not loopback (this --listen wins over
		// start's): its URL must be one the stand-in GitHub, which is not
		// on loopback, could send webhooks to, or pipelines are refused.
		"--listen", testenv.Gateway + ":0",
		"--kube-cloner-image", testenv.ClonerImage, "--kube-default-image", testenv.BusyboxImage,
	}}
	w.start()
	return w
}

// waitPod polls the pod until cond holds.
func (kc *kubeCluster) waitPod(t *testing.T, name string, within time.Duration, what string, cond func(*corev1.Pod, error) bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		p, err := kc.admin.CoreV1().Pods(kc.ns).Get(t.Context(), name, metav1.GetOptions{})
		if cond(p, err) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pod %s: %s not reached within %s (last: %v, %+v)", name, what, within, err, p.Status)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestKubernetesExecutorRunsStagesOnARealNode(t *testing.T) {
	_, node := testenv.RequireNode(t)
	kc := newKubeCluster(t)
	ctx := t.Context()
	const secretValue = "node-secret-value-8e1f"
	if _, err := kc.admin.CoreV1().Secrets(kc.ns).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "creds",
		Labels: map[string]string{kube.LabelPipeline: kube.PipelineLabel("acme", "app")}},
		StringData: map[string]string{"API_TOKEN": secretValue}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	w := newNodeWorld(t, kc)
	w.createPipeline()
	carol, dave := token(t, "carol", 1003, "tok-carol"), token(t, "dave", 1004, "tok-dave")
	failed := func() {
		if t.Failed() {
			t.Logf("kubelet log:\n%s", node.LogTail("kubelet"))
		}
	}
	defer failed()

	t.Run("a command stage sees the clone and its secret and streams its lines live", func(t *testing.T) {
		spec := specHead + `    secrets: [creds]
    stages:
      - name: test
        type: command
        params:
          command: [sh, -c, 'cat hello.txt; echo "token=$API_TOKEN"; for i in 1 2 3 4 5 6; do echo "line $i"; sleep 1; done']
`
		sha, r := w.push(map[string]string{".pipeline.yml": spec, "hello.txt": "hello from the repository\n"}, "node-1")
		expect(t, r, http.StatusCreated)
		resp := w.follow(dave, 1, 1)
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("follow: %d", resp.StatusCode)
		}
		sc := bufio.NewScanner(resp.Body)
		var seen []string
		live := false
		for sc.Scan() {
			l := sc.Text()
			seen = append(seen, l)
			if l == "data: line 1" {
				// The first line arrived while the stage still runs.
				b := w.waitKubeBuild(1, func(pipeline.Build) bool { return true })
				live = b.Stages[0].Status == pipeline.StatusRunning
			}
			if l == "event: end" {
				break
			}
		}
		stream := strings.Join(seen, "\n")
		for _, want := range []string{"data: hello from the repository", "data: line 1", "data: line 6", "event: end"} {
			if !strings.Contains(stream, want) {
				t.Errorf("stream lacks %q:\n%s", want, stream)
			}
		}
		if !live {
			t.Errorf("the stage had ended when its first line was streamed; want lines while it runs:\n%s", stream)
		}
		b := w.waitKubeBuild(1, done)
		if b.Status != pipeline.StatusSuccess {
			t.Fatalf("build %s (%q) stages %+v", b.Status, b.Message, b.Stages)
		}
		logText := w.stageLog(1, b.Stages[0].Index)
		if !strings.Contains(logText, "token="+pipeline.Mask) || !strings.Contains(stream, "token="+pipeline.Mask) ||
			strings.Contains(logText, secretValue) || strings.Contains(stream, secretValue) {
			t.Errorf("the secret is not masked in the log:\n%s", logText)
		}
		if !strings.Contains(logText, "checked out "+sha) {
			t.Errorf("the log does not show the clone of %s:\n%s", sha, logText)
		}
		pod, err := kc.admin.CoreV1().Pods(kc.ns).Get(ctx, b.Stages[0].PodName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if pod.Spec.NodeName != testenv.RealNodeName {
			t.Errorf("stage pod ran on %q, want the real node", pod.Spec.NodeName)
		}
		// The clone authenticated with the build's token.
		cloned := false
		for _, req := range w.gh.Requests() {
			if strings.HasPrefix(req.Path, "/git/acme/app.git/") && req.User == "alice" && req.Status == http.StatusOK {
				cloned = true
			}
		}
		if !cloned {
			t.Errorf("no authenticated clone of acme/app reached the git server: %+v", w.gh.Requests())
		}
	})

	t.Run("a failing command fails the build with its exit code", func(t *testing.T) {
		spec := specHead + `    stages:
      - name: broken
        type: command
        params: {command: [sh, -c, 'echo about to fail; exit 3']}
`
		_, r := w.push(map[string]string{".pipeline.yml": spec}, "node-2")
		expect(t, r, http.StatusCreated)
		b := w.waitKubeBuild(2, done)
		if b.Status != pipeline.StatusFail || b.Stages[0].Status != pipeline.StatusFail {
			t.Fatalf("build %s stages %+v, want FAIL", b.Status, b.Stages)
		}
		if !strings.Contains(b.Stages[0].Message, "exited with code 3") {
			t.Errorf("stage message %q lacks the exit code 3", b.Stages[0].Message)
		}
		if l := w.stageLog(2, b.Stages[0].Index); !strings.Contains(l, "about to fail") {
			t.Errorf("log lacks the command's output:\n%s", l)
		}
	})

	t.Run("cancel deletes the Job and the container stops within the kill grace", func(t *testing.T) {
		spec := specHead + `    stages:
      - name: forever
        type: command
        params: {command: [sh, -c, 'echo started; exec sleep 3600']}
`
		_, r := w.push(map[string]string{".pipeline.yml": spec}, "node-3")
		expect(t, r, http.StatusCreated)
		b := w.waitKubeBuild(3, func(b pipeline.Build) bool {
			return b.Status.Done() || (len(b.Stages) == 1 && b.Stages[0].PodName != "")
		})
		if b.Status.Done() {
			t.Fatalf("build ended %s (%q) before the cancel", b.Status, b.Message)
		}
		pod, job := b.Stages[0].PodName, b.Stages[0].JobName
		kc.waitPod(t, pod, 60*time.Second, "a running container", func(p *corev1.Pod, err error) bool {
			return err == nil && len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].State.Running != nil
		})
		p, err := kc.admin.CoreV1().Pods(kc.ns).Get(ctx, pod, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if g := p.Spec.TerminationGracePeriodSeconds; g == nil || *g != 5 {
			t.Errorf("stage pod terminationGracePeriodSeconds = %v, want 5 (the executor's KillGrace)", g)
		}
		start := time.Now()
		expect(t, w.do("POST", "/api/v1/pipelines/acme/app/builds/3/cancel", carol, nil), http.StatusOK)
		b = w.waitKubeBuild(3, done)
		if b.Status != pipeline.StatusCanceled {
			t.Fatalf("build %s, want CANCELED", b.Status)
		}
		if _, err := kc.admin.BatchV1().Jobs(kc.ns).Get(ctx, job, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			// The executor deletes it before the stage ends.
			t.Errorf("Job %s after cancel: %v, want it deleted", job, err)
		}
		// The pod object goes only once the kubelet has stopped its
		// containers. Its command is PID 1 and ignores SIGTERM, so it is
		// killed when the pod's grace period (the executor's KillGrace,
		// 5 s, not Kubernetes' 30 s) ends.
		kc.waitPod(t, pod, 90*time.Second, "its container stopped and the pod gone", func(_ *corev1.Pod, err error) bool {
			return apierrors.IsNotFound(err)
		})
		t.Logf("container stopped and pod gone %s after the cancel", time.Since(start).Round(100*time.Millisecond))
	})

	t.Run("a stage past its timeout is killed with a message", func(t *testing.T) {
		spec := specHead + `    stages:
      - name: slow
        type: command
        params: {command: [sh, -c, 'echo working; exec sleep 3600'], timeout: 5s}
`
		_, r := w.push(map[string]string{".pipeline.yml": spec}, "node-4")
		expect(t, r, http.StatusCreated)
		b := w.waitKubeBuild(4, func(b pipeline.Build) bool {
			return b.Status.Done() || (len(b.Stages) == 1 && b.Stages[0].PodName != "")
		})
		pod := b.Stages[0].PodName
		b = w.waitBuildWithin(90*time.Second, 4, done)
		if b.Status != pipeline.StatusFail || !strings.Contains(b.Stages[0].Message, "timed out") {
			t.Fatalf("build %s stage %+v, want FAIL saying the stage timed out", b.Status, b.Stages[0])
		}
		if pod != "" {
			kc.waitPod(t, pod, 90*time.Second, "its container stopped", func(p *corev1.Pod, err error) bool {
				if apierrors.IsNotFound(err) {
					return true
				}
				return err == nil && len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].State.Running == nil
			})
		}
	})

	t.Run("a restarted server adopts the running Job", func(t *testing.T) {
		spec := specHead + `    stages:
      - name: long
        type: command
        params: {command: [sh, -c, 'echo begin; sleep 8; echo finish']}
`
		_, r := w.push(map[string]string{".pipeline.yml": spec}, "node-5")
		expect(t, r, http.StatusCreated)
		b := w.waitKubeBuild(5, func(b pipeline.Build) bool {
			return b.Status.Done() || (len(b.Stages) == 1 && b.Stages[0].PodName != "")
		})
		if b.Status.Done() {
			t.Fatalf("build ended %s (%q) before the restart", b.Status, b.Message)
		}
		kc.waitPod(t, b.Stages[0].PodName, 60*time.Second, "a running container", func(p *corev1.Pod, err error) bool {
			return err == nil && len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].State.Running != nil
		})
		before, err := kc.admin.BatchV1().Jobs(kc.ns).Get(ctx, b.Stages[0].JobName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		w.stop()
		w.start()
		b = w.waitKubeBuild(5, done)
		if b.Status != pipeline.StatusSuccess {
			t.Fatalf("build %s (%q) stage %+v, want the adopted Job's success", b.Status, b.Message, b.Stages[0])
		}
		after, err := kc.admin.BatchV1().Jobs(kc.ns).Get(ctx, b.Stages[0].JobName, metav1.GetOptions{})
		if err != nil || after.UID != before.UID {
			t.Errorf("Job after the restart: %v (uid %v, want %v)", err, after, before.UID)
		}
		if l := w.stageLog(5, b.Stages[0].Index); !strings.Contains(l, "begin") || !strings.Contains(l, "finish") {
			t.Errorf("the adopted stage's log lacks its lines:\n%s", l)
		}
	})
}
