package etcdstore_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/etcdstore"
	"github.com/kontinuous/kontinuous/pipeline/pipelinetest"
)

func TestStartEmbeddedTwiceOnSameDirKeepsData(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "etcd")
	var logs lockedBuffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	run := func(fn func(s *etcdstore.Store)) {
		t.Helper()
		e, err := etcdstore.StartEmbedded(t.Context(), etcdstore.EmbeddedConfig{Dir: dir, UnsafeNoFsync: true, Logger: logger})
		if err != nil {
			t.Fatal(err)
		}
		defer e.Close()
		if eps := e.Endpoints(); len(eps) != 1 || !strings.HasPrefix(eps[0], "http://127.0.0.1:") {
			t.Errorf("Endpoints = %v, want one loopback URL", eps)
		}
		cli, err := etcdstore.Connect(t.Context(), etcdstore.ClientConfig{Endpoints: e.Endpoints()})
		if err != nil {
			t.Fatal(err)
		}
		defer cli.Close()
		fn(etcdstore.New(cli, testBox(t), etcdstore.Options{}))
	}
	run(func(s *etcdstore.Store) {
		mustCreatePipeline(t, s, "acme", "app")
		mustCreateBuild(t, s, "acme", "app", pipeline.Build{Commit: "abc"})
	})
	// Started again (on new free ports): everything is there.
	run(func(s *etcdstore.Store) {
		b, err := s.GetBuild(t.Context(), "acme", "app", 1)
		if err != nil || b.Commit != "abc" {
			t.Fatalf("after restart: %+v, %v", b, err)
		}
		if b := mustCreateBuild(t, s, "acme", "app", pipeline.Build{}); b.Number != 2 {
			t.Errorf("numbering after restart: %d, want 2", b.Number)
		}
	})
	if l := logs.String(); strings.Contains(l, "level=INFO") || strings.Contains(l, "level=ERROR") || strings.Contains(l, "single port") {
		t.Errorf("embedded etcd logged info, shutdown errors or benign warnings:\n%s", l)
	}
	if fi, err := os.Stat(dir); err != nil {
		t.Error(err)
	} else if fi.Mode().Perm() != 0o700 {
		t.Errorf("data dir mode = %v, want 0700", fi.Mode().Perm())
	}
}

func TestStartEmbeddedNeedsDir(t *testing.T) {
	if _, err := etcdstore.StartEmbedded(t.Context(), etcdstore.EmbeddedConfig{}); err == nil {
		t.Error("StartEmbedded without Dir succeeded")
	}
}

func TestStoreReportsUnavailableWhileEtcdIsDownAndRecovers(t *testing.T) {
	srv := pipelinetest.StartEtcdServer(t, t.TempDir())
	const opTimeout = time.Second
	s := etcdstore.NewCached(etcdstore.New(srv.Client(), testBox(t), etcdstore.Options{OpTimeout: opTimeout}), etcdstore.CacheOptions{})
	t.Cleanup(s.Close)
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	mustCreatePipeline(t, s, "acme", "app")
	mustCreateBuild(t, s, "acme", "app", pipeline.Build{Commit: "abc"})
	if err := s.Ready(t.Context()); err != nil {
		t.Fatalf("Ready while up: %v", err)
	}

	srv.Stop()
	calls := []struct {
		name string
		call func(ctx context.Context) error
	}{
		{"GetPipeline", func(ctx context.Context) error { _, err := s.GetPipeline(ctx, "acme", "app"); return err }},
		{"CreateBuild", func(ctx context.Context) error {
			_, err := s.CreateBuild(ctx, "acme", "app", pipeline.Build{})
			return err
		}},
		{"UpdateBuild", func(ctx context.Context) error {
			_, err := s.UpdateBuild(ctx, "acme", "app", 1, func(*pipeline.Build) error { return nil })
			return err
		}},
		{"Ready", s.Ready},
	}
	t.Run("calls", func(t *testing.T) {
		for _, c := range calls {
			t.Run(c.name, func(t *testing.T) {
				t.Parallel()
				start := time.Now()
				err := c.call(context.Background()) // no deadline: the store's own applies
				took := time.Since(start)
				wantErr(t, err, pipeline.ErrUnavailable)
				// Bounded, not hanging: the bound is generous (a loaded
				// CI machine), the store's own is OpTimeout.
				if took > time.Minute {
					t.Errorf("took %s to fail: the store's OpTimeout (%s) did not bound the call", took, opTimeout)
				}
			})
		}
	})

	srv.Start()
	eventually(t, patience, "store answers again after etcd restarts", func() bool {
		return s.Ready(t.Context()) == nil
	})
	b, err := s.GetBuild(t.Context(), "acme", "app", 1)
	if err != nil || b.Commit != "abc" {
		t.Fatalf("data after restart: %+v, %v", b, err)
	}
	if b := mustCreateBuild(t, s, "acme", "app", pipeline.Build{}); b.Number != 2 {
		t.Errorf("numbering after restart: %d, want 2 (no number lost to failed calls)", b.Number)
	}
	// The revocation watch recovered too.
	other := etcdstore.New(srv.Client(), testBox(t), etcdstore.Options{})
	if err := other.Revoke(t.Context(), "after-restart", time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	eventually(t, patience, "revocation watch resumes after restart", func() bool { return s.Revoked("after-restart") })
}

func TestCallerCancellationIsNotUnavailability(t *testing.T) {
	s := newStore(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := s.GetPipeline(ctx, "acme", "app")
	if !errors.Is(err, context.Canceled) || errors.Is(err, pipeline.ErrUnavailable) {
		t.Errorf("GetPipeline with canceled ctx = %v, want context.Canceled", err)
	}
}

func TestConnectFailsClearlyWhenEtcdIsUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	start := time.Now()
	_, err = etcdstore.Connect(t.Context(), etcdstore.ClientConfig{Endpoints: []string{"http://" + addr}, DialTimeout: 500 * time.Millisecond})
	wantErr(t, err, pipeline.ErrUnavailable)
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("Connect took %s to fail with DialTimeout 500ms", took)
	}
	if !strings.Contains(err.Error(), addr) {
		t.Errorf("error %q does not name the endpoint", err)
	}
}

func TestConnectRefusesBadConfig(t *testing.T) {
	_, err := etcdstore.Connect(t.Context(), etcdstore.ClientConfig{})
	wantErr(t, err, pipeline.ErrInvalid)
	_, err = etcdstore.Connect(t.Context(), etcdstore.ClientConfig{Endpoints: []string{"https://127.0.0.1:1"}, CertFile: "cert.pem"})
	wantErr(t, err, pipeline.ErrInvalid)
	_, err = etcdstore.Connect(t.Context(), etcdstore.ClientConfig{Endpoints: []string{"https://127.0.0.1:1"}, CAFile: "/nonexistent/ca.pem"})
	if err == nil {
		t.Error("Connect with a missing CA file succeeded")
	}
}

func TestStartEtcdHelperGivesWorkingClient(t *testing.T) {
	cli := pipelinetest.StartEtcd(t)
	s := etcdstore.New(cli, testBox(t), etcdstore.Options{})
	mustCreatePipeline(t, s, "acme", "app")
	if _, err := s.GetPipeline(t.Context(), "acme", "app"); err != nil {
		t.Fatal(err)
	}
}

// lockedBuffer collects log output written from etcd's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
