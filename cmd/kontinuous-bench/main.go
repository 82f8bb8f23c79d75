// Command kontinuous-bench drives a running Kontinuous server with load and
// reports throughput and latency. It starts nothing itself.
//
//	kontinuous-bench --url http://127.0.0.1:3005 --token JWT --repo acme/app --mode list
//	kontinuous-bench --url ... --repo acme/app --mode webhook --webhook-secret S --payload push.json
//	kontinuous-bench --bare --listen 127.0.0.1:3006 --url ... --token JWT --repo acme/app
//
// Modes: list (GET .../builds?limit=100), build (GET .../builds/{n}),
// webhook (signed push deliveries, each with a new delivery id). With
// --bare it fetches the list and build replies once from --url and then
// serves those same bytes from memory on --listen with a bare net/http
// handler: the limit of this machine to compare the read path with (run
// the load against it with --url pointing at --listen, or with wrk).
package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

type options struct {
	url, token, repo, mode  string
	build                   int
	concurrency             int
	duration                time.Duration
	requests                int64
	secret, payload, commit string
	repoID                  int64
	bare                    bool
	listen                  string
	retries                 int
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("kontinuous-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.url, "url", "http://127.0.0.1:3005", "base URL of the running server (or of a --bare server)")
	fs.StringVar(&o.token, "token", "", "Bearer token for the read modes (e.g. from scripts/jwt-gen)")
	fs.StringVar(&o.repo, "repo", "", "owner/repo of the pipeline")
	fs.StringVar(&o.mode, "mode", "list", "list, build or webhook")
	fs.IntVar(&o.build, "build", 1, "build number the build mode reads")
	fs.IntVar(&o.concurrency, "concurrency", 32, "concurrent clients")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "how long to run (bounded; at most 10m)")
	fs.Int64Var(&o.requests, "requests", 0, "stop after this many requests (0: run for --duration)")
	fs.StringVar(&o.secret, "webhook-secret", "", "the pipeline's webhook secret (webhook mode)")
	fs.StringVar(&o.payload, "payload", "", "push payload JSON file (webhook mode; default: built from --repo, --repo-id and --commit)")
	fs.Int64Var(&o.repoID, "repo-id", 0, "GitHub repository id, for the built payload")
	fs.StringVar(&o.commit, "commit", strings.Repeat("a", 40), "commit SHA, for the built payload")
	fs.IntVar(&o.retries, "retries", 0, "retry a 503 this many times (as a client of the contract may)")
	fs.BoolVar(&o.bare, "bare", false, "serve the read replies of --url from memory on --listen instead of loading")
	fs.StringVar(&o.listen, "listen", "127.0.0.1:3006", "listen address of --bare")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	owner, name, ok := strings.Cut(o.repo, "/")
	if !ok || owner == "" || name == "" {
		fmt.Fprintln(stderr, "kontinuous-bench: --repo owner/repo is required")
		return 2
	}
	if o.concurrency < 1 || o.concurrency > 4096 || o.duration <= 0 || o.duration > 10*time.Minute {
		fmt.Fprintln(stderr, "kontinuous-bench: --concurrency must be 1..4096 and --duration 1ns..10m")
		return 2
	}
	base := strings.TrimSuffix(o.url, "/") + "/api/v1/pipelines/" + owner + "/" + name + "/builds"
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		MaxIdleConns: 4096, MaxIdleConnsPerHost: 4096, IdleConnTimeout: time.Minute, DisableCompression: true,
	}}
	if o.bare {
		if err := serveBare(ctx, client, o, base, stderr); err != nil {
			fmt.Fprintln(stderr, "kontinuous-bench: "+err.Error())
			return 1
		}
		return 0
	}
	var send func(i int64) (int, error)
	switch o.mode {
	case "list", "build":
		target := base + "?limit=100"
		if o.mode == "build" {
			target = base + "/" + strconv.Itoa(o.build)
		}
		send = func(int64) (int, error) { return do(client, http.MethodGet, target, o.token, nil, nil) }
	case "webhook":
		if o.secret == "" {
			fmt.Fprintln(stderr, "kontinuous-bench: --webhook-secret is required in webhook mode")
			return 2
		}
		body, err := pushPayload(o, owner, name)
		if err != nil {
			fmt.Fprintln(stderr, "kontinuous-bench: "+err.Error())
			return 2
		}
		runID := strconv.FormatInt(time.Now().UnixNano(), 36)
		send = func(i int64) (int, error) {
			// Each delivery's body is distinct, as GitHub's are: the
			// server remembers deliveries by a hash of the signed body.
			id := "bench-" + runID + "-" + strconv.FormatInt(i, 10)
			b := append([]byte(`{"bench_delivery":"`+id+`",`), body[1:]...)
			mac := hmac.New(sha256.New, []byte(o.secret))
			mac.Write(b)
			sig := "sha256=" + hex.EncodeToString(mac.Sum(nil))
			return do(client, http.MethodPost, base, "", b, map[string]string{
				"Content-Type": "application/json", "X-GitHub-Event": "push",
				"X-GitHub-Delivery": id, "X-Hub-Signature-256": sig,
			})
		}
	default:
		fmt.Fprintf(stderr, "kontinuous-bench: --mode %q: use list, build or webhook\n", o.mode)
		return 2
	}
	r := load(ctx, o, send)
	r.print(stdout, o)
	if r.ok == 0 {
		return 1
	}
	return 0
}

// pushPayload reads --payload or builds a minimal push payload.
func pushPayload(o options, owner, name string) ([]byte, error) {
	if o.payload != "" {
		return os.ReadFile(o.payload)
	}
	if o.repoID == 0 {
		return nil, errors.New("webhook mode needs --payload or --repo-id (the repository's GitHub id)")
	}
	return fmt.Appendf(nil, `{"ref":"refs/heads/main","before":%q,"after":%q,"repository":{"id":%d,"name":%q,"full_name":"%s/%s","owner":{"login":%q,"name":%q}},"pusher":{"name":"kontinuous-bench"},"sender":{"login":"kontinuous-bench"}}`,
		o.commit, o.commit, o.repoID, name, owner, name, owner, owner), nil
}

// do sends one request and drains the reply.
func do(c *http.Client, method, url, token string, body []byte, hdr map[string]string) (int, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return 0, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, err
}

type result struct {
	elapsed  time.Duration
	ok       int64
	statuses map[int]int64
	errs     int64
	lat      []time.Duration
}

// load runs send from o.concurrency goroutines until the duration or the
// request count is reached. A 2xx counts as done; a 503 is retried up to
// o.retries times.
func load(ctx context.Context, o options, send func(int64) (int, error)) result {
	ctx, cancel := context.WithTimeout(ctx, o.duration)
	defer cancel()
	var seq atomic.Int64
	var mu sync.Mutex
	r := result{statuses: map[int]int64{}}
	var wg sync.WaitGroup
	start := time.Now()
	for range o.concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var lat []time.Duration
			st := map[int]int64{}
			var ok, errs int64
			for ctx.Err() == nil {
				i := seq.Add(1)
				if o.requests > 0 && i > o.requests {
					break
				}
				t0 := time.Now()
				code, err := send(i)
				for try := 0; err == nil && code == http.StatusServiceUnavailable && try < o.retries && ctx.Err() == nil; try++ {
					time.Sleep(100 * time.Millisecond)
					code, err = send(i)
				}
				if err != nil {
					errs++
					continue
				}
				st[code]++
				if code >= 200 && code < 300 {
					ok++
					lat = append(lat, time.Since(t0))
				}
			}
			mu.Lock()
			r.lat = append(r.lat, lat...)
			for k, v := range st {
				r.statuses[k] += v
			}
			r.ok += ok
			r.errs += errs
			mu.Unlock()
		}()
	}
	wg.Wait()
	r.elapsed = time.Since(start)
	return r
}

func (r result) print(w io.Writer, o options) {
	slices.Sort(r.lat)
	pct := func(p int) time.Duration {
		if len(r.lat) == 0 {
			return 0
		}
		return r.lat[min(len(r.lat)-1, len(r.lat)*p/100)]
	}
	var codes []string
	for k, v := range r.statuses {
		codes = append(codes, fmt.Sprintf("%d×%d", k, v))
	}
	slices.Sort(codes)
	fmt.Fprintf(w, "mode=%s concurrency=%d elapsed=%s ok=%d errors=%d statuses=[%s]\n", o.mode, o.concurrency, r.elapsed.Round(time.Millisecond), r.ok, r.errs, strings.Join(codes, " "))
	fmt.Fprintf(w, "req/s=%.0f p50=%s p99=%s\n", float64(r.ok)/r.elapsed.Seconds(), pct(50).Round(time.Microsecond), pct(99).Round(time.Microsecond))
}

// serveBare fetches the list and build replies once and serves them from
// memory at the same paths until interrupted or --duration passes.
func serveBare(ctx context.Context, c *http.Client, o options, base string, stderr io.Writer) error {
	u := strings.TrimSuffix(o.url, "/")
	bodies := map[string][]byte{}
	var ct string
	for _, target := range []string{base + "?limit=100", base + "/" + strconv.Itoa(o.build)} {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+o.token)
		resp, err := c.Do(req)
		if err != nil {
			return err
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %d %s", target, resp.StatusCode, body)
		}
		path := strings.TrimPrefix(strings.SplitN(target, "?", 2)[0], u)
		bodies[path] = body
		ct = resp.Header.Get("Content-Type")
	}
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: bareHandler(bodies, ct), ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintf(stderr, "kontinuous-bench: serving the same replies from memory on http://%s (paths %v) for %s\n", ln.Addr(), keys(bodies), o.duration)
	go func() {
		select {
		case <-ctx.Done():
		case <-time.After(o.duration):
		}
		_ = srv.Close() // ends Serve below
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// bareHandler answers fixed bodies by path from memory (query ignored).
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

func keys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
