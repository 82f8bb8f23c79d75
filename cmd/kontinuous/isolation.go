package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/kontinuous/kontinuous/pipeline/executor/local"
)

// localIsolation sets up the sandbox of local command stages from
// --local-isolation and logs one line saying which isolation is used.
// bwrap refuses to start without a working sandbox; auto starts the server
// (the API and the kubernetes-free parts work) but every command stage
// then fails at once with a message naming the setting.
func localIsolation(cfg Config, lc *local.Config, log *slog.Logger) error {
	if cfg.LocalIsolation == "none" {
		log.Warn("local stages run without isolation (--local-isolation=none): a stage can read the server's environment, memory and data directory; push access equals server access")
		return nil
	}
	path := lc.Path
	if path == "" {
		path = local.DefaultPath
	}
	sb, err := local.NewSandbox(context.Background(), path)
	if err != nil {
		if cfg.LocalIsolation == "bwrap" {
			return fmt.Errorf("setting --local-isolation (KONTINUOUS_LOCAL_ISOLATION): %v", err)
		}
		lc.SandboxUnavailable = fmt.Errorf("command stages are refused: the local executor isolates them with bubblewrap and %v; install bubblewrap, or set --local-isolation=none (KONTINUOUS_LOCAL_ISOLATION) to run them unisolated", err)
		log.Error("local stage isolation unavailable: " + lc.SandboxUnavailable.Error())
		return nil
	}
	lc.Sandbox = sb
	log.Info("local stages run isolated", "isolation", sb.String())
	return nil
}
