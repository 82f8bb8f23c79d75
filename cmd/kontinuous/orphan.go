package main

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// underGoRun reports whether this process is a binary `go run` built: it
// runs from go's temporary build directory (…/go-build…/b001/exe/).
func underGoRun() bool {
	exe, err := os.Executable()
	if err != nil {
		return false
	}
	return strings.Contains(filepath.ToSlash(exe), "/go-build") && strings.Contains(filepath.ToSlash(exe), "/exe/")
}

// exitWithParent makes a server started by `go run` shut down gracefully
// (through stop, as on SIGTERM) when the go command exits: `go run` does
// not pass SIGTERM on to the program it started, so without this a
// stopped `go run ./cmd/kontinuous` would leave the server running as an
// orphan. A built binary is never tied to its parent (it may be started
// by a script that exits). The returned func ends the watch.
func exitWithParent(ctx context.Context, stop context.CancelFunc, log *slog.Logger) func() {
	if !underGoRun() {
		return func() {}
	}
	parent := os.Getppid()
	wctx, cancel := context.WithCancel(ctx)
	go func() {
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-wctx.Done():
				return
			case <-t.C:
				if os.Getppid() != parent {
					log.Info("the go run that started this server has exited; shutting down")
					stop()
					return
				}
			}
		}
	}()
	return cancel
}
