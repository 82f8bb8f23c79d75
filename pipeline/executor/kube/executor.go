// Package kube is the Kubernetes executor: each stage of a build runs as a
// batch/v1 Job in the pipeline's namespace, as in the original Kontinuous,
// driven through client-go.
//
// A stage's Job is named deterministically from pipeline, build and stage
// (JobName), labelled kontinuous.io/pipeline, /build and /stage, and has
// backoffLimit 0, activeDeadlineSeconds from the stage's timeout and
// ttlSecondsAfterFinished. Its pod has an init container that clones the
// repository at the build's commit (the token comes from a per-stage Secret
// with a random name, owned by the Job, deleted when the stage ends) and one container for the
// stage:
//
//   - command: the stage's image with its command, args and working_dir,
//     run without a shell, like the local executor;
//   - docker_build: a daemonless builder (kaniko, Config.BuilderImage)
//     building the Dockerfile and pushing to the internal registry
//     (KONTINUOUS_INTERNAL_REGISTRY), never the host's Docker socket;
//   - docker_publish: the same builder copying that image to the external
//     registry, logging in with the pipeline secrets' dockeruser and
//     dockerpass keys.
//
// deploy stages are not Jobs: the server applies the rendered manifests
// itself with server-side apply (see deploy.go for why). wait stages are
// the engine's; the executor refuses them.
//
// Environment: KONTINUOUS_* and vars (StageJob.Env) as plain env; the
// pipeline secrets as envFrom of the Kubernetes Secrets of those names,
// never inlined in the Job. Status comes from watching the Job and its pod
// (with a periodic re-list, so a lost watch event only delays), never from
// the pod calling back. Logs are streamed from the pod (follow) into the
// stage's log. Cancel deletes the Job with background propagation, and
// its pod's containers get Config.KillGrace (terminationGracePeriodSeconds)
// to stop before they are killed; a
// server that stops, or loses the build to another instance, leaves it
// running. A RunStage for a stage whose Job already exists (a server
// restart) adopts that Job: it watches it and streams its logs again from
// the start. The run is told by the stage's Started time (annotation
// kontinuous.io/run): a Job of another run of the stage (a re-run) is
// deleted and replaced.
package kube

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/spec"
)

// Default images. Each is a setting (Config) so that clusters without
// access to Docker Hub or GCR can use a mirror.
const (
	DefaultClonerImage  = "alpine/git:2.45.2"
	DefaultBuilderImage = "gcr.io/kaniko-project/executor:v1.23.2"
	DefaultImage        = "alpine:3.20"
)

// Config configures an Executor. Zero fields take the defaults New
// documents.
type Config struct {
	// Client talks to the cluster (required).
	Client kubernetes.Interface
	// Dynamic applies deploy stages' manifests (server-side apply). Nil:
	// deploy stages fail saying the server is not set up for them.
	Dynamic dynamic.Interface
	// DefaultNamespace is where Jobs run when the pipeline has no
	// namespace of its own; default "default".
	DefaultNamespace string
	// AllowedNamespaces are the other namespaces a pipeline may use
	// (metadata.namespace in .pipeline.yml); DefaultNamespace always is.
	AllowedNamespaces []string
	// ClonerImage has git and a POSIX shell; it clones the repository
	// (and prepares docker_publish). Default DefaultClonerImage.
	ClonerImage string
	// BuilderImage is a kaniko executor image for docker_build and
	// docker_publish. Default DefaultBuilderImage.
	BuilderImage string
	// DefaultImage runs command stages that name no image when there is no
	// image built by docker_build to run them in. Default DefaultImage.
	DefaultImage string
	// ServiceAccount runs stage pods; empty is the namespace's default.
	// Pods never get an API token mounted.
	ServiceAccount string
	// NodePool, "key=value", confines stage pods to a dedicated pool of
	// nodes: pods select nodes labelled key=value and tolerate the taint
	// key=value:NoSchedule that keeps other pods off them. Empty: any node.
	NodePool string
	// DefaultTimeout bounds stages whose job has no Timeout; default 1h.
	DefaultTimeout time.Duration
	// TTLAfterFinished is how long finished Jobs stay for inspection
	// before Kubernetes deletes them; default 1h.
	TTLAfterFinished time.Duration
	// KillGrace is how long a stage's containers have between SIGTERM and
	// SIGKILL when the stage is canceled or passes its deadline (the pods'
	// terminationGracePeriodSeconds); default 5s, as the local executor.
	// Kubernetes' own default, 30 s, would keep a canceled stage running
	// for half a minute: a stage's command is usually its container's PID
	// 1, which ignores SIGTERM unless it handles it.
	KillGrace time.Duration
	// Resync is how often the executor re-reads a running stage's Job and
	// pod besides watching them; default 10s.
	Resync time.Duration
	// Logger receives operational messages (never secrets); default
	// slog.Default().
	Logger *slog.Logger
}

// Executor runs stages as Kubernetes Jobs. It implements
// pipeline.Executor and is safe for concurrent use.
type Executor struct {
	cfg     Config
	allowed []string
	log     *slog.Logger

	// grace is how long past the stage's timeout the executor lets the
	// job controller fail the Job (activeDeadlineSeconds) before it
	// deletes the Job itself.
	grace time.Duration

	mu sync.Mutex
	// buildNS remembers the namespaces a build's Secrets went to, for
	// CleanupBuild; after a restart it falls back to every allowed one.
	buildNS map[string]map[string]bool
}

var _ pipeline.Executor = (*Executor)(nil)

// New returns an Executor for cfg, filling defaults. It checks the
// settings but does not contact the cluster.
func New(cfg Config) (*Executor, error) {
	if cfg.Client == nil {
		return nil, errors.New("kube: Config.Client is required")
	}
	if cfg.DefaultNamespace == "" {
		cfg.DefaultNamespace = "default"
	}
	if cfg.ClonerImage == "" {
		cfg.ClonerImage = DefaultClonerImage
	}
	if cfg.BuilderImage == "" {
		cfg.BuilderImage = DefaultBuilderImage
	}
	if cfg.DefaultImage == "" {
		cfg.DefaultImage = DefaultImage
	}
	if cfg.DefaultTimeout <= 0 {
		cfg.DefaultTimeout = time.Hour
	}
	if cfg.TTLAfterFinished <= 0 {
		cfg.TTLAfterFinished = time.Hour
	}
	if cfg.KillGrace <= 0 {
		cfg.KillGrace = 5 * time.Second
	}
	if cfg.Resync <= 0 {
		cfg.Resync = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if _, _, err := ParseNodePool(cfg.NodePool); err != nil {
		return nil, err
	}
	allowed := []string{cfg.DefaultNamespace}
	for _, ns := range cfg.AllowedNamespaces {
		if !slices.Contains(allowed, ns) {
			allowed = append(allowed, ns)
		}
	}
	for _, ns := range allowed {
		if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
			return nil, fmt.Errorf("kube: namespace %q is not a valid namespace name: %s", ns, strings.Join(errs, "; "))
		}
	}
	return &Executor{cfg: cfg, allowed: allowed, log: cfg.Logger, grace: 30 * time.Second,
		buildNS: map[string]map[string]bool{}}, nil
}

// Name is "kubernetes".
func (e *Executor) Name() string { return "kubernetes" }

// Resumable is true: a RunStage after a restart adopts the stage's Job.
func (e *Executor) Resumable() bool { return true }

// SecretsByReference is true: the executor never receives or inlines the
// values of pipeline secrets. A stage's `secrets: [name]` reaches its pod
// only through envFrom of the Kubernetes Secret of that name in the build
// namespace, which the cluster's operator creates; the kubelet reads it.
// The engine, seeing this, leaves secret values out of StageJob.Env (and
// buildJob drops any entry that is neither a KONTINUOUS_* value nor a stage
// var, should one arrive anyway). Before creating the Job, RunStage reads
// the referenced Secrets to fail the stage at once, saying which, when one
// is missing, and to mask their values in the stage's log.
func (e *Executor) SecretsByReference() bool { return true }

// RunsInNamespaces reports that stages run as Jobs in the namespace the
// engine decides (pipeline.NamespacedExecutor).
func (e *Executor) RunsInNamespaces() bool { return true }

// namespace resolves job's namespace and checks it again: the engine
// applies the server's namespace policy (cmd/kontinuous namespacePolicy);
// this guard keeps a Job out of namespaces the executor was not given
// (RBAC) whatever the engine passes.
func (e *Executor) namespace(job pipeline.StageJob) (string, error) {
	ns := job.Namespace
	if ns == "" {
		ns = e.cfg.DefaultNamespace
	}
	if !slices.Contains(e.allowed, ns) {
		return "", pipeline.Invalid("namespace", "namespace %q is not allowed on this server; pipelines may run in: %s", ns, strings.Join(e.allowed, ", "))
	}
	return ns, nil
}

// timeout is the stage's time budget.
func (e *Executor) timeout(job pipeline.StageJob) time.Duration {
	if job.Timeout > 0 {
		return job.Timeout
	}
	if t, err := specStage(job.Stage).Timeout(); err == nil && t > 0 {
		return t
	}
	return e.cfg.DefaultTimeout
}

// RunStage runs job's stage as a Job (or, for deploy, applies its
// manifests) and returns when it has finished: nil on success, ctx.Err()
// when ctx ended, otherwise an error whose message says why the stage
// failed. When ctx ends because the build was canceled
// (context.Cause pipeline.ErrBuildCanceled), the Job is deleted first; when
// another instance took the build over (pipeline.ErrTakenOver) or the
// server is stopping (context.Canceled), the Job is left running for the
// server that drives the build next to adopt. It writes the pod's output to log
// line by line and reports the Job and pod through report as they become
// known. If the stage's Job already exists for the same run (a restart),
// RunStage adopts it instead of creating another.
func (e *Executor) RunStage(ctx context.Context, job pipeline.StageJob, log io.Writer, report func(pipeline.StageOutcome)) error {
	if report == nil {
		report = func(pipeline.StageOutcome) {}
	}
	ns, err := e.namespace(job)
	if err != nil {
		return err
	}
	switch job.Stage.Type {
	case spec.TypeWait:
		return pipeline.Invalid(fmt.Sprintf("stage %q", job.Stage.Name), "wait stages are handled by the engine, not run by an executor")
	case spec.TypeDeploy:
		report(pipeline.StageOutcome{PodNamespace: ns})
		return e.deploy(ctx, job, ns, log)
	}
	timeout := e.timeout(job)

	var secretName string
	if job.CloneToken != "" {
		if secretName, err = CloneSecretName(job.Owner, job.Repo, job.BuildNumber); err != nil {
			return err
		}
	}
	want, image, err := e.buildJob(job, jobInput{namespace: ns, timeout: timeout, secretName: secretName})
	if err != nil {
		return err
	}
	values, err := e.referencedSecrets(ctx, job, ns)
	if err != nil {
		return err
	}
	if secretName != "" {
		// The clone Secret exists before the Job (its pod needs it at
		// once) and goes when the stage ends (keepClone says otherwise).
		if err := e.createCloneSecret(ctx, job, ns, secretName); err != nil {
			return err
		}
		keepClone := false
		defer func() {
			if !keepClone {
				e.deleteCloneSecret(ctx, ns, secretName)
			}
		}()
		defer func() {
			// A Job left running for the server that drives the build
			// next keeps its Secret (the Job owns it; CleanupBuild and
			// the garbage collector remove it).
			cause := context.Cause(ctx)
			keepClone = ctx.Err() != nil && !errors.Is(cause, pipeline.ErrBuildCanceled)
		}()
	}
	// The Secrets' values are masked in the pod's output, like the
	// engine masks the secrets it knows; the clone token too.
	masked := pipeline.NewMasker(log, append(values, job.CloneToken))
	defer masked.Close() // flushes the last partial line; errors surface on Write
	logw := &lineWriter{w: masked}
	if job.Stage.Type == spec.TypeCommand {
		// Checked by buildJob already.
		if p, err := specStage(job.Stage).Command(); err == nil && len(p.Dependencies) > 0 {
			if err := e.apply(ctx, job, ns, p.Dependencies, logw); err != nil {
				return err
			}
		}
	}
	j, adopted, err := e.createOrAdopt(ctx, want)
	if err != nil {
		return err
	}
	switch {
	case secretName != "" && adopted:
		// The adopted Job reads the Secret its run made: this one is
		// not needed, and that one goes when the stage ends.
		e.deleteCloneSecret(ctx, ns, secretName)
		secretName = jobCloneSecret(j)
	case secretName != "":
		// Owned by its Job: the garbage collector removes it with the
		// Job should the server never get to.
		if err := e.ownCloneSecret(ctx, ns, secretName, j); err != nil {
			return err
		}
	}
	out := pipeline.StageOutcome{PodNamespace: ns, JobName: j.Name, DockerImage: image}
	report(out)
	if adopted {
		e.log.Info("kube: adopted running job", "namespace", ns, "job", j.Name)
	}
	r := &run{
		e:       e,
		ns:      ns,
		name:    j.Name,
		uid:     j.UID,
		typ:     job.Stage.Type,
		timeout: timeout,
		// The deadline counts from the Job's creation, so an adopted Job
		// keeps the budget it started with.
		deadline: j.CreationTimestamp.Add(timeout + e.grace),
		out:      out,
		report:   report,
		logw:     logw,
	}
	if j.CreationTimestamp.IsZero() {
		r.deadline = time.Now().Add(timeout + e.grace)
	}
	return r.wait(ctx)
}

// referencedSecrets reads the Kubernetes Secrets job's stage names (by
// envFrom) in ns and returns their values, for masking. A missing Secret
// fails the stage before any Job exists, naming it and saying how to create
// it; so does a Secret that is not the pipeline's: one without the label
// kontinuous.io/pipeline=PipelineLabel(owner, repo), or a clone-token
// Secret. The namespaces are shared by every pipeline; the label, set by
// whoever may create Secrets there, says which pipeline may use one; pipeline secrets stored in Kontinuous are never copied into the
// cluster.
func (e *Executor) referencedSecrets(ctx context.Context, job pipeline.StageJob, ns string) ([]string, error) {
	var values []string
	for _, name := range job.SecretNames {
		s, err := e.cfg.Client.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil, pipeline.Invalid(fmt.Sprintf("stage %q secrets", job.Stage.Name),
				"the Kubernetes Secret %q does not exist in namespace %q; with the kubernetes executor a pipeline secret is the Secret of that name in the build namespace (create it with: kubectl -n %s create secret generic %s --from-literal=KEY=value)",
				name, ns, ns, name)
		}
		if err != nil {
			return nil, apiError(fmt.Sprintf("get secret %s/%s", ns, name), err)
		}
		if want := PipelineLabel(job.Owner, job.Repo); s.Labels[LabelPipeline] != want || s.Labels[LabelRole] == RoleCloneToken {
			return nil, pipeline.Invalid(fmt.Sprintf("stage %q secrets", job.Stage.Name),
				"the Kubernetes Secret %q in namespace %q is not this pipeline's: a stage may only use Secrets labelled %s=%s (an operator allows it with: kubectl -n %s label secret %s %s=%s)",
				name, ns, LabelPipeline, want, ns, name, LabelPipeline, want)
		}
		for _, v := range s.Data {
			values = append(values, string(v))
		}
		for _, v := range s.StringData {
			values = append(values, v)
		}
	}
	return values, nil
}

// createCloneSecret creates the Secret name holding job's clone token,
// labelled as the build's clone-token Secret (CloneSecretSelector).
func (e *Executor) createCloneSecret(ctx context.Context, job pipeline.StageJob, ns, name string) error {
	e.mu.Lock()
	key := buildKey(job.Owner, job.Repo, job.BuildNumber)
	if e.buildNS[key] == nil {
		e.buildNS[key] = map[string]bool{}
	}
	e.buildNS[key][ns] = true
	e.mu.Unlock()

	labels := Labels(job.Owner, job.Repo, job.BuildNumber, job.Stage.Index)
	labels[LabelRole] = RoleCloneToken
	want := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels,
			Annotations: map[string]string{annoPipeline: job.Owner + "/" + job.Repo}},
		Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{secretTokenKey: []byte(job.CloneToken)},
	}
	if _, err := e.cfg.Client.CoreV1().Secrets(ns).Create(ctx, want, metav1.CreateOptions{}); err != nil {
		return apiError(fmt.Sprintf("create secret %s/%s", ns, name), err)
	}
	return nil
}

// ownCloneSecret makes Job j the owner of the clone Secret name.
func (e *Executor) ownCloneSecret(ctx context.Context, ns, name string, j *batchv1.Job) error {
	secrets := e.cfg.Client.CoreV1().Secrets(ns)
	cur, err := secrets.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return apiError(fmt.Sprintf("get secret %s/%s", ns, name), err)
	}
	cur.OwnerReferences = []metav1.OwnerReference{{APIVersion: "batch/v1", Kind: "Job", Name: j.Name, UID: j.UID}}
	if _, err := secrets.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
		return apiError(fmt.Sprintf("update secret %s/%s", ns, name), err)
	}
	return nil
}

// jobCloneSecret is the name of the clone Secret j's pod reads, or "".
func jobCloneSecret(j *batchv1.Job) string {
	for _, c := range append(j.Spec.Template.Spec.InitContainers, j.Spec.Template.Spec.Containers...) {
		for _, env := range c.Env {
			if r := env.ValueFrom; r != nil && r.SecretKeyRef != nil && r.SecretKeyRef.Key == secretTokenKey {
				return r.SecretKeyRef.Name
			}
		}
	}
	return ""
}

// deleteCloneSecret deletes the clone Secret name (best effort: its Job's
// garbage collection and CleanupBuild remove it otherwise).
func (e *Executor) deleteCloneSecret(ctx context.Context, ns, name string) {
	if name == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	err := e.cfg.Client.CoreV1().Secrets(ns).Delete(ctx, name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		e.log.Warn("kube: deleting the stage's clone secret", "namespace", ns, "secret", name, "error", err.Error())
	}
}

func buildKey(owner, repo string, build int) string {
	return pipeline.Key(owner, repo) + "#" + strconv.Itoa(build)
}

// CleanupBuild deletes the build's clone Secrets (by label,
// CloneSecretSelector) from every namespace they may be in. Jobs are left for ttlSecondsAfterFinished, so their pods can
// still be inspected; a missing Secret is not an error.
func (e *Executor) CleanupBuild(ctx context.Context, owner, repo string, build int) error {
	key := buildKey(owner, repo, build)
	e.mu.Lock()
	nss := e.buildNS[key]
	delete(e.buildNS, key)
	e.mu.Unlock()
	candidates := slices.Clone(e.allowed)
	if nss != nil {
		// This process created them: only those namespaces.
		candidates = candidates[:0]
		for ns := range nss {
			candidates = append(candidates, ns)
		}
		slices.Sort(candidates)
	}
	sel := CloneSecretSelector(owner, repo, build)
	var errs []error
	for _, ns := range candidates {
		// deletecollection by label: the server needs no right to list
		// (read) the namespace's Secrets to find them.
		err := e.cfg.Client.CoreV1().Secrets(ns).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{LabelSelector: sel})
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, apiError(fmt.Sprintf("delete the clone secrets of build %d in %s", build, ns), err))
		}
	}
	return errors.Join(errs...)
}

// apiError wraps an API error with what was being done and the matching
// domain sentinel. Kubernetes status messages name objects, never Secret
// data, so they are safe to keep.
func apiError(what string, err error) error {
	var kind error
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("kube: %s: %w", what, err)
	case apierrors.IsNotFound(err):
		kind = pipeline.ErrNotFound
	case apierrors.IsAlreadyExists(err), apierrors.IsConflict(err):
		kind = pipeline.ErrConflict
	case apierrors.IsForbidden(err):
		kind = pipeline.ErrForbidden
	case apierrors.IsUnauthorized(err):
		kind = pipeline.ErrUnauthorized
	case apierrors.IsInvalid(err), apierrors.IsBadRequest(err):
		kind = pipeline.ErrInvalid
	case apierrors.IsTooManyRequests(err):
		kind = pipeline.ErrRateLimited
	default:
		kind = pipeline.ErrUnavailable
	}
	return &pipeline.PublicError{Kind: kind, Msg: fmt.Sprintf("kubernetes: %s: %v", what, err)}
}
