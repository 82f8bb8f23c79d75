package main

// Benchmarks of the hot paths against the limit of the same machine,
// measured in the same run (docs/performance.md has the commands and the
// figures):
//
//   - BenchmarkReadBuildsList / BenchmarkReadBuild: GET of 100 build
//     summaries / one build with a valid Bearer token, through the whole
//     server (HTTP, JWT, permission cache, etcd), vs BenchmarkBareNetHTTP:
//     a bare net/http handler answering the very same bytes from memory,
//     driven by the same client code.
//   - BenchmarkWebhookWrite: signed push deliveries answered 201 (build
//     durably stored and queued), vs BenchmarkEtcdTxn: one transaction of
//     a build-sized record per operation on the same etcd (fsync on), the
//     limit of a durable write.
//
// Every benchmark runs its clients with b.RunParallel at the same
// parallelism, and reports req/s and p50/p99 latency besides ns/op.
// TestServeBenchFixture serves the same fixture for external tools
// (kontinuous-bench, wrk).

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kontinuous/kontinuous/pipeline/etcdstore"
	"github.com/kontinuous/kontinuous/pipeline/pipelinetest/fakegithub"
)

// benchParallelism × GOMAXPROCS client goroutines drive each benchmark.
const benchParallelism = 16

// benchClient is an HTTP client that keeps one connection per client
// goroutine, so that the benchmarks measure requests, not dials.
func benchClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		MaxIdleConns:        1024,
		MaxIdleConnsPerHost: 1024,
		IdleConnTimeout:     time.Minute,
		DisableCompression:  true,
	}}
}

// latencies collects per-request latencies of one benchmark run.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(ds []time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, ds...)
	l.mu.Unlock()
}

// report adds req/s, p50 and p99 (microseconds) to b's results.
func (l *latencies) report(b *testing.B, elapsed time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.d) == 0 || elapsed <= 0 {
		return
	}
	slices.Sort(l.d)
	b.ReportMetric(float64(len(l.d))/elapsed.Seconds(), "req/s")
	b.ReportMetric(float64(l.d[len(l.d)*50/100].Microseconds()), "p50-µs")
	b.ReportMetric(float64(l.d[min(len(l.d)-1, len(l.d)*99/100)].Microseconds()), "p99-µs")
}

// drive runs do from benchParallelism×GOMAXPROCS goroutines b.N times in
// all and reports throughput and latency. do returns an error for a
// request that did not get the expected answer.
func drive(b *testing.B, do func(i int64) error) {
	b.Helper()
	var lat latencies
	var seq atomic.Int64
	b.SetParallelism(benchParallelism)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		local := make([]time.Duration, 0, 1024)
		for pb.Next() {
			t0 := time.Now()
			if err := do(seq.Add(1)); err != nil {
				b.Error(err)
				return
			}
			local = append(local, time.Since(t0))
		}
		lat.add(local)
	})
	elapsed := time.Since(start)
	b.StopTimer()
	lat.report(b, elapsed)
}

// get fetches url with the token and checks the status; it returns the
// body length read.
func get(c *http.Client, url, tok string, want int) error {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.StatusCode != want {
		return fmt.Errorf("GET %s: status %d, want %d", url, resp.StatusCode, want)
	}
	return nil
}

// readFixture is a running server with acme/app holding 100 finished
// builds, and what a client needs to read them.
type readFixture struct {
	app  *App
	tok  string
	list []byte // GET .../builds reply
	one  []byte // GET .../builds/50 reply
	ct   string // their Content-Type
}

// newReadFixture starts a server (embedded etcd in a temp dir, as
// deployed) and makes 100 builds through signed push deliveries. The
// commits carry no .pipeline.yml, so each build ends at once (FAIL, "no
// .pipeline.yml"), like a finished build history.
func newReadFixture(b *testing.B) *readFixture {
	b.Helper()
	f, _ := newReadFixtureTB(b)
	return f
}

func newReadFixtureTB(b testing.TB) (*readFixture, *fakegithub.Server) {
	b.Helper()
	gh := newGitHub(b)
	app := startApp(b, gh, b.TempDir())
	tok := tbToken(b, "alice", 1001, "tok-alice")
	c := benchClient()
	mustStatus(b, c, app.URL, "POST", "/api/v1/pipelines", tok, `{"owner":"acme","repo":"app","events":["push"]}`, nil, http.StatusCreated)
	repo := gh.Repo("acme", "app")
	secret := gh.Hooks("acme", "app")[0].Secret
	const n = 100
	for i := range n {
		before := repo.Head("main")
		sha := repo.Commit("main", map[string]string{"README.md": strconv.Itoa(i)}, "change")
		body := fakegithub.PushPayload(repo, "main", before, sha, "alice")
		mustStatus(b, c, app.URL, "POST", "/api/v1/pipelines/acme/app/builds", "", string(body), map[string]string{
			"X-GitHub-Event": "push", "X-GitHub-Delivery": "bench-" + strconv.Itoa(i),
			"X-Hub-Signature-256": fakegithub.SignPayload(secret, body), "Content-Type": "application/json",
		}, http.StatusCreated)
	}
	f := &readFixture{app: app, tok: tok}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		body, ct := mustStatus(b, c, app.URL, "GET", "/api/v1/pipelines/acme/app/builds?limit=100", tok, "", nil, http.StatusOK)
		if bytes.Count(body, []byte(`"status":"FAIL"`)) == n {
			f.list, f.ct = body, ct
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("builds did not all end: %.500s", body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	f.one, _ = mustStatus(b, c, app.URL, "GET", "/api/v1/pipelines/acme/app/builds/50", tok, "", nil, http.StatusOK)
	return f, gh
}

// mustStatus sends a request and fails b unless it answers want; it
// returns the body and Content-Type.
func mustStatus(tb testing.TB, c *http.Client, base, method, path, tok, body string, hdr map[string]string, want int) ([]byte, string) {
	tb.Helper()
	req, err := http.NewRequest(method, base+path, bytes.NewBufferString(body))
	if err != nil {
		tb.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	if resp.StatusCode != want {
		tb.Fatalf("%s %s: %d %s, want %d", method, path, resp.StatusCode, data, want)
	}
	return data, resp.Header.Get("Content-Type")
}

// BenchmarkReadBuildsList: GET /api/v1/pipelines/acme/app/builds?limit=100
// (100 builds) with a valid Bearer token, through the whole server.
func BenchmarkReadBuildsList(b *testing.B) {
	f := newReadFixture(b)
	c := benchClient()
	url := f.app.URL + "/api/v1/pipelines/acme/app/builds?limit=100"
	b.SetBytes(int64(len(f.list)))
	drive(b, func(int64) error { return get(c, url, f.tok, http.StatusOK) })
}

// BenchmarkReadBuild: GET /api/v1/pipelines/acme/app/builds/50 with a
// valid Bearer token, through the whole server.
func BenchmarkReadBuild(b *testing.B) {
	f := newReadFixture(b)
	c := benchClient()
	url := f.app.URL + "/api/v1/pipelines/acme/app/builds/50"
	b.SetBytes(int64(len(f.one)))
	drive(b, func(int64) error { return get(c, url, f.tok, http.StatusOK) })
}

// BenchmarkBareNetHTTP is the limit of the read benchmarks on this
// machine: a bare net/http server answering the very bytes Kontinuous
// answered (list and one build) from memory, driven the same way.
func BenchmarkBareNetHTTP(b *testing.B) {
	f := newReadFixture(b)
	url := startBare(b, map[string][]byte{"/list": f.list, "/one": f.one}, f.ct)
	c := benchClient()
	for _, name := range []string{"list", "one"} {
		body := map[string][]byte{"list": f.list, "one": f.one}[name]
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			drive(b, func(int64) error { return get(c, url+"/"+name, f.tok, http.StatusOK) })
		})
	}
}

// bareHandler answers fixed bodies by path from memory: the least work a
// Go HTTP server can do for a read. It is the limit the read path is
// compared with (and what kontinuous-bench --bare serves).
func bareHandler(bodies map[string][]byte, contentType string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, ok := bodies[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", contentType)
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		_, _ = w.Write(body) // the client went away
	})
}

func startBare(tb testing.TB, bodies map[string][]byte, ct string) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	srv := &http.Server{Handler: bareHandler(bodies, ct), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }() // ends with Close below
	tb.Cleanup(func() { _ = srv.Close() })
	return "http://" + ln.Addr().String()
}

// benchEtcd is one embedded etcd with fsync on, as a deployed server has
// it, shared by the write benchmarks so that they measure the same etcd.
var benchEtcd struct {
	once sync.Once
	dir  string
	e    *etcdstore.Embedded
	cli  *clientv3.Client
	err  error
	n    atomic.Int64
}

func sharedBenchEtcd(b *testing.B) ([]string, *clientv3.Client) {
	b.Helper()
	benchEtcd.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if benchEtcd.dir, benchEtcd.err = os.MkdirTemp("", "kontinuous-bench-etcd-"); benchEtcd.err != nil {
			return
		}
		if benchEtcd.e, benchEtcd.err = etcdstore.StartEmbedded(ctx, etcdstore.EmbeddedConfig{Dir: filepath.Join(benchEtcd.dir, "etcd")}); benchEtcd.err != nil {
			return
		}
		benchEtcd.cli, benchEtcd.err = etcdstore.Connect(ctx, etcdstore.ClientConfig{Endpoints: benchEtcd.e.Endpoints()})
	})
	if benchEtcd.err != nil {
		b.Fatalf("bench etcd: %v", benchEtcd.err)
	}
	return benchEtcd.e.Endpoints(), benchEtcd.cli
}

func closeBenchEtcd() {
	if benchEtcd.cli != nil {
		_ = benchEtcd.cli.Close() // at exit
	}
	if benchEtcd.e != nil {
		benchEtcd.e.Close()
	}
	if benchEtcd.dir != "" {
		_ = os.RemoveAll(benchEtcd.dir) // best effort at exit
	}
}

// BenchmarkWebhookWrite: signed push deliveries, each with a new delivery
// id, answered 201 once the build is durably stored and queued. The
// builds then run in the background as they would in production (their
// commit has no .pipeline.yml, so each fails at once: a GitHub read and
// two more build writes per delivery).
func BenchmarkWebhookWrite(b *testing.B) {
	eps, _ := sharedBenchEtcd(b)
	gh := newGitHub(b)
	name := fmt.Sprintf("app%d", benchEtcd.n.Add(1))
	gh.AddRepo("acme", name)
	gh.Grant("alice", "acme", name, "admin")
	app := startApp(b, gh, b.TempDir(), "--etcd-endpoints", eps[0])
	c := benchClient()
	tok := tbToken(b, "alice", 1001, "tok-alice")
	mustStatus(b, c, app.URL, "POST", "/api/v1/pipelines", tok, fmt.Sprintf(`{"owner":"acme","repo":%q,"events":["push"]}`, name), nil, http.StatusCreated)
	repo := gh.Repo("acme", name)
	secret := gh.Hooks("acme", name)[0].Secret
	sha := repo.Commit("main", map[string]string{"README.md": "x"}, "c")
	body := fakegithub.PushPayload(repo, "main", sha, sha, "alice")
	url := app.URL + "/api/v1/pipelines/acme/" + name + "/builds"
	b.Run("kontinuous", func(b *testing.B) {
		run := benchEtcd.n.Add(1)
		drive(b, func(i int64) error {
			id := fmt.Sprintf("d-%d-%d", run, i)
			body := distinct(body, id)
			req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
			if err != nil {
				return err
			}
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("X-GitHub-Event", "push")
			req.Header.Set("X-GitHub-Delivery", id)
			req.Header.Set("X-Hub-Signature-256", fakegithub.SignPayload(secret, body))
			resp, err := c.Do(req)
			if err != nil {
				return err
			}
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err != nil {
				return err
			}
			if resp.StatusCode != http.StatusCreated {
				return fmt.Errorf("delivery: status %d", resp.StatusCode)
			}
			return nil
		})
	})
}

// BenchmarkEtcdTxn is the limit of the write benchmark: one transaction
// per operation that durably stores a build-sized record under a new key
// (create-if-absent, plus its active-index marker), on the etcd
// BenchmarkWebhookWrite uses, from the same number of goroutines.
func BenchmarkEtcdTxn(b *testing.B) {
	_, cli := sharedBenchEtcd(b)
	value := bytes.Repeat([]byte("x"), 900) // about a new build's record
	b.Run("etcd", func(b *testing.B) {
		prefix := fmt.Sprintf("/bench/txn/%d/", benchEtcd.n.Add(1))
		drive(b, func(i int64) error {
			key := prefix + strconv.FormatInt(i, 10)
			tr, err := cli.Txn(context.Background()).
				If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
				Then(clientv3.OpPut(key, string(value)), clientv3.OpPut(prefix+"active/"+strconv.FormatInt(i, 10), "")).
				Commit()
			if err != nil {
				return err
			}
			if !tr.Succeeded {
				return fmt.Errorf("txn on %s did not succeed", key)
			}
			return nil
		})
	})
}
