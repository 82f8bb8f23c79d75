package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/etcdstore"
	"github.com/kontinuous/kontinuous/pipeline/logstore"
)

// openLogs returns the log store --log-store names. With --keep-logs on,
// a pruned log answers "log pruned" instead of an empty log.
func openLogs(cfg Config, store *etcdstore.Cached) (pipeline.LogStore, error) {
	var logs pipeline.LogStore
	if cfg.Cluster.LogStore == "files" {
		fl, err := logstore.New(filepath.Join(cfg.DataDir, "logs"), logstore.Options{})
		if err != nil {
			return nil, fmt.Errorf("log store: %w", err)
		}
		logs = fl
	} else {
		logs = store.Logs(etcdstore.LogOptions{})
	}
	if cfg.Cluster.KeepLogs > 0 {
		logs = store.PruneAware(logs, cfg.Cluster.KeepLogs)
	}
	return logs, nil
}

// startRetention starts the pruner (one server at a time prunes, see
// etcdstore/retention.go) and registers its metrics; it returns the
// closer that stops it. With nothing to prune it starts nothing.
func startRetention(cfg Config, store *etcdstore.Store, logs pipeline.LogStore, exec pipeline.Executor, reg prometheus.Registerer, log *slog.Logger) (func(context.Context) error, error) {
	if cfg.Cluster.KeepBuilds == 0 && cfg.Cluster.KeepLogs == 0 {
		return func(context.Context) error { return nil }, nil
	}
	host, _ := os.Hostname() // only a name in the election: empty is fine
	rcfg := etcdstore.RetentionConfig{
		KeepBuilds: cfg.Cluster.KeepBuilds, KeepLogs: cfg.Cluster.KeepLogs, Interval: cfg.Cluster.RetentionInterval,
		Identity: fmt.Sprintf("%s pid %d %s", host, os.Getpid(), cfg.URL), Logger: log,
		// Workspaces and Kubernetes leftovers (the build's clone Secret);
		// stage Jobs go by their ttlSecondsAfterFinished.
		OnBuildPruned: func(ctx context.Context, owner, repo string, build int) {
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			if err := exec.CleanupBuild(cctx, owner, repo, build); err != nil {
				log.Warn("retention: cleanup of a pruned build", "pipeline", owner+"/"+repo, "build", build, "error", err.Error())
			}
			if cfg.Cluster.LogStore == "files" {
				if err := logs.DeleteBuild(cctx, pipeline.Key(owner, repo), build); err != nil {
					log.Warn("retention: log files of a pruned build", "pipeline", owner+"/"+repo, "build", build, "error", err.Error())
				}
			}
		},
	}
	if cfg.Cluster.LogStore == "files" {
		// The etcd log store's logs go in the pruning transaction itself.
		rcfg.OnLogsPruned = func(ctx context.Context, owner, repo string, build int) {
			if err := logs.DeleteBuild(ctx, pipeline.Key(owner, repo), build); err != nil {
				log.Warn("retention: log files of a build", "pipeline", owner+"/"+repo, "build", build, "error", err.Error())
			}
		}
	}
	r := store.StartRetention(rcfg)
	for _, c := range []prometheus.Collector{
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "kontinuous_retention_pruned_builds_total", Help: "Builds this server deleted (--keep-builds)."}, func() float64 { return float64(r.PrunedBuilds()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "kontinuous_retention_pruned_logs_total", Help: "Builds whose logs this server deleted, the build kept (--keep-logs)."}, func() float64 { return float64(r.PrunedLogs()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "kontinuous_retention_passes_total", Help: "Retention passes this server ran while elected."}, func() float64 { return float64(r.Passes()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "kontinuous_retention_errors_total", Help: "Retention passes that failed."}, func() float64 { return float64(r.Errors()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "kontinuous_retention_leader", Help: "1 while this server is the one elected to prune."}, func() float64 {
			if r.Leader() {
				return 1
			}
			return 0
		}),
	} {
		if err := reg.Register(c); err != nil {
			r.Stop()
			return nil, err
		}
	}
	return func(context.Context) error { r.Stop(); return nil }, nil
}

// newRegistry is the /metrics registry: Go and process collectors,
// etcd's space (sizes, quota, NOSPACE alarm) and the store's read cache
// counters.
func newRegistry(cfg Config, store *etcdstore.Cached) (*prometheus.Registry, error) {
	reg := prometheus.NewRegistry()
	quota := cfg.Cluster.EtcdQuotaBytes
	if quota == 0 && len(cfg.EtcdEndpoints) == 0 {
		quota = etcdstore.DefaultQuotaBytes
	}
	for _, c := range []prometheus.Collector{
		prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}),
		&etcdSpaceCollector{store: store.Store, quota: quota},
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "kontinuous_store_cache_hits_total", Help: "Build and pipeline reads answered from the watch-fed cache."}, func() float64 { return float64(store.CacheStats().Hits) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "kontinuous_store_cache_misses_total", Help: "Build and pipeline reads that read the data from etcd."}, func() float64 { return float64(store.CacheStats().Misses) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "kontinuous_store_consistent_reads_total", Help: "Consistent reads (--linearizable-reads): etcd's revision read first, then the cache waited for."}, func() float64 { return float64(store.CacheStats().ConsistentReads) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "kontinuous_store_cache_progress_requests_total", Help: "Watch progress requests sent to etcd (only while a reader waits)."}, func() float64 { return float64(store.CacheStats().ProgressRequests) }),
	} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return reg, nil
}

// etcdSpaceCollector asks etcd for its status on each scrape.
type etcdSpaceCollector struct {
	store *etcdstore.Store
	quota int64 // configured (0: unknown unless the members report it)
}

var (
	descDBSize  = prometheus.NewDesc("kontinuous_etcd_db_size_bytes", "Size of etcd's database file (the largest among the endpoints): what the quota is checked against.", nil, nil)
	descDBInUse = prometheus.NewDesc("kontinuous_etcd_db_size_in_use_bytes", "Part of etcd's database holding live data (the rest is given back by a defragmentation).", nil, nil)
	descQuota   = prometheus.NewDesc("kontinuous_etcd_quota_bytes", "etcd's database quota; at it etcd raises NOSPACE and refuses writes (absent when unknown).", nil, nil)
	descNoSpace = prometheus.NewDesc("kontinuous_etcd_alarm_nospace", "1 while etcd's NOSPACE alarm is raised (writes refused).", nil, nil)
	descUp      = prometheus.NewDesc("kontinuous_etcd_status_up", "1 when etcd answered the status request of this scrape.", nil, nil)
)

func (c *etcdSpaceCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descDBSize, descDBInUse, descQuota, descNoSpace, descUp} {
		ch <- d
	}
}

func (c *etcdSpaceCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	sp, err := c.store.Space(ctx)
	if err != nil {
		ch <- prometheus.MustNewConstMetric(descUp, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(descUp, prometheus.GaugeValue, 1)
	ch <- prometheus.MustNewConstMetric(descDBSize, prometheus.GaugeValue, float64(sp.DBSize))
	ch <- prometheus.MustNewConstMetric(descDBInUse, prometheus.GaugeValue, float64(sp.DBSizeInUse))
	quota := sp.Quota
	if quota == 0 {
		quota = c.quota
	}
	if quota > 0 {
		ch <- prometheus.MustNewConstMetric(descQuota, prometheus.GaugeValue, float64(quota))
	}
	nospace := 0.0
	if sp.NoSpace {
		nospace = 1
	}
	ch <- prometheus.MustNewConstMetric(descNoSpace, prometheus.GaugeValue, nospace)
}
