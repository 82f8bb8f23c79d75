package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kontinuous/kontinuous/pipeline/pipelinetest/fakegithub"
)

// BenchmarkFollowBuilds: followers of one pipeline's builds
// (GET .../builds?follow=true, SSE) on one server; each iteration posts a
// signed push delivery and waits until every follower has received the
// new build. It reports the delivery latency per follower (p50, p99, max:
// from the start of the webhook POST to the event read by the follower)
// and the memory one follower costs (heap and RSS growth of the whole
// process, client side included, divided by the followers). The
// followers=1 case is the baseline of the same run
// (docs/performance.md).
func BenchmarkFollowBuilds(b *testing.B) {
	for _, n := range []int{1, 1000} {
		b.Run(fmt.Sprintf("followers=%d", n), func(b *testing.B) { benchFollowBuilds(b, n) })
	}
}

func benchFollowBuilds(b *testing.B, followers int) {
	gh := newGitHub(b)
	app := startApp(b, gh, b.TempDir(), "--max-streams-per-user", "5000", "--max-streams", "5000")
	tok := tbToken(b, "alice", 1001, "tok-alice")
	c := benchClient()
	mustStatus(b, c, app.URL, "POST", "/api/v1/pipelines", tok, `{"owner":"acme","repo":"app","events":["push"]}`, nil, http.StatusCreated)
	repo := gh.Repo("acme", "app")
	secret := gh.Hooks("acme", "app")[0].Secret

	heap0, rss0 := memNow()
	watchers0 := etcdWatchers(b)
	reads := newBuildReads(b.N+2, 0)
	ready := make(chan struct{}, followers)
	sc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: followers, DisableCompression: true}}
	var wg sync.WaitGroup
	for range followers {
		req, err := http.NewRequestWithContext(b.Context(), http.MethodGet, app.URL+"/api/v1/pipelines/acme/app/builds?follow=true", nil)
		if err != nil {
			b.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Accept", "text/event-stream")
		resp, err := sc.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("follow: status %d", resp.StatusCode)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer resp.Body.Close()
			ready <- struct{}{}
			last := 0
			r := bufio.NewScanner(resp.Body)
			r.Buffer(make([]byte, 0, 4<<10), 1<<20)
			for r.Scan() {
				line := r.Bytes()
				if !bytes.HasPrefix(line, []byte("data:")) {
					continue
				}
				var ev struct {
					Number int `json:"number"`
				}
				if json.Unmarshal(bytes.TrimSpace(line[5:]), &ev) != nil || ev.Number <= last || ev.Number >= len(reads.seen) {
					continue
				}
				last = ev.Number
				reads.read(ev.Number)
			}
		}()
	}
	for range followers {
		<-ready
	}
	heap1, rss1 := memNow()
	// The followers cost no etcd watch: the server's prefix watch feeds
	// them all (a stream subscribes before its first read, so once the
	// last follower's first event can arrive the count is final).
	watchers1 := etcdWatchers(b)

	b.ResetTimer()
	for i := range b.N {
		number := i + 1
		before := repo.Head("main")
		sha := repo.Commit("main", map[string]string{"README.md": strconv.Itoa(i)}, "change")
		body := fakegithub.PushPayload(repo, "main", before, sha, "alice")
		reads.starts[number].Store(time.Now().UnixNano())
		mustStatus(b, c, app.URL, "POST", "/api/v1/pipelines/acme/app/builds", "", string(body), map[string]string{
			"X-GitHub-Event": "push", "X-GitHub-Delivery": "follow-" + strconv.Itoa(i),
			"X-Hub-Signature-256": fakegithub.SignPayload(secret, body), "Content-Type": "application/json",
		}, http.StatusCreated)
		deadline := time.Now().Add(time.Minute)
		for reads.seen[number].Load() < int64(followers) {
			if time.Now().After(deadline) {
				b.Fatalf("build %d reached %d of %d followers in a minute", number, reads.seen[number].Load(), followers)
			}
			time.Sleep(time.Millisecond)
		}
	}
	b.StopTimer()
	if lat := reads.latencies(); len(lat) > 0 {
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(lat[min(len(lat)-1, len(lat)*99/100)].Microseconds()), "p99-µs")
		b.ReportMetric(float64(lat[len(lat)-1].Microseconds()), "max-µs")
	}
	b.ReportMetric(float64(heap1-heap0)/float64(followers), "heap-B/follower")
	b.ReportMetric(float64(rss1-rss0)/float64(followers), "rss-B/follower")
	b.ReportMetric(float64(rss1)/(1<<20), "rss-MiB")
	b.ReportMetric(watchers1-watchers0, "etcd-watches-added")
	_ = app.Shutdown(b.Context())
	wg.Wait()
}

// etcdWatchers is the count of watchers of the embedded etcd members
// running in this process (the benchmarks and the follower memory test
// run one).
func etcdWatchers(b testing.TB) float64 {
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		b.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "etcd_debugging_mvcc_watcher_total" {
			sum := 0.0
			for _, m := range mf.GetMetric() {
				sum += m.GetGauge().GetValue()
			}
			return sum
		}
	}
	b.Fatal("etcd_debugging_mvcc_watcher_total not registered")
	return 0
}

// memNow is the heap in use (after a GC) and the process RSS (0 if
// /proc is not there).
func memNow() (heap, rss int64) {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	data, _ := os.ReadFile("/proc/self/status")
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			rss = kb << 10
		}
	}
	return int64(ms.HeapInuse), rss
}
