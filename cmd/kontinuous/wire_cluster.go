package main

import (
	"fmt"
	"path/filepath"

	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/etcdstore"
	"github.com/kontinuous/kontinuous/pipeline/logstore"
)

// openLogs returns the log store --log-store names.
func openLogs(cfg Config, store *etcdstore.Store) (pipeline.LogStore, error) {
	if cfg.Cluster.LogStore == "files" {
		logs, err := logstore.New(filepath.Join(cfg.DataDir, "logs"), logstore.Options{})
		if err != nil {
			return nil, fmt.Errorf("log store: %w", err)
		}
		return logs, nil
	}
	return store.Logs(etcdstore.LogOptions{}), nil
}
