package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ClusterConfig holds the settings of running more than one server
// and of live streams (README, settings).
type ClusterConfig struct {
	// LogStore is where stage logs live: "etcd" (every server reads and
	// follows every log) or "files" (the data dir of the server that ran
	// the stage: one server only).
	LogStore string
	// MaxStreamsPerUser and MaxStreams bound the live streams (followed
	// logs and builds) open at once per caller and in total.
	MaxStreamsPerUser, MaxStreams int
	// KeepBuilds is how many finished builds each pipeline keeps (0: all);
	// KeepLogs how long after its build finished a stage log is kept (0:
	// forever); RetentionInterval how often the elected server prunes.
	KeepBuilds        int
	KeepLogs          time.Duration
	RetentionInterval time.Duration
	// EtcdQuotaBytes is the embedded etcd's quota (QuotaBackendBytes); for
	// an external etcd, the quota reported when its members do not say
	// (0: unknown).
	EtcdQuotaBytes int64
}

// clusterSettings are the rows of the settings table for more than one
// server, live streams and retention.
var clusterSettings = []setting{
	{flag: "log-store", env: []string{"KONTINUOUS_LOG_STORE"}, def: "etcd", help: "where stage logs live: etcd (readable and followable from every server, kept after the server that ran the stage is gone) or files (the data dir of that server: one server only)",
		load: oneOf(func(c *Config) *string { return &c.Cluster.LogStore }, "etcd", "files")},
	{flag: "max-streams-per-user", env: []string{"KONTINUOUS_MAX_STREAMS_PER_USER"}, def: "20", help: "live streams (followed logs and builds) one caller may hold open at once; more get 429",
		load: wholeIn(func(c *Config) *int { return &c.Cluster.MaxStreamsPerUser }, 1, 100000, "1 and 100000")},
	{flag: "max-streams", env: []string{"KONTINUOUS_MAX_STREAMS"}, def: "1000", help: "live streams this server holds open at once in total; more get 429",
		load: wholeIn(func(c *Config) *int { return &c.Cluster.MaxStreams }, 1, 1000000, "1 and 1000000")},
	{flag: "keep-builds", env: []string{"KONTINUOUS_KEEP_BUILDS"}, def: "1000", help: "finished builds each pipeline keeps; older ones are pruned with their logs and workspaces (0 = keep all)",
		load: wholeIn(func(c *Config) *int { return &c.Cluster.KeepBuilds }, 0, 1000000, "0 (keep all) and 1000000")},
	{flag: "keep-logs", env: []string{"KONTINUOUS_KEEP_LOGS"}, def: "720h", help: "stage logs of a build are pruned this long after it finished; the build stays and its log answers \"log pruned\" (0 = keep)",
		load: func(c *Config, v string) error {
			d, err := time.ParseDuration(v)
			if err != nil || d < 0 || (d > 0 && d < time.Minute) {
				return fmt.Errorf("%q must be a duration of at least 1m, like 720h (0 = keep)", v)
			}
			c.Cluster.KeepLogs = d
			return nil
		}},
	{flag: "retention-interval", env: []string{"KONTINUOUS_RETENTION_INTERVAL"}, def: "10m", help: "how often the server elected to prune runs a pass (--keep-builds, --keep-logs)",
		load: durationIn(func(c *Config) *time.Duration { return &c.Cluster.RetentionInterval }, 10*time.Millisecond, 24*time.Hour, "10ms and 24h")},
	{flag: "etcd-quota-bytes", env: []string{"KONTINUOUS_ETCD_QUOTA_BYTES"}, help: "embedded etcd's database quota, e.g. 8GiB (default etcd's 2GiB); with --etcd-endpoints, the quota /metrics reports when the members do not",
		load: func(c *Config, v string) error {
			if v == "" {
				return nil
			}
			n, ok := parseBytes(v)
			if !ok || n < 1<<20 || n > 100<<30 {
				return fmt.Errorf("%q must be a size between 1MiB and 100GiB, in bytes or with KiB, MiB or GiB", v)
			}
			c.Cluster.EtcdQuotaBytes = n
			return nil
		}},
	{check: func(c *Config) error {
		if c.Cluster.MaxStreamsPerUser > c.Cluster.MaxStreams {
			return problemf("max-streams-per-user", "%d is more than --max-streams (%d)", c.Cluster.MaxStreamsPerUser, c.Cluster.MaxStreams)
		}
		return nil
	}},
}

// parseBytes reads "1048576", "512KiB", "64MiB" or "8GiB".
func parseBytes(s string) (int64, bool) {
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}} {
		if rest, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = rest, u.mult
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, false
	}
	return n * mult, true
}
