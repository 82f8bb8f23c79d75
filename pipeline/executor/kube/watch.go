package kube

import (
	"context"
	"errors"
	"fmt"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/kontinuous/kontinuous/pipeline"
)

// Labels the job controller puts on the pods it creates.
const (
	labelJobName       = "batch.kubernetes.io/job-name"
	labelControllerUID = "batch.kubernetes.io/controller-uid"
)

// createOrAdopt creates the Job, or adopts the existing Job of the same
// name when it belongs to the same run of the same stage (a server
// restart) or has not finished. A finished Job of an earlier run of the
// stage (a re-run) is deleted and replaced. A Job of that name that Kontinuous did not make for this stage
// is a conflict and is left alone.
func (e *Executor) createOrAdopt(ctx context.Context, want *batchv1.Job) (*batchv1.Job, bool, error) {
	jobs := e.cfg.Client.BatchV1().Jobs(want.Namespace)
	where := want.Namespace + "/" + want.Name
	for range 3 {
		j, err := jobs.Create(ctx, want, metav1.CreateOptions{})
		if err == nil {
			return j, false, nil
		}
		if !apierrors.IsAlreadyExists(err) {
			return nil, false, apiError("create job "+where, err)
		}
		cur, err := jobs.Get(ctx, want.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return nil, false, apiError("get job "+where, err)
		}
		for _, k := range []string{LabelPipeline, LabelBuild, LabelStage} {
			if cur.Labels[k] != want.Labels[k] {
				return nil, false, pipeline.Errorf(pipeline.ErrConflict, "job %s exists and was not made by Kontinuous for this stage", where)
			}
		}
		// Adopt the Job of the same run (a restart), finished or not, and
		// any unfinished Job of this stage: the build is running, so it is
		// this run's whatever its Started said. A finished Job of another
		// run (or of an unknown one, Started 0) is a re-run's stale Job.
		run := want.Annotations[annoRun]
		sameRun := run != "0" && cur.Annotations[annoRun] == run
		if cur.DeletionTimestamp == nil && (sameRun || !jobFinished(cur)) {
			return cur, true, nil
		}
		// A stale Job of an earlier run of this stage: replace it.
		e.log.Info("kube: replacing job of an earlier run", "namespace", want.Namespace, "job", want.Name)
		if err := e.deleteJob(ctx, want.Namespace, want.Name, cur.UID); err != nil {
			return nil, false, err
		}
		if err := e.waitGone(ctx, want.Namespace, want.Name, cur.UID); err != nil {
			return nil, false, err
		}
	}
	return nil, false, pipeline.Errorf(pipeline.ErrConflict, "job %s keeps coming back; is another server running this stage?", where)
}

// jobFinished reports whether j has completed or failed.
func jobFinished(j *batchv1.Job) bool {
	for _, c := range j.Status.Conditions {
		if c.Status == corev1.ConditionTrue && (c.Type == batchv1.JobComplete || c.Type == batchv1.JobFailed) {
			return true
		}
	}
	return false
}

// deleteJob deletes a Job with background propagation: the Job goes at
// once and the garbage collector removes its pods, which the kubelet stops.
func (e *Executor) deleteJob(ctx context.Context, ns, name string, uid types.UID) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	opts := metav1.DeleteOptions{PropagationPolicy: ptr(metav1.DeletePropagationBackground)}
	if uid != "" {
		opts.Preconditions = &metav1.Preconditions{UID: &uid}
	}
	err := e.cfg.Client.BatchV1().Jobs(ns).Delete(ctx, name, opts)
	if err == nil || apierrors.IsNotFound(err) || (uid != "" && apierrors.IsConflict(err)) {
		return nil
	}
	return apiError("delete job "+ns+"/"+name, err)
}

// waitGone waits until the Job with uid no longer exists.
func (e *Executor) waitGone(ctx context.Context, ns, name string, uid types.UID) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		cur, err := e.cfg.Client.BatchV1().Jobs(ns).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) || (err == nil && cur.UID != uid) {
			return nil
		}
		if err != nil && ctx.Err() == nil {
			return apiError("get job "+ns+"/"+name, err)
		}
		select {
		case <-ctx.Done():
			return pipeline.Errorf(pipeline.ErrUnavailable, "job %s/%s of an earlier run is still being deleted", ns, name)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// run follows one stage's Job until it ends.
type run struct {
	e        *Executor
	ns, name string
	uid      types.UID
	typ      string
	timeout  time.Duration
	deadline time.Time
	out      pipeline.StageOutcome
	report   func(pipeline.StageOutcome)
	logw     *lineWriter
	logs     *streamer
}

// wait watches the Job and its pod, re-reading both on every event and on
// each resync tick, until the Job completes or fails, a pod condition
// makes the stage hopeless, the deadline passes or ctx ends.
func (r *run) wait(ctx context.Context) error {
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	trigger := make(chan struct{}, 1)
	go r.watch(wctx, trigger, func(o metav1.ListOptions) (watch.Interface, error) {
		o.FieldSelector = fields.OneTermEqualSelector("metadata.name", r.name).String()
		return r.e.cfg.Client.BatchV1().Jobs(r.ns).Watch(wctx, o)
	})
	go r.watch(wctx, trigger, func(o metav1.ListOptions) (watch.Interface, error) {
		o.LabelSelector = labels.Set{labelJobName: r.name}.String()
		return r.e.cfg.Client.CoreV1().Pods(r.ns).Watch(wctx, o)
	})
	tick := time.NewTicker(r.e.cfg.Resync)
	defer tick.Stop()
	deadline := time.NewTimer(time.Until(r.deadline))
	defer deadline.Stop()
	defer func() {
		if r.logs != nil {
			r.logs.stop()
		}
	}()

	for {
		v, err := r.observe(ctx)
		switch {
		case ctx.Err() != nil:
		case err != nil:
			return err
		case v.done && v.kill:
			if err := r.e.deleteJob(ctx, r.ns, r.name, r.uid); err != nil {
				r.e.log.Warn("kube: delete failed job", "namespace", r.ns, "job", r.name, "err", err)
			}
			return v.err
		case v.done:
			r.finishLogs(ctx)
			return v.err
		}
		select {
		case <-ctx.Done():
			if cause := context.Cause(ctx); leaveRunning(cause) {
				r.e.log.Info("kube: leaving the stage's job running for the server that drives the build next",
					"namespace", r.ns, "job", r.name, "why", cause.Error())
				return ctx.Err()
			}
			if err := r.e.deleteJob(ctx, r.ns, r.name, r.uid); err != nil {
				r.e.log.Warn("kube: delete canceled job", "namespace", r.ns, "job", r.name, "err", err)
			}
			return ctx.Err()
		case <-deadline.C:
			if err := r.e.deleteJob(ctx, r.ns, r.name, r.uid); err != nil {
				r.e.log.Warn("kube: delete timed-out job", "namespace", r.ns, "job", r.name, "err", err)
			}
			return timedOut(r.timeout)
		case <-trigger:
		case <-tick.C:
		}
	}
}

// leaveRunning reports whether a stage whose ctx ended with cause keeps
// its Job: when another instance took the build over
// (pipeline.ErrTakenOver), or the server is stopping (a plain
// context.Canceled), the Job runs on and the server that drives the build
// next adopts it (RunStage for the same run). A canceled build
// (pipeline.ErrBuildCanceled) or any other end deletes it.
func leaveRunning(cause error) bool {
	if errors.Is(cause, pipeline.ErrBuildCanceled) {
		return false
	}
	return errors.Is(cause, pipeline.ErrTakenOver) || errors.Is(cause, context.Canceled)
}

// watch keeps a watch open (re-opening it when the server closes it) and
// pokes trigger on every event. Events only say "look again": observe
// reads the current state, so a missed event costs at most one resync.
func (r *run) watch(ctx context.Context, trigger chan<- struct{}, open func(metav1.ListOptions) (watch.Interface, error)) {
	poke := func() {
		select {
		case trigger <- struct{}{}:
		default:
		}
	}
	for ctx.Err() == nil {
		w, err := open(metav1.ListOptions{})
		if err != nil {
			r.e.log.Debug("kube: watch failed; relying on resync", "namespace", r.ns, "job", r.name, "err", err)
		} else {
			r.drain(ctx, w, poke)
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// drain pokes on every event of w until w ends or ctx does, then stops w.
// It does not count on w ending with ctx (a fake watch does not).
func (r *run) drain(ctx context.Context, w watch.Interface, poke func()) {
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-w.ResultChan():
			if !ok {
				poke()
				return
			}
			poke()
		}
	}
}

// verdict is what observe concluded.
type verdict struct {
	done bool
	kill bool // the Job must be deleted: it would never end by itself
	err  error
}

// observe reads the Job and its pod, reports what is new, starts the log
// stream when a container starts, and judges the stage.
func (r *run) observe(ctx context.Context) (verdict, error) {
	j, err := r.e.cfg.Client.BatchV1().Jobs(r.ns).Get(ctx, r.name, metav1.GetOptions{})
	if err != nil || j.UID != r.uid {
		if apierrors.IsNotFound(err) || (err == nil && j.UID != r.uid) {
			return verdict{}, pipeline.Errorf(pipeline.ErrConflict, "job %s/%s was deleted before it finished", r.ns, r.name)
		}
		if ctx.Err() != nil {
			return verdict{}, ctx.Err()
		}
		// A transient API error: try again at the next event or resync.
		r.e.log.Warn("kube: read job", "namespace", r.ns, "job", r.name, "err", err)
		return verdict{}, nil
	}
	pod, err := r.pod(ctx, j)
	if err != nil && ctx.Err() == nil {
		r.e.log.Warn("kube: list pods", "namespace", r.ns, "job", r.name, "err", err)
	}
	if pod != nil {
		if r.out.PodName != pod.Name {
			r.out.PodName = pod.Name
			r.report(r.out)
		}
		if r.logs == nil || r.logs.pod != pod.Name {
			if r.logs != nil {
				r.logs.stop()
			}
			r.logs = newStreamer(r.e.cfg.Client, r.ns, pod, r.logw, r.e.log)
		}
		r.logs.update(pod)
	}
	return judge(j, pod, r.typ, r.timeout), nil
}

// pod returns the newest pod of Job j, or nil.
func (r *run) pod(ctx context.Context, j *batchv1.Job) (*corev1.Pod, error) {
	list, err := r.e.cfg.Client.CoreV1().Pods(r.ns).List(ctx, metav1.ListOptions{
		LabelSelector: labels.Set{labelJobName: r.name}.String(),
	})
	if err != nil {
		return nil, err
	}
	var newest *corev1.Pod
	for i := range list.Items {
		p := &list.Items[i]
		if !ownedBy(p, j.UID) {
			continue // a pod of an earlier Job of the same name
		}
		if newest == nil || newest.CreationTimestamp.Before(&p.CreationTimestamp) {
			newest = p
		}
	}
	return newest, nil
}

func ownedBy(p *corev1.Pod, uid types.UID) bool {
	if p.Labels[labelControllerUID] == string(uid) {
		return true
	}
	for _, o := range p.OwnerReferences {
		if o.UID == uid {
			return true
		}
	}
	return false
}

// finishLogs gives the log stream a little time to deliver the last lines
// after the pod ended, then stops it.
func (r *run) finishLogs(ctx context.Context) {
	if r.logs == nil {
		return
	}
	r.logs.finish(ctx, 15*time.Second)
}

// Reasons a container waits forever; the stage fails at once with the
// kubelet's message instead of running into its timeout.
var (
	pullFailures   = map[string]bool{"ImagePullBackOff": true, "ErrImagePull": true, "InvalidImageName": true, "ErrImageNeverPull": true}
	configFailures = map[string]bool{"CreateContainerConfigError": true, "CreateContainerError": true}
)

// ErrTimedOut is wrapped by the error of a stage that ran out of time.
var ErrTimedOut = errors.New("timed out")

func timedOut(d time.Duration) error {
	return &pipeline.PublicError{Kind: ErrTimedOut, Msg: fmt.Sprintf("stage timed out after %s", d)}
}

// judge maps the state of a Job and its pod onto the stage: running, done
// (nil error: success), or failed with a message for the user.
func judge(j *batchv1.Job, pod *corev1.Pod, typ string, timeout time.Duration) verdict {
	for _, c := range j.Status.Conditions {
		if c.Status != corev1.ConditionTrue {
			continue
		}
		switch c.Type {
		case batchv1.JobComplete:
			return verdict{done: true}
		case batchv1.JobFailed:
			return verdict{done: true, err: failure(c, pod, typ, timeout)}
		}
	}
	if pod == nil {
		return verdict{}
	}
	statuses := append(append([]corev1.ContainerStatus{}, pod.Status.InitContainerStatuses...), pod.Status.ContainerStatuses...)
	for _, cs := range statuses {
		w := cs.State.Waiting
		if w == nil {
			continue
		}
		switch {
		case pullFailures[w.Reason]:
			return verdict{done: true, kill: true, err: errors.New(withDetail(
				fmt.Sprintf("cannot pull image %q of container %s (%s)", cs.Image, cs.Name, w.Reason), w.Message))}
		case configFailures[w.Reason]:
			return verdict{done: true, kill: true, err: errors.New(withDetail(
				fmt.Sprintf("cannot start container %s (%s)", cs.Name, w.Reason), w.Message))}
		}
	}
	return verdict{}
}

// failure explains a Failed Job condition.
func failure(c batchv1.JobCondition, pod *corev1.Pod, typ string, timeout time.Duration) error {
	if c.Reason == batchv1.JobReasonDeadlineExceeded {
		return timedOut(timeout)
	}
	if pod != nil {
		for _, cs := range pod.Status.InitContainerStatuses {
			if t := cs.State.Terminated; t != nil && t.ExitCode != 0 {
				what := "preparing the stage"
				if cs.Name == containerClone {
					what = "cloning the repository"
				}
				return errors.New(withDetail(fmt.Sprintf("%s failed (exit code %d)", what, t.ExitCode), reasonOf(t)))
			}
		}
		for _, cs := range pod.Status.ContainerStatuses {
			if t := cs.State.Terminated; t != nil && t.ExitCode != 0 {
				return errors.New(withDetail(fmt.Sprintf("%s exited with code %d", describe(typ), t.ExitCode), reasonOf(t)))
			}
		}
		if pod.Status.Reason != "" {
			return errors.New(withDetail("pod "+pod.Name+" failed: "+pod.Status.Reason, pod.Status.Message))
		}
	}
	return errors.New(withDetail("job failed: "+c.Reason, c.Message))
}

// reasonOf is a terminated container's reason when it says more than
// "Error" (OOMKilled, ...).
func reasonOf(t *corev1.ContainerStateTerminated) string {
	if t.Reason == "" || t.Reason == "Error" {
		return t.Message
	}
	if t.Message == "" {
		return t.Reason
	}
	return t.Reason + ": " + t.Message
}

func describe(typ string) string {
	switch typ {
	case "docker_build":
		return "docker build"
	case "docker_publish":
		return "docker publish"
	}
	return "command"
}

func withDetail(msg, detail string) string {
	if detail == "" {
		return msg
	}
	return msg + ": " + detail
}
