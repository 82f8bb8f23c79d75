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

func init() {
	settings = append(settings,
		setting{"log-store", []string{"KONTINUOUS_LOG_STORE"}, "etcd", "where stage logs live: etcd (readable and followable from every server, kept after the server that ran the stage is gone) or files (the data dir of that server: one server only)"},
		setting{"max-streams-per-user", []string{"KONTINUOUS_MAX_STREAMS_PER_USER"}, "20", "live streams (followed logs and builds) one caller may hold open at once; more get 429"},
		setting{"max-streams", []string{"KONTINUOUS_MAX_STREAMS"}, "1000", "live streams this server holds open at once in total; more get 429"},
		setting{"keep-builds", []string{"KONTINUOUS_KEEP_BUILDS"}, "1000", "finished builds each pipeline keeps; older ones are pruned with their logs and workspaces (0 = keep all)"},
		setting{"keep-logs", []string{"KONTINUOUS_KEEP_LOGS"}, "720h", "stage logs of a build are pruned this long after it finished; the build stays and its log answers \"log pruned\" (0 = keep)"},
		setting{"retention-interval", []string{"KONTINUOUS_RETENTION_INTERVAL"}, "10m", "how often the server elected to prune runs a pass (--keep-builds, --keep-logs)"},
		setting{"etcd-quota-bytes", []string{"KONTINUOUS_ETCD_QUOTA_BYTES"}, "", "embedded etcd's database quota, e.g. 8GiB (default etcd's 2GiB); with --etcd-endpoints, the quota /metrics reports when the members do not"},
	)
}

// loadCluster reads the ClusterConfig settings.
func (c *Config) loadCluster(get func(string) string, bad func(name, format string, a ...any) error) error {
	c.Cluster.LogStore = get("log-store")
	if c.Cluster.LogStore != "etcd" && c.Cluster.LogStore != "files" {
		return bad("log-store", "%q: use etcd or files", c.Cluster.LogStore)
	}
	for _, n := range []struct {
		name string
		to   *int
		max  int
	}{
		{"max-streams-per-user", &c.Cluster.MaxStreamsPerUser, 100000},
		{"max-streams", &c.Cluster.MaxStreams, 1000000},
	} {
		v, err := strconv.Atoi(get(n.name))
		if err != nil || v < 1 || v > n.max {
			return bad(n.name, "%q must be a whole number between 1 and %s", get(n.name), fmt.Sprint(n.max))
		}
		*n.to = v
	}
	if err := c.loadRetention(get, bad); err != nil {
		return err
	}
	if c.Cluster.MaxStreamsPerUser > c.Cluster.MaxStreams {
		return bad("max-streams-per-user", "%d is more than --max-streams (%d)", c.Cluster.MaxStreamsPerUser, c.Cluster.MaxStreams)
	}
	return nil
}

// loadRetention reads the retention and etcd space settings.
func (c *Config) loadRetention(get func(string) string, bad func(name, format string, a ...any) error) error {
	v, err := strconv.Atoi(get("keep-builds"))
	if err != nil || v < 0 || v > 1000000 {
		return bad("keep-builds", "%q must be a whole number between 0 (keep all) and 1000000", get("keep-builds"))
	}
	c.Cluster.KeepBuilds = v
	if c.Cluster.KeepLogs, err = time.ParseDuration(get("keep-logs")); err != nil || c.Cluster.KeepLogs < 0 || (c.Cluster.KeepLogs > 0 && c.Cluster.KeepLogs < time.Minute) {
		return bad("keep-logs", "%q must be a duration of at least 1m, like 720h (0 = keep)", get("keep-logs"))
	}
	if c.Cluster.RetentionInterval, err = time.ParseDuration(get("retention-interval")); err != nil || c.Cluster.RetentionInterval < 10*time.Millisecond || c.Cluster.RetentionInterval > 24*time.Hour {
		return bad("retention-interval", "%q must be a duration between 10ms and 24h", get("retention-interval"))
	}
	if q := get("etcd-quota-bytes"); q != "" {
		n, ok := parseBytes(q)
		if !ok || n < 1<<20 || n > 100<<30 {
			return bad("etcd-quota-bytes", "%q must be a size between 1MiB and 100GiB, in bytes or with KiB, MiB or GiB", q)
		}
		c.Cluster.EtcdQuotaBytes = n
	}
	return nil
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
