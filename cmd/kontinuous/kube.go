package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/executor/kube"
)

// kubeStartTimeout bounds the start-up check that the cluster answers.
const kubeStartTimeout = 10 * time.Second

// newKubeExecutor builds the kubernetes executor from --kubeconfig
// (KUBECONFIG; empty: in-cluster), --kube-namespace and
// --kube-allowed-namespaces, and checks within kubeStartTimeout that the
// API server answers: a server that cannot run stages does not start.
// Missing RBAC rights in a build namespace are logged, not fatal.
func newKubeExecutor(cfg Config, log *slog.Logger) (pipeline.Executor, error) {
	client, dyn, err := kube.NewFromKubeconfig(cfg.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("setting --kubeconfig (KUBECONFIG), needed by --executor kubernetes: %w", err)
	}
	e, err := kube.New(kube.Config{
		Client:            client,
		Dynamic:           dyn,
		DefaultNamespace:  cfg.KubeNamespace,
		AllowedNamespaces: cfg.KubeNamespaces,
		DefaultTimeout:    cfg.StageTimeout,
		ClonerImage:       cfg.KubeClonerImage,
		BuilderImage:      cfg.KubeBuilderImage,
		DefaultImage:      cfg.KubeDefaultImage,
		ServiceAccount:    cfg.KubeServiceAccount,
		NodePool:          cfg.KubeNodePool,
		Logger:            log,
	})
	if err != nil {
		return nil, fmt.Errorf("settings --kube-namespace (KONTINUOUS_NAMESPACE) / --kube-allowed-namespaces (KONTINUOUS_ALLOWED_NAMESPACES) / --kube-node-pool (KONTINUOUS_KUBE_NODE_POOL): %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), kubeStartTimeout)
	defer cancel()
	warnings, err := e.Preflight(ctx)
	if err != nil {
		return nil, fmt.Errorf("setting --kubeconfig (KUBECONFIG): %w", err)
	}
	for _, w := range warnings {
		log.Warn("kubernetes executor: " + w)
	}
	return e, nil
}
