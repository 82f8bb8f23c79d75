package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A test binary that dies with its node running (a panic, go test's
// -timeout) leaves the host changed; the next StartNode puts it back from
// the record the dead node wrote. This plays the dead binary's part by hand
// (no kubelet needed): a changed sysctl, the bridge, a cgroup, the state
// directory.
func TestNextNodeRestoresTheHostADeadTestBinaryLeft(t *testing.T) {
	if why := NodeUnavailable(); why != "" {
		if os.Getenv("CI") == "true" {
			t.Fatal(why)
		}
		t.Skip(why + "; run as root with those packages (or in CI) to run this test")
	}
	lock, err := os.OpenFile(nodeLockPath, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	deadline := time.Now().Add(10 * time.Minute) // another binary's node may be running its tests
	for syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("another test binary's real node holds %s", nodeLockPath)
		}
		time.Sleep(time.Second)
	}
	// A test binary killed before this one may have left its node's changes
	// (a killed CI run left the bridge, and "ip link add" failed): restore
	// them first, as the next node would, so this test starts from a clean host.
	recoverLeftover()
	saved := leftoverPath
	leftoverPath = filepath.Join(t.TempDir(), "node.json")
	t.Cleanup(func() { leftoverPath = saved })

	const key = "vm/overcommit_memory"
	before := readSysctl(t, key)
	h, err := recordHost()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "kontinuous-node-")
	if err != nil {
		t.Fatal(err)
	}
	n := &Node{Dir: dir, cgroupRoot: "/kontinuous-testenv-" + randomHex(4), sock: filepath.Join(dir, "containerd.sock"), host: h}
	if err := n.writeLeftover(); err != nil {
		t.Fatal(err)
	}
	// What the dead binary's node changed.
	changed := "1"
	if before == "1" {
		changed = "0"
	}
	if err := os.WriteFile("/proc/sys/"+key, []byte(changed), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.WriteFile("/proc/sys/"+key, []byte(before), 0o644) }) // in case the test fails
	if out, err := exec.Command("ip", "link", "add", bridgeName, "type", "bridge").CombinedOutput(); err != nil {
		t.Fatalf("ip link add: %v: %s", err, out)
	}
	cg := filepath.Join("/sys/fs/cgroup/memory", n.cgroupRoot)
	if err := os.Mkdir(cg, 0o755); err != nil {
		t.Logf("no memory cgroup to leave behind: %v", err)
		cg = ""
	}

	recoverLeftover()

	if got := readSysctl(t, key); got != before {
		t.Errorf("%s = %s after recovery, want %s as before the node", key, got, before)
	}
	if exec.Command("ip", "link", "show", bridgeName).Run() == nil {
		t.Errorf("bridge %s still there", bridgeName)
		_ = exec.Command("ip", "link", "delete", bridgeName).Run() // tidy up after the failure
	}
	for _, p := range []string{dir, cg, leftoverPath} {
		if _, err := os.Stat(p); p != "" && err == nil {
			t.Errorf("%s still there", p)
		}
	}
}

func readSysctl(t *testing.T, key string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/" + key)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}
