package main

import (
	"fmt"
	"log/slog"

	"github.com/kontinuous/kontinuous/pipeline"
)

// newKubeExecutor builds the kubernetes executor.
func newKubeExecutor(cfg Config, log *slog.Logger) (pipeline.Executor, error) {
	return nil, fmt.Errorf("setting --executor (KONTINUOUS_EXECUTOR): the kubernetes executor is not available in this build")
}
