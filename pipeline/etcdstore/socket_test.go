package etcdstore_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kontinuous/kontinuous/pipeline/etcdstore"
)

// TestEmbeddedOnASocketServesOnlyThroughIt: with ClientSocket the server
// reaches etcd through a 0600 socket in a 0700 directory, and etcd opens no
// TCP port for anyone else to find.
func TestEmbeddedOnASocketServesOnlyThroughIt(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "run", "etcd.sock")
	// Other etcds of this test binary (TestMain's shared one) listen on
	// TCP: only ports opened by this one count.
	before := map[string]bool{}
	for _, p := range listeningPorts(t) {
		before[p] = true
	}
	e, err := etcdstore.StartEmbedded(t.Context(), etcdstore.EmbeddedConfig{Dir: filepath.Join(dir, "etcd"), ClientSocket: sock, UnsafeNoFsync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if eps := e.Endpoints(); len(eps) != 1 || eps[0] != "unix://"+sock {
		t.Fatalf("endpoints %v", eps)
	}
	cli, err := etcdstore.Connect(t.Context(), etcdstore.ClientConfig{Endpoints: e.Endpoints()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.Put(t.Context(), "k", "v"); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]os.FileMode{sock: 0o600, filepath.Dir(sock): 0o700} {
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v (%v), want %v", path, fi.Mode().Perm(), err, want)
		}
	}
	// No TCP listener opened since answers etcd's API.
	for _, port := range listeningPorts(t) {
		if before[port] {
			continue
		}
		c := http.Client{Timeout: 2 * time.Second}
		if resp, err := c.Get("http://127.0.0.1:" + port + "/version"); err == nil {
			resp.Body.Close()
			if resp.Header.Get("X-Etcd-Cluster-Id") != "" || strings.Contains(resp.Header.Get("Content-Type"), "json") {
				t.Errorf("port %s answers etcd's /version", port)
			}
		}
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		raw, err := clientv3.New(clientv3.Config{Endpoints: []string{"127.0.0.1:" + port}, DialTimeout: time.Second})
		if err == nil {
			if _, err := raw.Get(ctx, "k"); err == nil {
				t.Errorf("port %s serves etcd's key space", port)
			}
			raw.Close()
		}
		cancel()
	}
}

// TestEmbeddedSocketPathTooLongIsRefused names the limit.
func TestEmbeddedSocketPathTooLongIsRefused(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, strings.Repeat("d", 120), "etcd.sock")
	_, err := etcdstore.StartEmbedded(t.Context(), etcdstore.EmbeddedConfig{Dir: filepath.Join(dir, "etcd"), ClientSocket: sock, UnsafeNoFsync: true})
	if err == nil || !strings.Contains(err.Error(), "longer than a unix socket allows") {
		t.Fatalf("err = %v", err)
	}
}

// listeningPorts are the TCP ports this process listens on (its sockets
// in LISTEN state, found through /proc/self/fd).
func listeningPorts(t *testing.T) []string {
	t.Helper()
	mine := map[string]bool{}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		if link, err := os.Readlink("/proc/self/fd/" + fd.Name()); err == nil {
			if inode, ok := strings.CutPrefix(link, "socket:["); ok {
				mine[strings.TrimSuffix(inode, "]")] = true
			}
		}
	}
	var ports []string
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fields := strings.Fields(line)
			if len(fields) < 10 || fields[3] != "0A" || !mine[fields[9]] {
				continue
			}
			_, hexPort, _ := strings.Cut(fields[1], ":")
			if p, err := strconv.ParseUint(hexPort, 16, 16); err == nil {
				ports = append(ports, strconv.Itoa(int(p)))
			}
		}
	}
	return ports
}
