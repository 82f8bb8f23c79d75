package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/etcdstore"
)

// metricValue reads one unlabelled metric from base's /metrics.
func metricValue(t *testing.T, rc *retryClient, base, name string) float64 {
	t.Helper()
	_, body := rc.do(http.MethodGet, base+"/metrics", "", nil, nil)
	m := regexp.MustCompile(`(?m)^` + name + ` (\S+)$`).FindSubmatch(body)
	if m == nil {
		t.Fatalf("%s: no %s in /metrics", base, name)
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestRetentionPrunesOnOneOfTwoServersAndNumbersContinue: two servers on
// one etcd with --keep-builds 2: the oldest finished builds go, with
// their logs, pruned by exactly one of the servers; numbering continues.
func TestRetentionPrunesOnOneOfTwoServersAndNumbersContinue(t *testing.T) {
	e, err := etcdstore.StartEmbedded(t.Context(), etcdstore.EmbeddedConfig{Dir: t.TempDir(), UnsafeNoFsync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	gh := newGitHub(t)
	args := []string{"--etcd-endpoints", strings.Join(e.Endpoints(), ","), "--keep-builds", "2", "--retention-interval", "100ms"}
	apps := []*App{startApp(t, gh, t.TempDir(), args...), startApp(t, gh, t.TempDir(), args...)}
	bases := []string{apps[0].URL, apps[1].URL}
	rc := newRetryClient()
	createAppPipeline(t, rc, bases[0])
	spec := specHead + `    stages:
      - name: hello
        type: command
        params: {command: ["sh", "-c", "echo hello"]}
`
	repo := gh.Repo("acme", "app")
	sha := repo.Commit("main", map[string]string{".pipeline.yml": spec}, "spec")
	secret := gh.Hooks("acme", "app")[0].Secret
	dave := tbToken(t, "dave", 1004, "tok-dave")
	push := func(i int) int {
		status, body := deliverPush(rc, bases[i%2], repo, secret, fmt.Sprintf("keep-%d", i), sha)
		if status != http.StatusCreated {
			t.Fatalf("delivery %d: %d %s", i, status, body)
		}
		var b pipeline.Build
		if err := json.Unmarshal(body, &b); err != nil {
			t.Fatal(err)
		}
		waitFor(t, rc, bases, dave, b.Number, 90*time.Second, func(b pipeline.Build) bool { return b.Status.Done() })
		return b.Number
	}
	for i := range 4 {
		push(i)
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		_, s1 := getBuild(t, rc, bases[1], dave, 1)
		_, s2 := getBuild(t, rc, bases[0], dave, 2)
		if s1 == http.StatusNotFound && s2 == http.StatusNotFound {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("builds 1 and 2 not pruned: %d %d", s1, s2)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, n := range []int{3, 4} {
		if _, status := getBuild(t, rc, bases[n%2], dave, n); status != http.StatusOK {
			t.Fatalf("kept build %d: %d", n, status)
		}
	}
	if status, body := rc.do(http.MethodGet, bases[0]+"/api/v1/pipelines/acme/app/builds/1/stages/1/logs", dave, nil, nil); status != http.StatusNotFound {
		t.Fatalf("log of a pruned build: %d %s", status, body)
	}
	// Exactly one server leads and pruned both.
	lead := [2]float64{metricValue(t, rc, bases[0], "kontinuous_retention_leader"), metricValue(t, rc, bases[1], "kontinuous_retention_leader")}
	pruned := [2]float64{metricValue(t, rc, bases[0], "kontinuous_retention_pruned_builds_total"), metricValue(t, rc, bases[1], "kontinuous_retention_pruned_builds_total")}
	if lead[0]+lead[1] != 1 || pruned[0]+pruned[1] != 2 || (pruned[0] != 0 && pruned[1] != 0) {
		t.Fatalf("leader %v, pruned %v: want one leader that pruned both builds", lead, pruned)
	}
	if n := push(4); n != 5 {
		t.Fatalf("next number after pruning = %d, want 5", n)
	}
}

func TestRetentionSettingsAreChecked(t *testing.T) {
	for _, args := range [][]string{
		{"--keep-builds", "-1"},
		{"--keep-logs", "soon"},
		{"--keep-logs", "1s"},
		{"--retention-interval", "0"},
		{"--etcd-quota-bytes", "12 apples"},
		{"--etcd-quota-bytes", "1KiB"},
	} {
		_, err := LoadConfig(args, func(string) string { return "" }, nil)
		if err == nil || !strings.Contains(err.Error(), args[0]) {
			t.Errorf("%v: %v", args, err)
		}
	}
	cfg, err := LoadConfig(nil, func(k string) string {
		return map[string]string{"KONTINUOUS_KEEP_BUILDS": "0", "KONTINUOUS_ETCD_QUOTA_BYTES": "8GiB"}[k]
	}, nil)
	if err != nil || cfg.Cluster.KeepBuilds != 0 || cfg.Cluster.KeepLogs != 720*time.Hour || cfg.Cluster.RetentionInterval != 10*time.Minute || cfg.Cluster.EtcdQuotaBytes != 8<<30 {
		t.Fatalf("%+v %v", cfg.Cluster, err)
	}
	if cfg, err := LoadConfig(nil, func(string) string { return "" }, nil); err != nil || cfg.Cluster.KeepBuilds != 1000 || cfg.Cluster.EtcdQuotaBytes != 0 {
		t.Fatalf("defaults: %+v %v", cfg.Cluster, err)
	}
}
