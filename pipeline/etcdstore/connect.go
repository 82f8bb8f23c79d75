package etcdstore

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"

	"github.com/kontinuous/kontinuous/pipeline"
)

// ClientConfig says how to reach an etcd cluster.
type ClientConfig struct {
	// Endpoints are client URLs (http://host:2379 or https://...).
	Endpoints []string
	// CAFile verifies the servers' certificates; CertFile and KeyFile
	// authenticate this client. Any of them set turns TLS on.
	CAFile, CertFile, KeyFile string
	// DialTimeout bounds the first contact with the cluster (default 5s).
	DialTimeout time.Duration
	// Logger receives the client's own log at error level (nil: discard).
	Logger *slog.Logger
}

// Connect returns a client of the cluster after checking that it answers:
// it fails with an error wrapping pipeline.ErrUnavailable if no endpoint
// answers within DialTimeout. Keep-alives are set so that a dead
// connection is noticed within seconds, and reconnection backs off to at
// most two seconds so that a restarted etcd is used again quickly. The
// caller closes the client.
func Connect(ctx context.Context, cfg ClientConfig) (*clientv3.Client, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, fmt.Errorf("etcdstore: connect: %w", pipeline.Invalid("etcd-endpoints", "no etcd endpoint given"))
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	var tlsConfig *tls.Config
	if cfg.CAFile != "" || cfg.CertFile != "" || cfg.KeyFile != "" {
		if (cfg.CertFile == "") != (cfg.KeyFile == "") {
			return nil, fmt.Errorf("etcdstore: connect: %w", pipeline.Invalid("etcd-cert", "client certificate and key must be given together"))
		}
		info := transport.TLSInfo{CertFile: cfg.CertFile, KeyFile: cfg.KeyFile, TrustedCAFile: cfg.CAFile}
		var err error
		if tlsConfig, err = info.ClientConfig(); err != nil {
			return nil, fmt.Errorf("etcdstore: connect: load etcd TLS files: %w", err)
		}
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            cfg.Endpoints,
		DialTimeout:          cfg.DialTimeout,
		DialKeepAliveTime:    10 * time.Second, // gRPC's floor
		DialKeepAliveTimeout: 3 * time.Second,
		PermitWithoutStream:  true,
		TLS:                  tlsConfig,
		Logger:               newZapLogger(cfg.Logger, zapcore.ErrorLevel, "etcd-client", nil),
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           grpcbackoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
			MinConnectTimeout: cfg.DialTimeout,
		})},
	})
	if err != nil {
		return nil, fmt.Errorf("etcdstore: connect to %v: %w", cfg.Endpoints, err)
	}
	// clientv3.New does not wait for a connection: prove one.
	cctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	if _, err := cli.Get(cctx, "health-probe", clientv3.WithCountOnly()); err != nil {
		closeErr := cli.Close()
		err = errors.Join(err, closeErr)
		if isUnavailable(err) {
			return nil, fmt.Errorf("etcdstore: etcd at %v did not answer within %s: %w: %w", cfg.Endpoints, cfg.DialTimeout, pipeline.ErrUnavailable, err)
		}
		return nil, fmt.Errorf("etcdstore: connect to %v: %w", cfg.Endpoints, err)
	}
	return cli, nil
}
