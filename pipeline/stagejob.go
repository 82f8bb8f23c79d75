package pipeline

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"

	"github.com/kontinuous/kontinuous/pipeline/spec"
)

// This file builds what an executor gets for a stage: its environment
// (KONTINUOUS_* values, vars, secret values), the values masked in its
// log, and the outcome recorded from the executor's report.

// values are the KONTINUOUS_* values of a build.
func (e *Engine) values(p Pipeline, b Build, namespace string) map[string]string {
	return map[string]string{
		"KONTINUOUS_PIPELINE_ID":       p.ID,
		"KONTINUOUS_BUILD_ID":          strconv.Itoa(b.Number),
		"KONTINUOUS_STAGE_ID":          "",
		"KONTINUOUS_BRANCH":            b.Branch,
		"KONTINUOUS_NAMESPACE":         namespace,
		"KONTINUOUS_COMMIT":            b.Commit,
		"KONTINUOUS_URL":               e.cfg.PublicURL,
		"KONTINUOUS_ARTIFACT_URL":      fmt.Sprintf("%s/api/v1/pipelines/%s/%s/builds/%d", e.cfg.PublicURL, p.Owner, p.Repo, b.Number),
		"KONTINUOUS_INTERNAL_REGISTRY": e.cfg.InternalRegistry,
	}
}

// stageEnv is stage st's environment: its vars, the values of the secret
// sets it names (never for forks; by name only for executors that read
// them themselves), then the KONTINUOUS_* values. It also returns the
// secret set names for the executor and every secret value of the build
// (to mask in the log). A stage that cannot run gets failMsg (already
// masked); err is returned only when the engine stops.
func (e *Engine) stageEnv(ctx context.Context, p Pipeline, b Build, st Stage, ns string) (env map[string]string, names, secretValues []string, failMsg string, err error) {
	vals := e.values(p, b, ns)
	vals["KONTINUOUS_STAGE_ID"] = strconv.Itoa(st.Index)
	env = map[string]string{}
	for k, v := range st.Vars {
		env[k] = v
	}
	// Executors that hand secrets to the stage by name (Kubernetes
	// envFrom) get no values in Env; the values are still read, to check
	// the sets exist and to mask them in the log.
	byRef := false
	if r, ok := e.cfg.Executor.(SecretReferencer); ok {
		byRef = r.SecretsByReference()
	}
	if !b.Fork {
		names = st.Secrets
		for _, name := range st.Secrets {
			set, err := e.cfg.Store.GetSecret(ctx, p.Owner, p.Repo, name)
			if errors.Is(err, ErrNotFound) {
				if byRef {
					// The executor reads (and checks) the cluster's
					// Secret of that name; nothing stored here to mask.
					continue
				}
				return nil, nil, nil, fmt.Sprintf("secret %q does not exist in this pipeline", name), nil
			}
			if err != nil {
				if ctx.Err() != nil {
					return nil, nil, nil, "", err
				}
				return nil, nil, nil, maskString(fmt.Sprintf("reading secret %q: %v", name, err), secretValues), nil
			}
			keys := make([]string, 0, len(set.Data))
			for k := range set.Data {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				if !byRef {
					env[k] = set.Data[k]
				}
				secretValues = append(secretValues, set.Data[k])
			}
		}
	}
	for k, v := range vals {
		env[k] = v
	}
	// Every secret value of the build is masked in this stage's log, not
	// only those of the sets this stage names.
	others, err := e.buildSecretValues(ctx, p, b)
	if err != nil {
		if ctx.Err() != nil {
			return nil, nil, nil, "", err
		}
		return nil, nil, nil, maskString(err.Error(), secretValues), nil
	}
	return env, names, append(secretValues, others...), "", nil
}

// applyOutcome records what an executor reported of stage s's run.
func applyOutcome(s *Stage, o StageOutcome) {
	if o.PodNamespace != "" {
		s.PodNamespace = o.PodNamespace
	}
	if o.JobName != "" {
		s.JobName = o.JobName
	}
	if o.PodName != "" {
		s.PodName = o.PodName
	}
	if o.DockerImage != "" {
		s.DockerImage = o.DockerImage
	}
}

func toSpecStage(st Stage) spec.Stage {
	return spec.Stage{Name: st.Name, Type: st.Type, Params: st.Params, Labels: st.Labels, Vars: st.Vars, Secrets: st.Secrets, Artifacts: st.Artifacts}
}
