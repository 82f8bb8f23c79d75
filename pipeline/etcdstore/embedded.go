package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap/zapcore"
)

// EmbeddedConfig configures an etcd server running inside this process.
type EmbeddedConfig struct {
	// Dir holds etcd's data (created if missing). Starting again on the
	// same Dir keeps the data.
	Dir string
	// Logger receives etcd's own log at warn level and above (nil: discard).
	Logger *slog.Logger
	// ClientPort and PeerPort are loopback ports to listen on; 0 picks a
	// free port at start. Tests that restart etcd reuse the ports of the
	// first start (Embedded.ClientPort, Embedded.PeerPort).
	ClientPort int
	PeerPort   int
	// UnsafeNoFsync turns fsync off: fast, loses data on power failure.
	// For tests only.
	UnsafeNoFsync bool
	// StartTimeout bounds the wait for the server to be ready (default 30s).
	StartTimeout time.Duration
	// AutoCompactionRetention is how much history etcd keeps, as an
	// etcd periodic retention ("1h", the default).
	AutoCompactionRetention string
	// QuotaBackendBytes is the database size at which etcd raises NOSPACE
	// and refuses writes (0: etcd's default, 2 GiB).
	QuotaBackendBytes int64
	// ClientSocket, when set, is the path of a unix socket (mode 0600, in
	// a directory created 0700) that is etcd's only client listener, and
	// etcd listens on no peer port: only processes that can open the path
	// reach it. ClientPort and PeerPort are then unused. A path longer
	// than a unix socket allows is refused.
	ClientSocket string
}

// Embedded is an etcd server running in this process, listening on
// loopback only.
type Embedded struct {
	etcd       *embed.Etcd
	clientURL  string
	clientPort int
	peerPort   int
	closing    *atomic.Bool
	closeOnce  sync.Once
}

// StartEmbedded starts etcd in cfg.Dir and waits until it serves. Client
// and peer URLs are on 127.0.0.1 (free ports unless given), so it never
// collides with another etcd on the machine. It fails if the server is not
// ready within cfg.StartTimeout, e.g. because another process holds Dir.
func StartEmbedded(ctx context.Context, cfg EmbeddedConfig) (*Embedded, error) {
	if cfg.Dir == "" {
		return nil, errors.New("etcdstore: embedded etcd needs a data dir")
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("etcdstore: embedded etcd data dir: %w", err)
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 30 * time.Second
	}
	if cfg.AutoCompactionRetention == "" {
		cfg.AutoCompactionRetention = "1h"
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.StartTimeout)
	defer cancel()

	// A port picked as free can be taken before etcd binds it; retry then.
	const attempts = 5
	var lastErr error
	for range attempts {
		e, err := startEmbedded(ctx, cfg)
		if err == nil {
			return e, nil
		}
		lastErr = err
		if !errors.Is(err, syscall.EADDRINUSE) || (cfg.ClientPort != 0 && cfg.PeerPort != 0) {
			break
		}
	}
	return nil, lastErr
}

func startEmbedded(ctx context.Context, cfg EmbeddedConfig) (*Embedded, error) {
	clientPort, peerPort := cfg.ClientPort, cfg.PeerPort
	var err error
	if cfg.ClientSocket != "" {
		clientPort, peerPort = -1, -1 // no TCP listener
	}
	if clientPort == 0 {
		if clientPort, err = freePort(); err != nil {
			return nil, err
		}
	}
	if peerPort == 0 {
		if peerPort, err = freePort(); err != nil {
			return nil, err
		}
	}
	clientURL := url.URL{Scheme: "http", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(clientPort))}
	peerURL := url.URL{Scheme: "http", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(peerPort))}
	if cfg.ClientSocket != "" {
		sock, err := filepath.Abs(cfg.ClientSocket)
		if err != nil {
			return nil, fmt.Errorf("etcdstore: embedded etcd socket: %w", err)
		}
		// sun_path holds 108 bytes with its NUL.
		if len(sock) > 107 {
			return nil, fmt.Errorf("etcdstore: embedded etcd socket path %s is %d bytes, longer than a unix socket allows (107): use a shorter data dir", sock, len(sock))
		}
		if err := os.MkdirAll(filepath.Dir(sock), 0o700); err != nil {
			return nil, fmt.Errorf("etcdstore: embedded etcd socket dir: %w", err)
		}
		if err := os.Chmod(filepath.Dir(sock), 0o700); err != nil {
			return nil, fmt.Errorf("etcdstore: embedded etcd socket dir: %w", err)
		}
		clientURL = url.URL{Scheme: "unix", Path: sock}
		// Advertised only (a single member never dials itself); nothing
		// listens there.
		peerURL = url.URL{Scheme: "http", Host: "127.0.0.1:2380"}
	}

	ec := embed.NewConfig()
	ec.Name = "kontinuous"
	ec.Dir = cfg.Dir
	ec.ListenClientUrls = []url.URL{clientURL}
	ec.AdvertiseClientUrls = []url.URL{clientURL}
	ec.ListenPeerUrls = []url.URL{peerURL}
	if cfg.ClientSocket != "" {
		ec.ListenPeerUrls = nil
	}
	ec.AdvertisePeerUrls = []url.URL{peerURL}
	ec.InitialCluster = ec.Name + "=" + peerURL.String()
	ec.InitialClusterToken = "kontinuous"
	ec.UnsafeNoFsync = cfg.UnsafeNoFsync
	ec.EnableGRPCGateway = false
	ec.AutoCompactionMode = embed.CompactorModePeriodic
	ec.AutoCompactionRetention = cfg.AutoCompactionRetention
	ec.QuotaBackendBytes = cfg.QuotaBackendBytes
	ec.LogLevel = "warn"
	closing := new(atomic.Bool)
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(newZapLogger(cfg.Logger, zapcore.WarnLevel, "etcd", closing))

	// embed.StartEtcd blocks without limit while another process holds
	// the data dir's lock; bound it.
	type started struct {
		e   *embed.Etcd
		err error
	}
	ch := make(chan started, 1)
	go func() {
		e, err := embed.StartEtcd(ec)
		ch <- started{e, err}
	}()
	var e *embed.Etcd
	select {
	case s := <-ch:
		if s.err != nil {
			closing.Store(true)
			return nil, fmt.Errorf("etcdstore: start embedded etcd in %s: %w", cfg.Dir, s.err)
		}
		e = s.e
	case <-ctx.Done():
		closing.Store(true)
		go func() {
			if s := <-ch; s.e != nil {
				s.e.Close()
			}
		}()
		return nil, fmt.Errorf("etcdstore: embedded etcd in %s did not start (is another process using it?): %w", cfg.Dir, ctx.Err())
	}

	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		closing.Store(true)
		e.Close()
		return nil, fmt.Errorf("etcdstore: embedded etcd in %s: %w", cfg.Dir, err)
	case <-ctx.Done():
		closing.Store(true)
		e.Close()
		return nil, fmt.Errorf("etcdstore: embedded etcd in %s not ready: %w", cfg.Dir, ctx.Err())
	}
	if clientURL.Scheme == "unix" {
		if err := os.Chmod(clientURL.Path, 0o600); err != nil {
			closing.Store(true)
			e.Close()
			return nil, fmt.Errorf("etcdstore: embedded etcd socket: %w", err)
		}
	}
	return &Embedded{etcd: e, clientURL: clientURL.String(), clientPort: clientPort, peerPort: peerPort, closing: closing}, nil
}

// freePort asks the kernel for a free loopback TCP port.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("etcdstore: find a free port: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		return 0, fmt.Errorf("etcdstore: find a free port: %w", err)
	}
	return port, nil
}

// Endpoints returns the client URLs to give to Connect.
func (e *Embedded) Endpoints() []string { return []string{e.clientURL} }

// ClientPort is the loopback port clients connect to.
func (e *Embedded) ClientPort() int { return e.clientPort }

// PeerPort is the loopback port of the (unused) peer listener.
func (e *Embedded) PeerPort() int { return e.peerPort }

// Close stops the server cleanly, closing its listeners and data files.
// It is safe to call more than once.
func (e *Embedded) Close() {
	e.closeOnce.Do(func() {
		e.closing.Store(true)
		e.etcd.Close()
	})
}
