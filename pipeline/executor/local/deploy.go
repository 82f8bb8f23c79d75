package local

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/spec"
)

// Deploy stages render deploy_file and every .yaml, .yml and .json file of
// deploy_dir (repository paths) with spec.Render, the same bounded
// templates as .pipeline.yml, over the KONTINUOUS_* values of the stage's
// environment and the stage's vars (job.Stage.Vars) — never its secrets —
// then kubectl apply them.

// kubeconfig returns the kubeconfig deploy stages use, or an error saying
// there is none.
func (x *Executor) kubeconfig() (string, error) {
	p := x.cfg.Kubeconfig
	if p == "" {
		if home, err := os.UserHomeDir(); err == nil {
			p = filepath.Join(home, ".kube", "config")
		}
	}
	if st, err := os.Stat(p); p == "" || err != nil || !st.Mode().IsRegular() {
		return "", pipeline.Errorf(pipeline.ErrNotImplemented, "deploy needs a Kubernetes cluster: no kubeconfig found")
	}
	return p, nil
}

// deployFiles returns the files a deploy stage applies, relative to src.
func deployFiles(src string, p spec.DeployParams) ([]string, error) {
	var files []string
	if p.DeployFile != "" {
		f, err := inside(src, p.DeployFile, "deploy_file")
		if err != nil {
			return nil, err
		}
		if st, err := os.Stat(f); err != nil || !st.Mode().IsRegular() {
			return nil, pipeline.Invalid("deploy_file", "%q is not a file", p.DeployFile)
		}
		files = append(files, filepath.Clean(p.DeployFile))
	}
	if p.DeployDir != "" {
		dir, err := inside(src, p.DeployDir, "deploy_dir")
		if err != nil {
			return nil, err
		}
		entries, err := os.ReadDir(dir)
		if err != nil {
			return nil, pipeline.Invalid("deploy_dir", "%q is not a directory", p.DeployDir)
		}
		var found []string
		for _, e := range entries {
			switch strings.ToLower(filepath.Ext(e.Name())) {
			case ".yaml", ".yml", ".json":
				if f := filepath.Join(p.DeployDir, e.Name()); e.Type().IsRegular() && !slices.Contains(files, f) {
					found = append(found, f)
				}
			}
		}
		if len(found) == 0 && len(files) == 0 {
			return nil, pipeline.Invalid("deploy_dir", "%q has no .yaml, .yml or .json file", p.DeployDir)
		}
		slices.Sort(found)
		files = append(files, found...)
	}
	if len(files) == 0 {
		return nil, pipeline.Invalid("deploy_file", "a deploy stage needs deploy_file or deploy_dir")
	}
	return files, nil
}

// templateValues are what deploy templates see: the KONTINUOUS_* values
// and the stage's vars, as spec.TemplateValues arranges them.
func templateValues(job pipeline.StageJob) map[string]string {
	values := map[string]string{}
	for k, v := range job.Env {
		if strings.HasPrefix(k, "KONTINUOUS_") {
			values[k] = v
		}
	}
	return spec.TemplateValues(values, job.Stage.Vars)
}

func (x *Executor) runDeploy(ctx context.Context, job pipeline.StageJob, t tools, ws workspace, log io.Writer) error {
	params, err := specStage(job.Stage).Deploy()
	if err != nil {
		return invalidSpec(err)
	}
	files, err := deployFiles(ws.src, params)
	if err != nil {
		return err
	}
	// Keep the rendered files out of the checkout and out of reach of
	// command stages (beside src, home and tmp), readable by the server's
	// user only, and remove them after.
	out := filepath.Join(ws.root, "deploy-"+strconv.Itoa(job.Stage.Index))
	if err := os.RemoveAll(out); err != nil {
		return fmt.Errorf("local executor: %w", err)
	}
	if err := os.MkdirAll(out, 0o700); err != nil {
		return fmt.Errorf("local executor: %w", err)
	}
	defer func() { _ = os.RemoveAll(out) }() // best effort: the workspace goes at the build's end anyway
	values := templateValues(job)
	for i, rel := range files {
		text, err := os.ReadFile(filepath.Join(ws.src, rel))
		if err != nil {
			return fmt.Errorf("local executor: read %s: %w", rel, err)
		}
		b, err := spec.Render(text, values)
		if err != nil {
			return &specError{fmt.Errorf("deploy file %s: %w", rel, err)}
		}
		name := fmt.Sprintf("%03d-%s", i, filepath.Base(rel))
		if err := os.WriteFile(filepath.Join(out, name), b, 0o600); err != nil {
			return fmt.Errorf("local executor: %w", err)
		}
	}
	logf(log, "applying %s", strings.Join(files, ", "))
	argv := []string{"kubectl", "--kubeconfig", t.kubeconfig, "apply", "-f", out}
	// kubectl runs outside the sandbox: its HOME (cache, kuberc) is not
	// one a command stage could have written.
	env := []string{"HOME=" + filepath.Join(ws.root, "kubectl"), "KUBECONFIG=" + t.kubeconfig, "PATH=" + x.cfg.Path}
	return x.runProcess(ctx, process{path: t.kubectl, argv: argv, dir: ws.src, env: env}, log)
}
