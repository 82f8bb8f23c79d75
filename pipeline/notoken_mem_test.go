package pipeline_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/kontinuous/kontinuous/pipeline"
)

// A caller without a forge token is told where to get one: their forge's
// login, or a token that carries one.
func TestNoForgeTokenSaysWhereToGetOne(t *testing.T) {
	w := newMemWorld(t, noExec{t})
	w.create()
	eve := memCallers["eve"]
	for name, call := range map[string]func() error{
		"list":       func() error { _, err := w.svc.ListPipelines(t.Context(), eve); return err },
		"get":        func() error { _, err := w.svc.GetPipeline(t.Context(), eve, "acme", "app"); return err },
		"repository": func() error { _, err := w.svc.Repositories(t.Context(), eve); return err },
	} {
		err := call()
		if !errors.Is(err, pipeline.ErrUnauthorized) || !strings.Contains(err.Error(), "/api/v1/login/github/authorize") ||
			!strings.Contains(err.Error(), "scripts/jwt-gen") {
			t.Errorf("%s without a forge token: %v", name, err)
		}
	}
}
