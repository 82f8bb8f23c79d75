package local

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/spec"
)

// Docker stages.
//
// docker_build builds <dockerfile_path>/<dockerfile_name> (default
// ./Dockerfile) with <dockerfile_path> as context and tags the image
// <KONTINUOUS_INTERNAL_REGISTRY>/<owner>/<repo>:<commit> (without the
// registry part when the variable is empty), then pushes it when there is
// an internal registry.
//
// docker_publish tags that image as
// <external_registry>/<external_image_name>:<commit> and pushes it. With
// require_credentials (the spec's default) it first logs in with the
// dockeruser and dockerpass secret keys (the original Kontinuous's names)
// into a Docker config that lives in the build's workspace, not the
// server's.

// pingTimeout bounds the check that a Docker engine answers.
const pingTimeout = 2 * time.Second

// dockerCheck fails unless the configured Docker engine answers and the
// docker CLI is installed; it returns the CLI's path.
func (x *Executor) dockerCheck(ctx context.Context, stage string) (string, error) {
	host := x.cfg.DockerHost
	unreachable := pipeline.Errorf(pipeline.ErrNotImplemented, "%s needs a Docker engine; none is reachable at %s", stage, host)
	docker, lookErr := lookPath("docker", "", x.cfg.Path)
	ctx, cancel := context.WithTimeout(ctx, pingTimeout)
	defer cancel()
	u, err := url.Parse(host)
	if err != nil {
		return "", unreachable
	}
	switch u.Scheme {
	case "unix", "tcp":
		if !pingDocker(ctx, u) {
			return "", unreachable
		}
	default: // ssh:// and the like: only the CLI knows how to get there
		if lookErr != nil {
			break
		}
		cmd := exec.CommandContext(ctx, docker, "version", "--format", "{{.Server.Version}}")
		cmd.Env = []string{"PATH=" + x.cfg.Path, "DOCKER_HOST=" + host}
		if cmd.Run() != nil {
			return "", unreachable
		}
	}
	if lookErr != nil {
		return "", pipeline.Errorf(pipeline.ErrNotImplemented, "%s needs the docker command; it is not installed on the server", stage)
	}
	return docker, nil
}

// pingDocker asks the engine's API for /_ping.
func pingDocker(ctx context.Context, u *url.URL) bool {
	tr := &http.Transport{DisableKeepAlives: true}
	base := "http://" + u.Host
	if u.Scheme == "unix" {
		sock := u.Path
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}
		base = "http://docker"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/_ping", nil)
	if err != nil {
		return false
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return false
	}
	_ = resp.Body.Close() // only the status matters
	return resp.StatusCode == http.StatusOK
}

// internalImage is the image docker_build makes for job.
func internalImage(job pipeline.StageJob) string {
	name := strings.ToLower(job.Owner + "/" + job.Repo)
	if reg := strings.TrimSuffix(job.Env["KONTINUOUS_INTERNAL_REGISTRY"], "/"); reg != "" {
		reg = strings.TrimPrefix(strings.TrimPrefix(reg, "https://"), "http://")
		name = reg + "/" + name
	}
	return name + ":" + strings.ToLower(job.Commit)
}

// dockerBuildArgv returns the argv of docker_build, relative to the
// checkout, after checking the Dockerfile is inside it.
func dockerBuildArgv(src string, p spec.DockerBuildParams, image string) ([]string, error) {
	dir := p.DockerfilePath
	if dir == "" {
		dir = "."
	}
	name := p.DockerfileName
	if name == "" {
		name = "Dockerfile"
	}
	if _, err := inside(src, dir, "dockerfile_path"); err != nil {
		return nil, err
	}
	file := path.Join(filepath.ToSlash(dir), name)
	if _, err := inside(src, file, "dockerfile_name"); err != nil {
		return nil, err
	}
	return []string{"docker", "build", "-t", image, "-f", file, dir}, nil
}

// publishTarget returns the image docker_publish pushes.
func publishTarget(p spec.DockerPublishParams, commit string) (string, error) {
	name := strings.Trim(p.ExternalImageName, "/")
	if name == "" {
		return "", pipeline.Invalid("external_image_name", "docker_publish needs an image name")
	}
	if reg := strings.Trim(p.ExternalRegistry, "/"); reg != "" {
		name = reg + "/" + name
	}
	return name + ":" + strings.ToLower(commit), nil
}

// dockerEnv is the environment of docker commands: no job variables, a
// Docker config of the build's own, beside the directories command stages
// see (src, home, tmp) and out of their reach: a stage could otherwise
// plant a CLI plugin there that the docker CLI, which runs outside the
// sandbox, would execute.
func (x *Executor) dockerEnv(ws workspace) []string {
	return []string{
		"DOCKER_CONFIG=" + filepath.Join(ws.root, "docker"),
		"DOCKER_HOST=" + x.cfg.DockerHost,
		"HOME=" + ws.home,
		"PATH=" + x.cfg.Path,
	}
}

func (x *Executor) runDocker(ctx context.Context, docker string, ws workspace, log io.Writer, argv []string, stdin io.Reader) error {
	logf(log, "running %s", quoteArgv(argv))
	return x.runProcess(ctx, process{path: docker, argv: argv, dir: ws.src, env: x.dockerEnv(ws), stdin: stdin}, log)
}

func (x *Executor) runDockerBuild(ctx context.Context, job pipeline.StageJob, docker string, ws workspace, log io.Writer, report func(pipeline.StageOutcome)) error {
	params, err := specStage(job.Stage).DockerBuild()
	if err != nil {
		return invalidSpec(err)
	}
	image := internalImage(job)
	argv, err := dockerBuildArgv(ws.src, params, image)
	if err != nil {
		return err
	}
	report(pipeline.StageOutcome{DockerImage: image})
	if err := x.runDocker(ctx, docker, ws, log, argv, nil); err != nil {
		return err
	}
	if job.Env["KONTINUOUS_INTERNAL_REGISTRY"] == "" {
		return nil
	}
	return x.runDocker(ctx, docker, ws, log, []string{"docker", "push", image}, nil)
}

func (x *Executor) runDockerPublish(ctx context.Context, job pipeline.StageJob, docker string, ws workspace, log io.Writer, report func(pipeline.StageOutcome)) error {
	params, err := specStage(job.Stage).DockerPublish()
	if err != nil {
		return invalidSpec(err)
	}
	target, err := publishTarget(params, job.Commit)
	if err != nil {
		return err
	}
	if params.RequireCredentials {
		user, pass := job.Env["dockeruser"], job.Env["dockerpass"]
		if user == "" || pass == "" {
			return pipeline.Invalid("require_credentials", "docker_publish needs the secret keys dockeruser and dockerpass (or require_credentials: \"FALSE\")")
		}
		argv := []string{"docker", "login", "--username", user, "--password-stdin"}
		if reg := strings.Trim(params.ExternalRegistry, "/"); reg != "" {
			argv = append(argv, reg)
		}
		if err := x.runDocker(ctx, docker, ws, log, argv, strings.NewReader(pass)); err != nil {
			return fmt.Errorf("docker login: %w", err)
		}
	}
	report(pipeline.StageOutcome{DockerImage: target})
	if err := x.runDocker(ctx, docker, ws, log, []string{"docker", "tag", internalImage(job), target}, nil); err != nil {
		return err
	}
	return x.runDocker(ctx, docker, ws, log, []string{"docker", "push", target}, nil)
}
