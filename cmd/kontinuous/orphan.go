package main

import (
	"context"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// underGoRun reports whether this process was started by `go run`: its
// parent is the go command (Linux: /proc/<ppid>/comm), or it runs from
// where go run puts binaries (a go-build temporary directory, or an
// executable cached in the build cache, …/go-build/xx/<hash>-d/name).
func underGoRun() bool {
	if comm, err := os.ReadFile("/proc/" + strconv.Itoa(os.Getppid()) + "/comm"); err == nil {
		return strings.TrimSpace(string(comm)) == "go"
	}
	exe, err := os.Executable()
	if err != nil {
		return false
	}
	exe = filepath.ToSlash(exe)
	return strings.Contains(exe, "/go-build") && (strings.Contains(exe, "/exe/") || strings.HasSuffix(path.Dir(exe), "-d"))
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
