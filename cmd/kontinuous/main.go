// Command kontinuous is the Kontinuous CI/CD API server. With no settings
// it serves on 127.0.0.1:3005 with an embedded etcd in ./kontinuous-data.
//
//	kontinuous [--listen addr] [--data-dir dir] ...   serve (see --help)
//	kontinuous healthcheck [settings]                   exit 0 if the server answers /healthz
//	kontinuous lint [file|-]                            check a .pipeline.yml (exit 1 on problems)
//	kontinuous version (or --version)                   print the build version
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr))
}

func realMain(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "healthcheck":
			return healthcheck(args[1:], stderr)
		case "lint":
			return lintCommand(args[1:], os.Stdin, stdout, stderr)
		case "version", "--version", "-version":
			fmt.Fprintln(stdout, "kontinuous "+buildVersion())
			return 0
		}
	}
	cfg, err := LoadConfig(args, os.Getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "kontinuous: "+err.Error())
		return 2
	}
	logger := newLogger(stderr, cfg.LogLevel)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	stopOrphan := exitWithParent(ctx, stop, logger)
	defer stopOrphan()
	app, err := Start(ctx, cfg, logger)
	if err != nil {
		// One line, like a settings error: the cause and the setting.
		fmt.Fprintln(stderr, "kontinuous: "+err.Error())
		return 1
	}
	<-ctx.Done()
	stop()
	logger.Info("shutting down")
	if err := app.Shutdown(context.Background()); err != nil {
		logger.Error("shutdown", "error", err.Error())
		return 1
	}
	logger.Info("stopped")
	return 0
}

func newLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	// The level was validated by LoadConfig.
	_ = l.UnmarshalText([]byte(level))
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
}

// healthcheck asks the configured listen address for /healthz (for
// container health checks).
func healthcheck(args []string, stderr io.Writer) int {
	cfg, err := LoadConfig(args, os.Getenv, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "kontinuous: "+err.Error())
		return 2
	}
	host, port, _ := net.SplitHostPort(cfg.Listen) // validated by LoadConfig
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	scheme := "http"
	client := &http.Client{Timeout: 3 * time.Second}
	if cfg.TLSCert != "" {
		scheme = "https"
		// Loopback check of our own certificate, whatever name it carries.
		client.Transport = &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} //nolint:gosec
	}
	resp, err := client.Get(scheme + "://" + net.JoinHostPort(host, port) + "/healthz")
	if err != nil {
		fmt.Fprintln(stderr, "kontinuous: healthcheck: "+err.Error())
		return 1
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintln(stderr, "kontinuous: healthcheck: status", resp.StatusCode)
		return 1
	}
	return 0
}
