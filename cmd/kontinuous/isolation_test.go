package main

import (
	"context"
	"os"
	"sync"
	"testing"

	"github.com/kontinuous/kontinuous/pipeline/executor/local"
)

var (
	bwrapOnce sync.Once
	bwrapErr  error
)

// bwrapWorks reports whether bubblewrap can build a sandbox on this host.
func bwrapWorks() error {
	bwrapOnce.Do(func() { _, bwrapErr = local.NewSandbox(context.Background(), os.Getenv("PATH")) })
	return bwrapErr
}

// testIsolation is the setting test servers get: the default (auto, the
// sandbox) where bwrap works, else none, so that tests about other things
// run their command stages on a host without bubblewrap.
func testIsolation() []string {
	if bwrapWorks() != nil {
		return []string{"--local-isolation", "none"}
	}
	return nil
}

// needBwrap skips a test that proves the sandbox where bubblewrap cannot
// run, and fails it in CI (.ci/run installs bubblewrap).
func needBwrap(t *testing.T) {
	t.Helper()
	if err := bwrapWorks(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI needs a working bwrap (.ci/run installs bubblewrap): %v", err)
		}
		t.Skipf("needs bubblewrap (apt-get install bubblewrap): %v", err)
	}
}
