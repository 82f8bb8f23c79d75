package kube

import (
	"fmt"
	"math"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/spec"
)

// Names of the pod's containers and volumes, and where things live in it.
const (
	containerClone   = "clone"
	containerPrepare = "prepare"
	containerStage   = "stage"

	volumeWorkspace    = "workspace"
	volumeDockerConfig = "docker-config"

	workspaceDir = "/workspace"
	// SourceDir is where the repository is checked out in a stage's pod.
	SourceDir        = workspaceDir + "/src"
	publishDir       = workspaceDir + "/publish"
	dockerConfigDir  = "/kaniko/.docker"
	secretTokenKey   = "token"
	envCloneToken    = "KONTINUOUS_CLONE_TOKEN"
	envInternalReg   = "KONTINUOUS_INTERNAL_REGISTRY"
	dockerHubAuthKey = "https://index.docker.io/v1/"
)

// cloneScript checks the build's commit out into SourceDir. It runs in the
// cloner image with a POSIX shell and git. The token reaches git through a
// credential helper that reads it from the environment (filled from the
// per-stage Secret), so it never appears in the pod spec, in a process's
// arguments or in a URL. @CLONE_USER@ stands for the forge's clone user
// (StageJob.CloneUser, see cloneUserWord).
const cloneScript = `set -eu
if [ -n "${KONTINUOUS_CLONE_TOKEN:-}" ]; then
  export GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=credential.helper
  export GIT_CONFIG_VALUE_0='!f() { test "$1" = get || exit 0; echo username=@CLONE_USER@; echo "password=$KONTINUOUS_CLONE_TOKEN"; }; f'
fi
export GIT_TERMINAL_PROMPT=0
git init -q "$KONTINUOUS_SOURCE_DIR"
cd "$KONTINUOUS_SOURCE_DIR"
git remote add origin "$KONTINUOUS_CLONE_URL"
if ! git fetch -q --depth 1 origin "$KONTINUOUS_COMMIT"; then
  echo "fetching the commit alone failed; fetching every branch" >&2
  git fetch -q origin '+refs/heads/*:refs/remotes/origin/*'
fi
git -c advice.detachedHead=false checkout -q --detach "$KONTINUOUS_COMMIT"
echo "checked out $KONTINUOUS_COMMIT"
`

// prepareScript sets a docker_publish stage up: a Dockerfile that starts
// from the image docker_build pushed to the internal registry (so the
// builder copies it to the external registry without a Docker daemon), and
// the builder's registry credentials from the pipeline secrets' dockeruser
// and dockerpass keys when the stage requires them.
const prepareScript = `set -eu
mkdir -p "$KONTINUOUS_PUBLISH_DIR"
printf 'FROM %s\n' "$KONTINUOUS_SOURCE_IMAGE" > "$KONTINUOUS_PUBLISH_DIR/Dockerfile"
if [ "$KONTINUOUS_REGISTRY_LOGIN" = true ]; then
  if [ -z "${dockeruser:-}" ] || [ -z "${dockerpass:-}" ]; then
    echo "docker_publish requires credentials: add a secret with the keys dockeruser and dockerpass to the pipeline" >&2
    exit 1
  fi
  auth=$(printf '%s:%s' "$dockeruser" "$dockerpass" | base64 | tr -d '\n')
  printf '{"auths":{"%s":{"auth":"%s"}}}\n' "$KONTINUOUS_REGISTRY_SERVER" "$auth" > "$KONTINUOUS_DOCKER_CONFIG/config.json"
fi
echo "publishing $KONTINUOUS_SOURCE_IMAGE"
`

// jobInput is everything buildJob needs besides the stage itself.
type jobInput struct {
	namespace string
	timeout   time.Duration
	// secretName is the stage's clone Secret; empty when there is no
	// token (public repositories).
	secretName string
}

// builtImage is where docker_build pushes the build's image in the
// internal registry, and where command stages without an image and
// docker_publish take it from. Empty without an internal registry.
func builtImage(job pipeline.StageJob) string {
	reg := strings.TrimSuffix(job.Env[envInternalReg], "/")
	if reg == "" {
		return ""
	}
	return reg + "/" + dnsSafe(job.Owner) + "/" + dnsSafe(job.Repo) + ":" + imageTag(job)
}

// imageTag is the tag of the build's images: the commit, or the build
// number when the commit is unknown.
func imageTag(job pipeline.StageJob) string {
	if job.Commit != "" {
		return job.Commit
	}
	return "build-" + strconv.Itoa(job.BuildNumber)
}

// buildJob returns the Job that runs job's stage, and the image it runs or
// produces (reported as the stage's docker_image). It is a pure function of
// its inputs, so the same stage always gives the same Job.
func (e *Executor) buildJob(job pipeline.StageJob, in jobInput) (*batchv1.Job, string, error) {
	st := job.Stage
	for _, name := range job.SecretNames {
		if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
			return nil, "", pipeline.Invalid("secrets", "%q is not a Kubernetes Secret name: %s", name, strings.Join(errs, "; "))
		}
	}

	var (
		stage    corev1.Container
		inits    []corev1.Container
		volumes  = []corev1.Volume{emptyDir(volumeWorkspace)}
		image    string
		needRepo = true
	)
	env, dropped := stageEnv(job)
	if len(dropped) > 0 {
		// Names only: the values may be secrets.
		e.log.Warn("kube: environment entries that are neither KONTINUOUS_* values nor stage vars left out of the Job; secrets reach pods only through envFrom",
			"stage", st.Name, "names", strings.Join(dropped, ","))
	}
	mounts := []corev1.VolumeMount{{Name: volumeWorkspace, MountPath: workspaceDir}}

	switch st.Type {
	case spec.TypeCommand:
		p, err := specStage(st).Command()
		if err != nil {
			return nil, "", paramsError(st, err)
		}
		image = p.Image
		if image == "" {
			image = builtImage(job)
		}
		if image == "" {
			image = e.cfg.DefaultImage
		}
		wd := SourceDir
		if p.WorkingDir != "" {
			if path.IsAbs(p.WorkingDir) {
				wd = path.Clean(p.WorkingDir)
			} else {
				wd = path.Join(SourceDir, p.WorkingDir)
			}
		}
		stage = corev1.Container{Image: image, Command: p.Argv(), WorkingDir: wd}

	case spec.TypeDockerBuild:
		p, err := specStage(st).DockerBuild()
		if err != nil {
			return nil, "", paramsError(st, err)
		}
		ctxDir := path.Join(SourceDir, p.DockerfilePath)
		args := []string{
			"--context=dir://" + ctxDir,
			"--dockerfile=" + path.Join(ctxDir, p.DockerfileName),
		}
		if image = builtImage(job); image != "" {
			args = append(args, "--destination="+image)
		} else {
			// Without an internal registry the build proves the
			// Dockerfile builds; there is nowhere to keep the image.
			args = append(args, "--no-push")
		}
		stage = corev1.Container{Image: e.cfg.BuilderImage, Args: args, WorkingDir: SourceDir}

	case spec.TypeDockerPublish:
		p, err := specStage(st).DockerPublish()
		if err != nil {
			return nil, "", paramsError(st, err)
		}
		src := builtImage(job)
		if src == "" {
			return nil, "", pipeline.Invalid(fmt.Sprintf("stage %q", st.Name),
				"docker_publish copies the image docker_build pushed to the internal registry, and the server has none configured (KONTINUOUS_INTERNAL_REGISTRY)")
		}
		image = p.ExternalImageName + ":" + imageTag(job)
		server := dockerHubAuthKey
		if p.ExternalRegistry != "" {
			image = p.ExternalRegistry + "/" + image
			server = p.ExternalRegistry
		}
		needRepo = false
		volumes = append(volumes, emptyDir(volumeDockerConfig))
		prepEnv := []corev1.EnvVar{
			{Name: "KONTINUOUS_PUBLISH_DIR", Value: publishDir},
			{Name: "KONTINUOUS_SOURCE_IMAGE", Value: src},
			{Name: "KONTINUOUS_REGISTRY_LOGIN", Value: strconv.FormatBool(p.RequireCredentials)},
			{Name: "KONTINUOUS_REGISTRY_SERVER", Value: server},
			{Name: "KONTINUOUS_DOCKER_CONFIG", Value: dockerConfigDir},
		}
		prep := corev1.Container{
			Name:    containerPrepare,
			Image:   e.cfg.ClonerImage,
			Command: []string{"/bin/sh", "-c", prepareScript},
			Env:     prepEnv,
			// The registry credentials are pipeline secrets: they come
			// from the Kubernetes Secrets by reference, never inlined.
			EnvFrom: secretsEnvFrom(job.SecretNames),
			VolumeMounts: []corev1.VolumeMount{
				{Name: volumeWorkspace, MountPath: workspaceDir},
				{Name: volumeDockerConfig, MountPath: dockerConfigDir},
			},
		}
		inits = append(inits, prep)
		mounts = append(mounts, corev1.VolumeMount{Name: volumeDockerConfig, MountPath: dockerConfigDir})
		stage = corev1.Container{
			Image: e.cfg.BuilderImage,
			Args: []string{
				"--context=dir://" + publishDir,
				"--dockerfile=" + path.Join(publishDir, "Dockerfile"),
				"--destination=" + image,
			},
			WorkingDir: publishDir,
		}

	default:
		return nil, "", pipeline.Invalid(fmt.Sprintf("stage %q type", st.Name), "%q does not run as a Job", st.Type)
	}

	if needRepo {
		inits = append([]corev1.Container{e.cloneContainer(job, in)}, inits...)
	}
	stage.Name = containerStage
	stage.Env = env
	if st.Type == spec.TypeCommand {
		// The builder needs no pipeline secrets (docker_publish's
		// credentials reach it as a file the prepare container writes):
		// only command stages see them.
		stage.EnvFrom = secretsEnvFrom(job.SecretNames)
	}
	stage.VolumeMounts = mounts

	labels := Labels(job.Owner, job.Repo, job.BuildNumber, st.Index)
	annotations := map[string]string{
		annoPipeline:  job.Owner + "/" + job.Repo,
		annoStageName: st.Name,
		annoCommit:    job.Commit,
		annoRun:       strconv.FormatInt(st.Started, 10),
	}
	deadline := int64(math.Ceil(in.timeout.Seconds()))
	ttl := int32(e.cfg.TTLAfterFinished / time.Second)
	noToken := false
	j := &batchv1.Job{
		TypeMeta: metav1.TypeMeta{APIVersion: "batch/v1", Kind: "Job"},
		ObjectMeta: metav1.ObjectMeta{
			Name:        JobName(job.Owner, job.Repo, job.BuildNumber, st.Index),
			Namespace:   in.namespace,
			Labels:      labels,
			Annotations: annotations,
		},
		Spec: batchv1.JobSpec{
			BackoffLimit:            ptr(int32(0)),
			ActiveDeadlineSeconds:   &deadline,
			TTLSecondsAfterFinished: &ttl,
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: annotations},
				Spec: corev1.PodSpec{
					RestartPolicy:                corev1.RestartPolicyNever,
					ServiceAccountName:           e.cfg.ServiceAccount,
					AutomountServiceAccountToken: &noToken,
					EnableServiceLinks:           &noToken,
					InitContainers:               inits,
					Containers:                   []corev1.Container{stage},
					Volumes:                      volumes,
				},
			},
		},
	}
	// Containers get KillGrace after SIGTERM on cancel or deadline.
	grace := int64(math.Ceil(e.cfg.KillGrace.Seconds()))
	j.Spec.Template.Spec.TerminationGracePeriodSeconds = &grace
	if key, value, _ := ParseNodePool(e.cfg.NodePool); key != "" {
		ps := &j.Spec.Template.Spec
		ps.NodeSelector = map[string]string{key: value}
		ps.Tolerations = []corev1.Toleration{{Key: key, Operator: corev1.TolerationOpEqual, Value: value, Effect: corev1.TaintEffectNoSchedule}}
	}
	return j, image, nil
}

// ParseNodePool splits a Config.NodePool "key=value" into a node label
// (and taint) key and value, both checked as Kubernetes label parts. An
// empty pool gives empty strings.
func ParseNodePool(pool string) (key, value string, err error) {
	if pool == "" {
		return "", "", nil
	}
	key, value, ok := strings.Cut(pool, "=")
	if !ok {
		return "", "", fmt.Errorf("kube: node pool %q: want key=value (a node label, and the taint key=value:NoSchedule)", pool)
	}
	if errs := validation.IsQualifiedName(key); len(errs) > 0 {
		return "", "", fmt.Errorf("kube: node pool %q: key: %s", pool, strings.Join(errs, "; "))
	}
	if errs := validation.IsValidLabelValue(value); len(errs) > 0 {
		return "", "", fmt.Errorf("kube: node pool %q: value: %s", pool, strings.Join(errs, "; "))
	}
	return key, value, nil
}

// cloneContainer is the init container that checks the commit out.
func (e *Executor) cloneContainer(job pipeline.StageJob, in jobInput) corev1.Container {
	env := []corev1.EnvVar{
		{Name: "KONTINUOUS_CLONE_URL", Value: job.CloneURL},
		{Name: "KONTINUOUS_COMMIT", Value: job.Commit},
		{Name: "KONTINUOUS_SOURCE_DIR", Value: SourceDir},
		{Name: "HOME", Value: workspaceDir},
	}
	if in.secretName != "" {
		env = append(env, corev1.EnvVar{Name: envCloneToken, ValueFrom: &corev1.EnvVarSource{
			SecretKeyRef: &corev1.SecretKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: in.secretName},
				Key:                  secretTokenKey,
			},
		}})
	}
	return corev1.Container{
		Name:         containerClone,
		Image:        e.cfg.ClonerImage,
		Command:      []string{"/bin/sh", "-c", strings.ReplaceAll(cloneScript, "@CLONE_USER@", cloneUserWord(job.CloneUser))},
		Env:          env,
		VolumeMounts: []corev1.VolumeMount{{Name: volumeWorkspace, MountPath: workspaceDir}},
	}
}

// cloneUserWord keeps of a forge's clone user only what is safe inside the
// script's single-quoted credential helper: letters, digits and ._@-.
func cloneUserWord(u string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x80 && (r == '.' || r == '_' || r == '@' || r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return r
		}
		return -1
	}, u)
}

// plainEnv is job.Env without secrets: the KONTINUOUS_* values and the
// stage's vars. Anything else is left out and its name returned: the
// executor takes secrets by reference (SecretsByReference), so an entry
// that is neither a KONTINUOUS_* value nor one of the stage's vars (with
// the var's value) can only be a secret value, which must reach neither a
// Job (readable by everyone who may read Jobs) nor a rendered manifest.
// Secrets reach pods only through envFrom.
func plainEnv(job pipeline.StageJob) (env map[string]string, dropped []string) {
	env = map[string]string{}
	for k, v := range job.Env {
		vv, isVar := job.Stage.Vars[k]
		isVar = isVar && vv == v
		if k == envCloneToken || (!isVar && !strings.HasPrefix(k, "KONTINUOUS_")) {
			dropped = append(dropped, k)
			continue
		}
		env[k] = v
	}
	slices.Sort(dropped)
	return env, dropped
}

// stageEnv is plainEnv as container env, sorted by name so the Job is the
// same for the same input.
func stageEnv(job pipeline.StageJob) (env []corev1.EnvVar, dropped []string) {
	m, dropped := plainEnv(job)
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	slices.Sort(names)
	env = make([]corev1.EnvVar, 0, len(names))
	for _, k := range names {
		env = append(env, corev1.EnvVar{Name: k, Value: m[k]})
	}
	return env, dropped
}

// secretsEnvFrom makes each named Secret's keys environment variables. The
// Secrets are required: a missing one stops the pod from starting, and the
// executor fails the stage saying which.
func secretsEnvFrom(names []string) []corev1.EnvFromSource {
	var out []corev1.EnvFromSource
	for _, n := range names {
		out = append(out, corev1.EnvFromSource{SecretRef: &corev1.SecretEnvSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: n},
		}})
	}
	return out
}

func emptyDir(name string) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}
}

func ptr[T any](v T) *T { return &v }
