package local

import (
	"context"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/spec"
)

// specStage gives a stage to the spec package's typed accessors, which
// check and convert its params.
func specStage(st pipeline.Stage) spec.Stage {
	return spec.Stage{Name: st.Name, Type: st.Type, Params: st.Params}
}

// specError is a spec accessor's error: its message names the stage and
// the field, and it matches both spec.ErrInvalid and pipeline.ErrInvalid.
type specError struct{ err error }

func (e *specError) Error() string   { return e.err.Error() }
func (e *specError) Unwrap() []error { return []error{e.err, pipeline.ErrInvalid} }

func invalidSpec(err error) error {
	if err == nil {
		return nil
	}
	return &specError{err}
}

// environ is the environment of a build's commands: job.Env with PATH,
// HOME and TMPDIR, and nothing of the server's own environment.
func (x *Executor) environ(env map[string]string, ws workspace) ([]string, error) {
	all := map[string]string{"PATH": x.cfg.Path, "HOME": ws.home, "TMPDIR": ws.tmp}
	for k, v := range env {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return nil, pipeline.Invalid("vars", "%q is not a valid environment variable name", k)
		}
		if strings.ContainsRune(v, 0) {
			return nil, pipeline.Invalid("vars", "the value of %s contains a NUL byte", k)
		}
		all[k] = v
	}
	out := make([]string, 0, len(all))
	for _, k := range slices.Sorted(maps.Keys(all)) {
		out = append(out, k+"="+all[k])
	}
	return out, nil
}

// lookPath finds name as the child would: in the child's PATH, or relative
// to its working directory when name has a slash. Relative PATH entries
// are skipped.
func lookPath(name, dir, path string) (string, error) {
	if strings.Contains(name, "/") {
		p := name
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		if executable(p) {
			return p, nil
		}
		return "", pipeline.Invalid("command", "%s: no such executable file", name)
	}
	for _, d := range filepath.SplitList(path) {
		if d == "" || !filepath.IsAbs(d) {
			continue
		}
		if p := filepath.Join(d, name); executable(p) {
			return p, nil
		}
	}
	return "", pipeline.Invalid("command", "%s: command not found", name)
}

func executable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o111 != 0
}

// runCommand runs a command stage.
func (x *Executor) runCommand(ctx context.Context, job pipeline.StageJob, ws workspace, log io.Writer) error {
	params, err := specStage(job.Stage).Command()
	if err != nil {
		return invalidSpec(err)
	}
	argv := params.Argv()
	dir, err := inside(ws.src, params.WorkingDir, "working_dir")
	if err != nil {
		return err
	}
	if params.Image != "" {
		logf(log, "image %s is ignored: the local executor runs commands on the server's machine", params.Image)
	}
	if len(params.Dependencies) > 0 {
		logf(log, "dependencies are ignored by the local executor")
	}
	env, err := x.environ(job.Env, ws)
	if err != nil {
		return err
	}
	path, err := lookPath(argv[0], dir, envValue(env, "PATH"))
	if err != nil {
		return err
	}
	logf(log, "running %s", quoteArgv(argv))
	return x.runProcess(ctx, process{path: path, argv: argv, dir: dir, env: env, ws: &ws}, log)
}

// envValue returns the value of key in an environment list.
func envValue(env []string, key string) string {
	for _, kv := range env {
		if k, v, _ := strings.Cut(kv, "="); k == key {
			return v
		}
	}
	return ""
}

// quoteArgv shows argv as a shell would need it.
func quoteArgv(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		if a != "" && !strings.ContainsAny(a, " \t\n\"'\\$`*?[]{}()<>|&;#~") {
			q[i] = a
		} else {
			q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
	}
	return strings.Join(q, " ")
}
