// Package pipelinetest holds test helpers: a real embedded etcd, a stand-in
// GitHub (fakegithub) and fixtures.
package pipelinetest

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kontinuous/kontinuous/pipeline/etcdstore"
)

// StartEtcd starts an embedded etcd in a fresh t.TempDir() on free
// loopback ports (fsync off) and returns a client of it. The client and
// the server are closed when the test ends.
func StartEtcd(t testing.TB) *clientv3.Client {
	t.Helper()
	return StartEtcdServer(t, filepath.Join(t.TempDir(), "etcd")).Client()
}

// EtcdServer is an embedded etcd that a test can stop and start again on
// the same data dir and ports, to see how code copes with etcd going away.
type EtcdServer struct {
	t   testing.TB
	dir string

	mu         sync.Mutex
	e          *etcdstore.Embedded
	endpoints  []string
	clientPort int
	peerPort   int
}

// StartEtcdServer starts an embedded etcd in dir (fsync off, free loopback
// ports) and stops it when the test ends.
func StartEtcdServer(t testing.TB, dir string) *EtcdServer {
	t.Helper()
	s := &EtcdServer{t: t, dir: dir}
	s.Start()
	t.Cleanup(s.Stop)
	return s
}

// Start starts the server again after Stop, on the same dir and ports.
// It does nothing if the server runs.
func (s *EtcdServer) Start() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.e != nil {
		return
	}
	first := s.clientPort == 0
	var e *etcdstore.Embedded
	// Ports outside the ephemeral range (see freePorts). Should another
	// listener take one, the first start picks new ones; a restart keeps
	// its ports (the clients know them) and waits for them to free.
	err := retryInUse(60*time.Second, func() error {
		if first {
			ports, err := freePorts(2)
			if err != nil {
				return err
			}
			s.clientPort, s.peerPort = ports[0], ports[1]
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		var err error
		e, err = etcdstore.StartEmbedded(ctx, etcdstore.EmbeddedConfig{
			Dir:           s.dir,
			ClientPort:    s.clientPort,
			PeerPort:      s.peerPort,
			UnsafeNoFsync: true,
			StartTimeout:  2 * time.Minute,
		})
		return err
	})
	if err != nil {
		s.t.Fatalf("start embedded etcd: %v", err)
	}
	s.e, s.endpoints, s.clientPort, s.peerPort = e, e.Endpoints(), e.ClientPort(), e.PeerPort()
}

// Stop stops the server; clients see it as unreachable until Start.
func (s *EtcdServer) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.e != nil {
		s.e.Close()
		s.e = nil
	}
}

// Endpoints returns the client URLs, the same across restarts.
func (s *EtcdServer) Endpoints() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.endpoints...)
}

// Client connects a new client to the server (which must be running),
// closed when the test ends.
func (s *EtcdServer) Client() *clientv3.Client {
	s.t.Helper()
	cli, err := etcdstore.Connect(context.Background(), etcdstore.ClientConfig{
		Endpoints:   s.Endpoints(),
		DialTimeout: 10 * time.Second,
	})
	if err != nil {
		s.t.Fatalf("connect to embedded etcd: %v", err)
	}
	s.t.Cleanup(func() {
		// Closing a client whose server is gone can report the lost
		// connection; nothing to do about it at the end of a test.
		_ = cli.Close()
	})
	return cli
}
