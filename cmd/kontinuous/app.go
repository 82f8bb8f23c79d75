package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kontinuous/kontinuous/auth"
	"github.com/kontinuous/kontinuous/pipeline/etcdstore"
)

// App is a started server: HTTP listener, etcd, engine.
type App struct {
	cfg      Config
	log      *slog.Logger
	URL      string // base URL actually listened on
	Addr     net.Addr
	srv      *http.Server
	serveErr chan error
	closers  []func(context.Context) error
}

// secretFile is where a generated auth secret is kept in the data dir.
const secretFile = "auth-secret"

// loadOrCreateSecret returns cfg's secret, or the one kept in the data dir,
// generating 32 random bytes on first start (file mode 0600).
func loadOrCreateSecret(dataDir string, log *slog.Logger) ([]byte, error) {
	path := filepath.Join(dataDir, secretFile)
	b, err := os.ReadFile(path)
	if err == nil {
		s, err := auth.DecodeSecret(strings.TrimSpace(string(b)))
		if err != nil {
			return nil, fmt.Errorf("setting --auth-secret (AUTH_SECRET) is unset and the secret kept in %s is unusable: %w (set --auth-secret, or remove the file to generate a new one)", path, err)
		}
		log.Info("using the auth secret kept in the data dir", "file", path)
		return s, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("setting --auth-secret (AUTH_SECRET) is unset and the secret kept in the data dir cannot be read: %w (set --auth-secret, or fix the file's permissions)", err)
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, err
	}
	enc := encodeSecret(secret)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("setting --data-dir (KONTINUOUS_DATA_DIR): cannot keep the generated auth secret: %w (or set --auth-secret)", err)
	}
	if _, err := f.WriteString(enc + "\n"); err != nil {
		f.Close()
		return nil, fmt.Errorf("setting --data-dir (KONTINUOUS_DATA_DIR): cannot keep the generated auth secret: %w (or set --auth-secret)", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("setting --data-dir (KONTINUOUS_DATA_DIR): cannot keep the generated auth secret: %w (or set --auth-secret)", err)
	}
	log.Info("generated an auth secret (set --auth-secret/AUTH_SECRET to choose one)", "file", path)
	return secret, nil
}

// openEtcd starts the embedded etcd or connects to the external cluster.
func openEtcd(ctx context.Context, cfg Config, log *slog.Logger) (*clientv3.Client, func(context.Context) error, error) {
	if len(cfg.EtcdEndpoints) > 0 {
		cli, err := etcdstore.Connect(ctx, etcdstore.ClientConfig{
			Endpoints: cfg.EtcdEndpoints, CAFile: cfg.EtcdCA, CertFile: cfg.EtcdCert, KeyFile: cfg.EtcdKey,
			DialTimeout: 5 * time.Second,
		})
		if err != nil {
			return nil, nil, fmt.Errorf("setting --etcd-endpoints (KV_ADDRESS): %w", err)
		}
		log.Info("using external etcd", "endpoints", strings.Join(cfg.EtcdEndpoints, ","))
		if cfg.Executor == "local" && cfg.EtcdCert == "" {
			// Local stages share the host's network: an etcd that does
			// not ask for a client certificate answers them too.
			log.Warn("local stages can reach this etcd over the network unless it requires client certificates or authentication: set --etcd-cert/--etcd-key with an etcd that asks for them (docs/security.md)",
				"endpoints", strings.Join(cfg.EtcdEndpoints, ","))
		}
		return cli, func(context.Context) error { return cli.Close() }, nil
	}
	dir := filepath.Join(cfg.DataDir, "etcd")
	// The embedded etcd serves the server only: a unix socket in the data
	// dir (0700 dir, 0600 socket), no TCP port that a stage or another
	// local user could find. A data dir too deep for a socket path gets a
	// private temporary directory instead.
	sockDir, cleanup := filepath.Join(cfg.DataDir, "run"), func() {}
	if abs, err := filepath.Abs(sockDir); err == nil && len(abs)+len("/etcd.sock") > 107 {
		tmp, err := os.MkdirTemp("", "kontinuous-etcd-")
		if err != nil {
			return nil, nil, fmt.Errorf("embedded etcd socket: %w", err)
		}
		sockDir, cleanup = tmp, func() { _ = os.RemoveAll(tmp) } // best effort: a stale empty dir
	}
	emb, err := etcdstore.StartEmbedded(ctx, etcdstore.EmbeddedConfig{Dir: dir, Logger: log, ClientSocket: filepath.Join(sockDir, "etcd.sock"), QuotaBackendBytes: cfg.Cluster.EtcdQuotaBytes})
	if err != nil {
		cleanup()
		return nil, nil, fmt.Errorf("embedded etcd in %s: %w", dir, err)
	}
	cli, err := etcdstore.Connect(ctx, etcdstore.ClientConfig{Endpoints: emb.Endpoints(), DialTimeout: 5 * time.Second})
	if err != nil {
		emb.Close()
		cleanup()
		return nil, nil, fmt.Errorf("embedded etcd: %w", err)
	}
	log.Info("embedded etcd started", "dir", dir, "socket", filepath.Join(sockDir, "etcd.sock"))
	return cli, func(context.Context) error {
		err := cli.Close()
		emb.Close()
		cleanup()
		return err
	}, nil
}

// listen opens the listener, with TLS (and HTTP/2) when configured.
func listen(cfg Config) (net.Listener, *tls.Config, error) {
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, nil, fmt.Errorf("setting --listen (KONTINUOUS_LISTEN): %w", err)
	}
	if cfg.TLSCert == "" {
		return ln, nil, nil
	}
	cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
	if err != nil {
		ln.Close()
		return nil, nil, fmt.Errorf("setting --tls-cert/--tls-key (CERT_FILE/KEY_FILE): %w", err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"}}
	return ln, tc, nil
}

// Shutdown stops accepting, drains in-flight requests (bounded), stops
// the engine and closes etcd.
func (a *App) Shutdown(ctx context.Context) error {
	var errs []error
	if a.srv != nil {
		// Drain in-flight requests for at most 15 s, then cut the rest,
		// so that what follows still gets its own time.
		hctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		if err := a.srv.Shutdown(hctx); err != nil {
			errs = append(errs, fmt.Errorf("http: %w", err))
			_ = a.srv.Close()
		}
		cancel()
	}
	// Each closer (engine, stores, etcd) gets its own bound: a slow one
	// must not leave the next, etcd above all, without time to close.
	for i := len(a.closers) - 1; i >= 0; i-- {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		if err := a.closers[i](cctx); err != nil {
			errs = append(errs, err)
		}
		cancel()
	}
	return errors.Join(errs...)
}

func encodeSecret(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
