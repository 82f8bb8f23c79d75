package local

import (
	"context"
	"testing"
)

// BenchmarkStageStart runs a `true` command stage of an already cloned
// build: the cost of starting (and ending) a stage's process, without and
// with the sandbox. docs/performance.md records the ratio.
func BenchmarkStageStart(b *testing.B) {
	sb, err := NewSandbox(context.Background(), DefaultPath)
	for _, mode := range []string{"none", "bwrap"} {
		b.Run(mode, func(b *testing.B) {
			cfg := Config{WorkDir: b.TempDir()}
			if mode == "bwrap" {
				if err != nil {
					b.Skipf("needs bubblewrap: %v", err)
				}
				cfg.Sandbox = sb
			}
			x := New(cfg)
			s := newGitServer(b)
			if err := x.RunStage(b.Context(), commandJob(s, 1, "true"), newLineLog(""), nil); err != nil {
				b.Fatal(err)
			}
			job := commandJob(s, 1, "true")
			b.ResetTimer()
			for b.Loop() {
				if err := x.RunStage(b.Context(), job, newLineLog(""), nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
