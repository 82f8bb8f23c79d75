package pipeline

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/kontinuous/kontinuous/pipeline/spec"
)

// buildSecretNames returns the secret sets any stage of b names, each
// once: the sets whose values the build may hand to a stage. A fork build
// gets none, so there is nothing of them to mask in its logs either.
func buildSecretNames(p Pipeline, b Build) []string {
	if b.Fork {
		return nil
	}
	var names []string
	for _, st := range b.Stages {
		for _, name := range st.Secrets {
			if !slices.Contains(names, name) {
				names = append(names, name)
			}
		}
	}
	return names
}

// buildSecretValues reads the values of every secret set any stage of b
// names, so that each stage's log, message and commit status masks them
// all: a stage given a secret can leave it in the workspace for a later
// stage, given none, to print. Sets that do not exist are skipped (the
// stage naming one fails when it runs).
func (e *Engine) buildSecretValues(ctx context.Context, p Pipeline, b Build) ([]string, error) {
	var values []string
	for _, name := range buildSecretNames(p, b) {
		set, err := e.cfg.Store.GetSecret(ctx, p.Owner, p.Repo, name)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("reading secret %q: %w", name, err)
		}
		for _, v := range set.Data {
			values = append(values, v)
		}
	}
	return values, nil
}

// maskString masks secret values in s by the rules of NewMasker.
func maskString(s string, secrets []string) string {
	var out strings.Builder
	m := NewMasker(&out, secrets)
	// A strings.Builder does not fail; nor does the masker over it.
	_, _ = m.Write([]byte(s))
	_ = m.Close()
	return out.String()
}

// storedNotifs are the notifications set on the pipeline itself (through
// the API), as the spec's type: what a fork build notifies.
func storedNotifs(p Pipeline) []spec.Notif {
	out := make([]spec.Notif, 0, len(p.Notif))
	for _, n := range p.Notif {
		out = append(out, spec.Notif{Type: n.Type, Secrets: n.Secrets, Metadata: n.Metadata})
	}
	return out
}
