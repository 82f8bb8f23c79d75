package etcdstore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kontinuous/kontinuous/auth"
	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/etcdstore"
	"github.com/kontinuous/kontinuous/pipeline/secretbox"
)

// The store serves auth's ports too, and so does the cache in front.
var (
	_ auth.OnceStore       = (*etcdstore.Store)(nil)
	_ auth.RevocationStore = (*etcdstore.Store)(nil)
	_ auth.OnceStore       = (*etcdstore.Cached)(nil)
	_ auth.RevocationStore = (*etcdstore.Cached)(nil)
)

// Most tests share one embedded etcd (started on first use) and isolate
// themselves with a key prefix of their own; tests that stop etcd start
// their own.
var shared struct {
	once sync.Once
	dir  string
	e    *etcdstore.Embedded
	cli  *clientv3.Client
	err  error
}

// closeAtExit holds more clean-ups for TestMain (benchmark etcds).
var closeAtExit []func()

func TestMain(m *testing.M) {
	code := m.Run()
	for _, f := range closeAtExit {
		f()
	}
	if shared.cli != nil {
		// Closing at exit: a close error changes nothing now.
		_ = shared.cli.Close()
	}
	if shared.e != nil {
		shared.e.Close()
	}
	if shared.dir != "" {
		// Best-effort removal of the temp dir at exit.
		_ = os.RemoveAll(shared.dir)
	}
	os.Exit(code)
}

func sharedClient(t testing.TB) *clientv3.Client {
	t.Helper()
	shared.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), patience)
		defer cancel()
		if shared.dir, shared.err = os.MkdirTemp("", "etcdstore-test-"); shared.err != nil {
			return
		}
		if shared.e, shared.err = etcdstore.StartEmbedded(ctx, etcdstore.EmbeddedConfig{Dir: shared.dir, UnsafeNoFsync: true, StartTimeout: patience}); shared.err != nil {
			return
		}
		shared.cli, shared.err = etcdstore.Connect(ctx, etcdstore.ClientConfig{Endpoints: shared.e.Endpoints()})
	})
	if shared.err != nil {
		t.Fatalf("shared etcd: %v", shared.err)
	}
	return shared.cli
}

var testSecret = bytes.Repeat([]byte("k"), 32)

func testBox(t testing.TB) *secretbox.Box {
	t.Helper()
	b, err := secretbox.New(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// prefixes holds each test's key space in the shared etcd, by test: a
// test run again (-count) gets a fresh one.
var (
	prefixes sync.Map // testing.TB → string
	prefixN  atomic.Int64
)

// prefixOf gives each test its own key space in the shared etcd.
func prefixOf(t testing.TB) string {
	p, _ := prefixes.LoadOrStore(t, fmt.Sprintf("/test/%d/%s/", prefixN.Add(1), t.Name()))
	return p.(string)
}

// newStore returns a store on the shared etcd under the test's own
// prefix, started as a server starts it: behind the read cache.
func newStore(t testing.TB) *etcdstore.Cached {
	t.Helper()
	return newStoreWith(t, sharedClient(t), etcdstore.Options{})
}

// newStoreWith is a started store on cli behind the read cache (default
// CacheOptions), as a server runs it.
func newStoreWith(t testing.TB, cli *clientv3.Client, opts etcdstore.Options) *etcdstore.Cached {
	t.Helper()
	return newCachedWith(t, cli, opts, etcdstore.CacheOptions{})
}

// newCachedWith is a started store on cli behind a read cache tuned by
// copts.
func newCachedWith(t testing.TB, cli *clientv3.Client, opts etcdstore.Options, copts etcdstore.CacheOptions) *etcdstore.Cached {
	t.Helper()
	s := etcdstore.NewCached(etcdstore.New(cli, testBox(t), testOpts(t, opts)), copts)
	t.Cleanup(s.Close)
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	return s
}

// newPlainWith is a started plain store on cli: no cache, every read
// from etcd.
func newPlainWith(t testing.TB, cli *clientv3.Client, opts etcdstore.Options) *etcdstore.Store {
	t.Helper()
	s := etcdstore.New(cli, testBox(t), testOpts(t, opts))
	t.Cleanup(s.Close)
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	return s
}

// testOpts fills in the test's prefix and a patient op timeout.
func testOpts(t testing.TB, opts etcdstore.Options) etcdstore.Options {
	if opts.Prefix == "" {
		opts.Prefix = prefixOf(t)
	}
	if opts.OpTimeout == 0 {
		// The shared etcd never goes away: a slow answer is a loaded
		// machine, not a failure. Tests about unavailability set their own.
		opts.OpTimeout = patience
	}
	return opts
}

// minimalPipeline is a pipeline with only what the API requires.
func minimalPipeline(owner, repo string) pipeline.Pipeline {
	return pipeline.Pipeline{Owner: owner, Repo: repo, Events: []string{pipeline.EventPush}, Login: "octocat"}
}

func mustCreatePipeline(t testing.TB, s pipeline.Store, owner, repo string) pipeline.Pipeline {
	t.Helper()
	p, err := s.CreatePipeline(t.Context(), minimalPipeline(owner, repo))
	if err != nil {
		t.Fatalf("CreatePipeline(%s/%s): %v", owner, repo, err)
	}
	return p
}

func mustCreateBuild(t testing.TB, s pipeline.Store, owner, repo string, b pipeline.Build) pipeline.Build {
	t.Helper()
	got, err := s.CreateBuild(t.Context(), owner, repo, b)
	if err != nil {
		t.Fatalf("CreateBuild(%s/%s): %v", owner, repo, err)
	}
	return got
}

func wantErr(t testing.TB, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("error = %v, want one wrapping %v", err, target)
	}
}

// requireAllFieldsSet fails if a field of the struct v (recursively
// through structs and slices of structs) is zero, except those named in
// skip. Round-trip fixtures use it so a field added to the domain later
// fails the test until the store persists it.
func requireAllFieldsSet(t testing.TB, v any, skip ...string) {
	t.Helper()
	var walk func(path string, rv reflect.Value)
	walk = func(path string, rv reflect.Value) {
		for i := range rv.NumField() {
			f := rv.Type().Field(i)
			name := path + f.Name
			fv := rv.Field(i)
			if slices.Contains(skip, f.Name) || slices.Contains(skip, name) {
				continue
			}
			if fv.IsZero() {
				t.Errorf("fixture leaves %s zero: set it so the round trip covers it", name)
				continue
			}
			switch fv.Kind() {
			case reflect.Struct:
				if fv.Type() != reflect.TypeFor[time.Time]() {
					walk(name+".", fv)
				}
			case reflect.Slice:
				if fv.Type().Elem().Kind() == reflect.Struct {
					for j := range fv.Len() {
						walk(fmt.Sprintf("%s[%d].", name, j), fv.Index(j))
					}
				}
			}
		}
	}
	walk("", reflect.ValueOf(v))
}

// rawValues returns every key and value stored under the test's prefix.
func rawValues(t testing.TB, cli *clientv3.Client, prefix string) map[string]string {
	t.Helper()
	resp, err := cli.Get(t.Context(), prefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, kv := range resp.Kvs {
		out[string(kv.Key)] = string(kv.Value)
	}
	return out
}

// patience bounds every wait for a condition that must come true: generous,
// since CI runs with -race on a busy 2-core machine. A passing test never
// waits that long; only a broken one does.
const patience = 2 * time.Minute

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true within %s", what, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func newOpts(prefix string) etcdstore.Options { return etcdstore.Options{Prefix: prefix} }
