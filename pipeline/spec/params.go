package spec

import (
	"encoding/json"
	"fmt"
	"maps"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// MaxTimeout is the longest stage timeout a spec may ask for.
const MaxTimeout = 24 * time.Hour

// knownParams lists the params of each stage type. "timeout" is accepted
// by every type.
var knownParams = map[string][]string{
	TypeCommand:       {"command", "args", "image", "working_dir", "dependencies", "timeout"},
	TypeDockerBuild:   {"dockerfile_path", "dockerfile_name", "timeout"},
	TypeDockerPublish: {"external_registry", "external_image_name", "require_credentials", "timeout"},
	TypeDeploy:        {"deploy_file", "deploy_dir", "timeout"},
	TypeWait:          {"message", "timeout"},
}

// stageTypes in the order error messages list them.
var stageTypes = []string{TypeCommand, TypeDockerBuild, TypeDockerPublish, TypeDeploy, TypeWait}

// CommandParams are the params of a command stage.
//
// The program to run is Argv(): Command followed by Args, run directly,
// without a shell. A shell runs only when the spec names one
// (command: [sh, -c, "make test && make lint"]).
type CommandParams struct {
	// Command is the program and its first arguments. In YAML it is a list
	// (each item one argument, as is) or a string, which is split on white
	// space and may not contain quotes, backslashes, shell operators,
	// globs, $ or line breaks: a string that needs a shell to mean what it
	// says is refused rather than run wrongly.
	Command []string
	// Args follow Command; same rules.
	Args []string
	// Image is the container image to run in (kubernetes executor). Empty:
	// the image of the build.
	Image string
	// WorkingDir is where the command runs: relative to the repository
	// root, or absolute inside the container. Empty: the repository root.
	WorkingDir string
	// Dependencies are Kubernetes spec files (repository paths) to deploy
	// before the command runs.
	Dependencies []string
	// Timeout is the stage's timeout; 0 means the server's default.
	Timeout time.Duration
}

// Argv returns Command followed by Args, in a new slice.
func (c CommandParams) Argv() []string {
	return slices.Concat(c.Command, c.Args)
}

// DockerBuildParams are the params of a docker_build stage.
type DockerBuildParams struct {
	// DockerfilePath is the build context, a repository directory;
	// default ".".
	DockerfilePath string
	// DockerfileName is the Dockerfile's file name in DockerfilePath;
	// default "Dockerfile".
	DockerfileName string
	// Timeout is the stage's timeout; 0 means the server's default.
	Timeout time.Duration
}

// DockerPublishParams are the params of a docker_publish stage.
type DockerPublishParams struct {
	// ExternalRegistry is the registry host[:port]; empty means Docker Hub.
	ExternalRegistry string
	// ExternalImageName is the repository to push to, e.g. acaleph/kontinuous
	// (required).
	ExternalImageName string
	// RequireCredentials: log in to the registry first (the
	// dockeruser/dockerpass/dockeremail secret keys). YAML TRUE or FALSE,
	// in any case, quoted or not; default true.
	RequireCredentials bool
	// Timeout is the stage's timeout; 0 means the server's default.
	Timeout time.Duration
}

// DeployParams are the params of a deploy stage. At least one of the two
// paths is set.
type DeployParams struct {
	// DeployFile is a Kubernetes spec file (repository path).
	DeployFile string
	// DeployDir is a repository directory of Kubernetes spec files.
	DeployDir string
	// Timeout is the stage's timeout; 0 means the server's default.
	Timeout time.Duration
}

// WaitParams are the params of a wait stage.
type WaitParams struct {
	// Message is shown to whoever may continue the build; may be empty.
	Message string
	// Timeout, if set, bounds how long the stage waits; 0 means the
	// server's default.
	Timeout time.Duration
}

// Command returns the params of a command stage. Errors are a
// *ValidationError with paths relative to the stage ("params.command").
func (s Stage) Command() (CommandParams, error) {
	return accessor(s, TypeCommand, func(p *problems) CommandParams { return s.command(p, "") })
}

// DockerBuild returns the params of a docker_build stage, defaults filled.
func (s Stage) DockerBuild() (DockerBuildParams, error) {
	return accessor(s, TypeDockerBuild, func(p *problems) DockerBuildParams { return s.dockerBuild(p, "") })
}

// DockerPublish returns the params of a docker_publish stage, defaults filled.
func (s Stage) DockerPublish() (DockerPublishParams, error) {
	return accessor(s, TypeDockerPublish, func(p *problems) DockerPublishParams { return s.dockerPublish(p, "") })
}

// Deploy returns the params of a deploy stage.
func (s Stage) Deploy() (DeployParams, error) {
	return accessor(s, TypeDeploy, func(p *problems) DeployParams { return s.deploy(p, "") })
}

// Wait returns the params of a wait stage.
func (s Stage) Wait() (WaitParams, error) {
	return accessor(s, TypeWait, func(p *problems) WaitParams { return s.wait(p, "") })
}

// Timeout returns the stage's timeout param, for any stage type: 0 when
// unset, else a Go duration (e.g. "10m", "1h30m") in (0, MaxTimeout].
func (s Stage) Timeout() (time.Duration, error) {
	var p problems
	t := s.params(&p, "").timeout()
	if err := p.err(); err != nil {
		return 0, err
	}
	return t, nil
}

func accessor[T any](s Stage, typ string, fn func(*problems) T) (T, error) {
	var p problems
	var zero T
	if s.Type != typ {
		p.add("type", s.Name, "is "+quote(s.Type)+", not "+quote(typ))
		return zero, p.err()
	}
	v := fn(&p)
	if err := p.err(); err != nil {
		return zero, err
	}
	return v, nil
}

// checkParams reports every problem with s's params, for Validate.
func (s Stage) checkParams(p *problems, base string) {
	known, ok := knownParams[s.Type]
	if !ok {
		return // the type itself is reported by Validate
	}
	for _, k := range sortedKeys(s.Params) {
		if !slices.Contains(known, k) {
			p.add(join(base, "params", k), s.Name, "is not a param of type "+s.Type+
				" (known: "+strings.Join(known, ", ")+"; use vars for environment variables)")
		}
	}
	switch s.Type {
	case TypeCommand:
		s.command(p, base)
	case TypeDockerBuild:
		s.dockerBuild(p, base)
	case TypeDockerPublish:
		s.dockerPublish(p, base)
	case TypeDeploy:
		s.deploy(p, base)
	case TypeWait:
		s.wait(p, base)
	}
}

func (s Stage) command(p *problems, base string) CommandParams {
	r := s.params(p, base)
	c := CommandParams{
		Command:      r.words("command"),
		Args:         r.words("args"),
		Image:        r.str("image"),
		WorkingDir:   r.str("working_dir"),
		Dependencies: r.list("dependencies"),
		Timeout:      r.timeout(),
	}
	switch {
	case !r.has("command"):
		r.fail("command", "is required for type command")
	case len(c.Command) == 0 && !r.failed("command"):
		r.fail("command", "must not be empty")
	case len(c.Command) > 0 && c.Command[0] == "":
		r.fail("command[0]", "must not be empty")
	}
	if c.Image != "" && !imageRef.MatchString(c.Image) {
		r.fail("image", "is not a Docker image reference")
	}
	if c.WorkingDir != "" && !path.IsAbs(c.WorkingDir) {
		r.relPath("working_dir", c.WorkingDir)
	}
	for i, dep := range c.Dependencies {
		r.relPath(fmt.Sprintf("dependencies[%d]", i), dep)
	}
	return c
}

func (s Stage) dockerBuild(p *problems, base string) DockerBuildParams {
	r := s.params(p, base)
	b := DockerBuildParams{
		DockerfilePath: r.str("dockerfile_path"),
		DockerfileName: r.str("dockerfile_name"),
		Timeout:        r.timeout(),
	}
	if b.DockerfilePath == "" {
		b.DockerfilePath = "."
	} else {
		r.relPath("dockerfile_path", b.DockerfilePath)
	}
	switch n := b.DockerfileName; {
	case n == "":
		b.DockerfileName = "Dockerfile"
	case strings.ContainsAny(n, `/\`) || n == "." || n == "..":
		r.fail("dockerfile_name", "must be a file name, not a path (put the directory in dockerfile_path)")
	}
	return b
}

func (s Stage) dockerPublish(p *problems, base string) DockerPublishParams {
	r := s.params(p, base)
	d := DockerPublishParams{
		ExternalRegistry:   r.str("external_registry"),
		ExternalImageName:  r.str("external_image_name"),
		RequireCredentials: true,
		Timeout:            r.timeout(),
	}
	switch v := r.get("require_credentials").(type) {
	case nil:
	case string:
		switch strings.ToUpper(v) {
		case "TRUE":
		case "FALSE":
			d.RequireCredentials = false
		default:
			r.fail("require_credentials", "must be \"TRUE\" or \"FALSE\", not "+quote(v))
		}
	default:
		r.fail("require_credentials", "must be \"TRUE\" or \"FALSE\", not "+kindOf(v))
	}
	if d.ExternalRegistry != "" && !registryHost.MatchString(d.ExternalRegistry) {
		r.fail("external_registry", "must be a registry host[:port], e.g. quay.io")
	}
	switch {
	case d.ExternalImageName == "" && !r.failed("external_image_name"):
		if d.ExternalRegistry != "" {
			r.fail("external_image_name", "is required when external_registry is set")
		} else {
			r.fail("external_image_name", "is required for type docker_publish")
		}
	case d.ExternalImageName != "" && !imageName.MatchString(d.ExternalImageName):
		r.fail("external_image_name", "must be an image repository name such as org/app (lower case, no registry)")
	}
	return d
}

func (s Stage) deploy(p *problems, base string) DeployParams {
	r := s.params(p, base)
	d := DeployParams{
		DeployFile: r.str("deploy_file"),
		DeployDir:  r.str("deploy_dir"),
		Timeout:    r.timeout(),
	}
	if d.DeployFile != "" {
		r.relPath("deploy_file", d.DeployFile)
	}
	if d.DeployDir != "" {
		r.relPath("deploy_dir", d.DeployDir)
	}
	if d.DeployFile == "" && d.DeployDir == "" && !r.failed("deploy_file") && !r.failed("deploy_dir") {
		r.fail("deploy_file", "or params.deploy_dir is required for type deploy")
	}
	return d
}

func (s Stage) wait(p *problems, base string) WaitParams {
	r := s.params(p, base)
	return WaitParams{Message: r.str("message"), Timeout: r.timeout()}
}

// paramReader reads typed params, recording problems under base.params.
type paramReader struct {
	s    Stage
	p    *problems
	base string
	bad  map[string]bool
}

func (s Stage) params(p *problems, base string) *paramReader {
	return &paramReader{s: s, p: p, base: join(base, "params")}
}

func (r *paramReader) has(key string) bool {
	_, ok := r.s.Params[key]
	return ok
}

func (r *paramReader) get(key string) any { return scalarText(r.s.Params[key]) }

// scalarText turns the scalars other decoders produce (a Stage built from
// JSON has float64 and bool params) into the text Parse would have kept.
func scalarText(v any) any {
	switch v := v.(type) {
	case bool:
		return strconv.FormatBool(v)
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	case int:
		return strconv.Itoa(v)
	case int64:
		return strconv.FormatInt(v, 10)
	case json.Number:
		return v.String()
	}
	return v
}

func (r *paramReader) fail(key, reason string) {
	if r.bad == nil {
		r.bad = map[string]bool{}
	}
	r.bad[key] = true
	if i := strings.IndexByte(key, '['); i > 0 {
		r.bad[key[:i]] = true // a bad item makes its list bad
	}
	r.p.add(r.base+"."+key, r.s.Name, reason)
}

// failed reports whether key already has a problem.
func (r *paramReader) failed(key string) bool { return r.bad[key] }

// str reads a string param; absent or null is "".
func (r *paramReader) str(key string) string {
	switch v := r.get(key).(type) {
	case nil:
		return ""
	case string:
		return v
	default:
		r.fail(key, mustBeString(v))
		return ""
	}
}

// list reads a list of strings; a single string is a one-item list.
func (r *paramReader) list(key string) []string {
	switch v := r.get(key).(type) {
	case nil:
		return nil
	case string:
		return []string{v}
	case []any:
		return r.strings(key, v)
	default:
		r.fail(key, "must be a list of strings, not "+kindOf(v))
		return nil
	}
}

// shellChars need a shell to mean what they say.
const shellChars = "'\"\\$`|&;<>(){}[]*?~#\n\r"

// words reads an argument list: a YAML list as is, or a string split on
// white space (see CommandParams).
func (r *paramReader) words(key string) []string {
	switch v := r.get(key).(type) {
	case nil:
		return nil
	case string:
		if i := strings.IndexAny(v, shellChars); i >= 0 {
			c := v[i : i+1]
			if c == "\n" || c == "\r" {
				c = "a line break"
			} else {
				c = quote(c)
			}
			r.fail(key, "is a string containing "+c+", which needs a shell: write it as a list, "+
				`e.g. [sh, -c, "..."] to run a shell, or ["echo", "a b"] to pass an argument with spaces`)
			return nil
		}
		w := strings.Fields(v)
		if key == "command" && len(w) > 0 && strings.Contains(w[0], "=") {
			r.fail(key, "starts with a variable assignment ("+quote(w[0])+"): set variables with vars")
			return nil
		}
		return w
	case []any:
		return r.strings(key, v)
	default:
		r.fail(key, "must be a list of strings or a string, not "+kindOf(v))
		return nil
	}
}

func (r *paramReader) strings(key string, v []any) []string {
	out := make([]string, 0, len(v))
	ok := true
	for i, e := range v {
		s, isStr := scalarText(e).(string)
		if !isStr {
			r.fail(fmt.Sprintf("%s[%d]", key, i), mustBeString(e))
			ok = false
			continue
		}
		out = append(out, s)
	}
	if !ok {
		return nil
	}
	return out
}

// timeout reads the timeout param.
func (r *paramReader) timeout() time.Duration {
	v := r.get("timeout")
	if v == nil {
		return 0
	}
	s, ok := v.(string)
	if !ok {
		r.fail("timeout", "must be a duration such as \"10m\" or \"1h30m\", not "+kindOf(v))
		return 0
	}
	d, err := time.ParseDuration(s)
	switch {
	case err != nil:
		r.fail("timeout", "must be a duration such as \"10m\" or \"1h30m\", not "+quote(s))
	case d <= 0:
		r.fail("timeout", "must be positive, not "+quote(s))
	case d > MaxTimeout:
		r.fail("timeout", "must be at most "+MaxTimeout.String()+", not "+quote(s))
	default:
		return d
	}
	return 0
}

// relPath checks that p is a path inside the repository.
func (r *paramReader) relPath(key, p string) {
	if reason := relPathProblem(p); reason != "" {
		r.fail(key, reason)
	}
}

// relPathProblem says why p is not a relative path that stays inside the
// repository, or "".
func relPathProblem(p string) string {
	switch c := path.Clean(strings.ReplaceAll(p, "\\", "/")); {
	case p == "":
		return "must not be empty"
	case strings.ContainsRune(p, 0):
		return "must not contain NUL"
	case path.IsAbs(c):
		return "must be a path relative to the repository root, not " + quote(p)
	case c == ".." || strings.HasPrefix(c, "../"):
		return "must stay inside the repository, not " + quote(p)
	}
	return ""
}

var (
	// imageRef: [registry[:port]/]name[:tag][@digest], loosely; it must not
	// look like a flag.
	imageRef = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._/:@+-]*$`)
	// registryHost: host[:port].
	registryHost = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,5})?$`)
	// imageName: Docker repository path components, optional :tag.
	imageName = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?$`)
)

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}
