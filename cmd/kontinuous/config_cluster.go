package main

import (
	"fmt"
	"strconv"
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
}

func init() {
	settings = append(settings,
		setting{"log-store", []string{"KONTINUOUS_LOG_STORE"}, "etcd", "where stage logs live: etcd (readable and followable from every server, kept after the server that ran the stage is gone) or files (the data dir of that server: one server only)"},
		setting{"max-streams-per-user", []string{"KONTINUOUS_MAX_STREAMS_PER_USER"}, "20", "live streams (followed logs and builds) one caller may hold open at once; more get 429"},
		setting{"max-streams", []string{"KONTINUOUS_MAX_STREAMS"}, "1000", "live streams this server holds open at once in total; more get 429"},
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
	if c.Cluster.MaxStreamsPerUser > c.Cluster.MaxStreams {
		return bad("max-streams-per-user", "%d is more than --max-streams (%d)", c.Cluster.MaxStreamsPerUser, c.Cluster.MaxStreams)
	}
	return nil
}
