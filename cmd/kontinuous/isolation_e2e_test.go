package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/etcdstore"
)

// TestStageCannotReadTheServersSecretsThroughTheBinary: the review's
// finding, replayed against the server binary started with its secrets in
// its environment: a stage reading its parent's and its init's
// environment, and listing the data directory, sees none of it.
func TestStageCannotReadTheServersSecretsThroughTheBinary(t *testing.T) {
	needBwrap(t)
	bin := buildServer(t)
	gh := newGitHub(t)
	dir := t.TempDir()
	const ghSecret = "github-client-secret-canary-4711"
	t.Setenv("AUTH_SECRET", testSecret)
	t.Setenv("GITHUB_CLIENT_ID", "sandbox-client")
	t.Setenv("GITHUB_CLIENT_SECRET", ghSecret)
	t.Setenv("KONTINUOUS_LOCAL_ISOLATION", "") // the default: auto
	srv := startProcess(t, bin, "--listen", "127.0.0.1:0", "--data-dir", dir,
		"--github-api-url", gh.APIURL, "--github-url", gh.URL, "--log-level", "info")
	rc := newRetryClient()
	createAppPipeline(t, rc, srv.url)
	spec := specHead + `    stages:
      - name: snoop
        type: command
        params: {command: ["sh", "-c", 'tr "\0" "\n" </proc/$PPID/environ; tr "\0" "\n" </proc/1/environ; ls -a ` + dir + `; ls ` + dir + `/etcd; echo snoop-done']}
`
	repo := gh.Repo("acme", "app")
	sha := repo.Commit("main", map[string]string{".pipeline.yml": spec}, "spec")
	if status, body := deliverPush(rc, srv.url, repo, gh.Hooks("acme", "app")[0].Secret, "snoop-1", sha); status != http.StatusCreated {
		t.Fatalf("delivery: %d %s", status, body)
	}
	alice := tbToken(t, "alice", 1001, "tok-alice")
	b := waitFor(t, rc, []string{srv.url}, alice, 1, patience, func(b pipeline.Build) bool { return b.Status.Done() })
	status, log := rc.do(http.MethodGet, srv.url+"/api/v1/pipelines/acme/app/builds/1/stages/1/logs", alice, nil, map[string]string{"Accept": "text/plain"})
	if status != http.StatusOK {
		t.Fatalf("log: HTTP %d %s", status, log)
	}
	if b.Status != pipeline.StatusSuccess || !bytes.Contains(log, []byte("snoop-done")) || !bytes.Contains(log, []byte("KONTINUOUS_BUILD_ID=1")) {
		t.Fatalf("build %s (%s); log:\n%s", b.Status, b.Message, log)
	}
	// The data dir shows only the empty path to the workspace.
	for _, leak := range []string{testSecret, ghSecret, "AUTH_SECRET", "GITHUB_CLIENT", "member\n", "\netcd\n"} {
		if bytes.Contains(log, []byte(leak)) {
			t.Errorf("the stage saw %q; log:\n%s", leak, log)
		}
	}
}

// TestSetsidProcessEndsWhenItsStageIsCanceled: a stage that starts
// `setsid sleep 313` leaves nothing running once it is canceled.
func TestSetsidProcessEndsWhenItsStageIsCanceled(t *testing.T) {
	needBwrap(t)
	w := newWorld(t)
	w.createPipeline()
	dur := "313." + strconv.Itoa(os.Getpid()) // unique on the host
	spec := specHead + `    stages:
      - name: escape
        type: command
        params: {command: ["sh", "-c", "setsid sleep ` + dur + ` </dev/null >/dev/null 2>&1 & echo started; sleep 120"]}
`
	_, r := w.push(map[string]string{".pipeline.yml": spec}, "d-1")
	expect(t, r, http.StatusCreated)
	w.waitBuild(1, func(b pipeline.Build) bool {
		return len(b.Stages) == 1 && b.Stages[0].Status == pipeline.StatusRunning && strings.Contains(w.stageLog(1, 1), "started")
	})
	if !pollHost(func() bool { return len(sleepers(dur)) == 1 }) {
		t.Fatalf("setsid sleep %s never showed on the host", dur)
	}
	expect(t, w.do("POST", "/api/v1/pipelines/acme/app/builds/1/cancel", token(t, "carol", 1003, "tok-carol"), nil), http.StatusOK)
	w.waitBuild(1, func(b pipeline.Build) bool { return b.Stages[0].Status == pipeline.StatusCanceled })
	if !pollHost(func() bool { return len(sleepers(dur)) == 0 }) {
		t.Errorf("setsid sleep %s outlived its canceled stage: pids %v", dur, sleepers(dur))
	}
}

// sleepers are the host's live `sleep dur` processes.
func sleepers(dur string) []int {
	want := []byte("sleep\x00" + dur + "\x00")
	var pids []int
	entries, _ := os.ReadDir("/proc") // unreadable: none found, and the first poll fails the test
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil && bytes.Equal(b, want) && processRuns(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// pollHost waits up to a minute for cond.
func pollHost(cond func() bool) bool {
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}

// TestEmbeddedEtcdAcceptsOnlyTheServer: the running server's embedded
// etcd opens no TCP port (a raw etcd client finds nothing to talk to on
// any port this process listens on) and its socket is the server's only.
func TestEmbeddedEtcdAcceptsOnlyTheServer(t *testing.T) {
	// Other etcds of this test binary (shared test clusters) may listen
	// on TCP: only ports opened by this server count.
	before := map[string]bool{}
	for _, p := range ownListeningPorts() {
		before[p] = true
	}
	w := newWorld(t)
	w.createPipeline() // etcd works for the server
	sock := filepath.Join(w.dir, "run", "etcd.sock")
	if len(sock) > 107 {
		sock = "" // a deep temp dir: the socket is in a private temp dir
	}
	if sock != "" {
		for path, want := range map[string]os.FileMode{sock: 0o600, filepath.Dir(sock): 0o700} {
			if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != want {
				t.Errorf("%s: %v, want mode %v", path, err, want)
			}
		}
	}
	probed := 0
	for _, port := range ownListeningPorts() {
		probed++
		if before[port] {
			continue
		}
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"127.0.0.1:" + port}, DialTimeout: time.Second})
		if err != nil {
			continue
		}
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		if _, err := cli.Get(ctx, "/", clientv3.WithPrefix(), clientv3.WithCountOnly()); err == nil {
			t.Errorf("port %s serves etcd's key space to any local process", port)
		}
		cancel()
		_ = cli.Close() // test probe
	}
	if probed == 0 {
		t.Fatal("found none of this process's listening ports (the server's HTTP port at least)")
	}
}

// ownListeningPorts are the TCP ports this process listens on (its
// sockets in LISTEN state, found through /proc/self/fd).
func ownListeningPorts() []string {
	mine := map[string]bool{}
	fds, _ := os.ReadDir("/proc/self/fd") // none found: the caller's "found none" check fails
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

// TestExternalEtcdWithoutClientCertificateIsWarnedAboutOnTheLocalExecutor:
// local stages share the host's network, so an external etcd that asks
// for no client certificate answers them too; the server says so at
// start-up (the embedded etcd, on a hidden unix socket, needs no warning).
func TestExternalEtcdWithoutClientCertificateIsWarnedAboutOnTheLocalExecutor(t *testing.T) {
	bin := buildServer(t)
	e, err := etcdstore.StartEmbedded(t.Context(), etcdstore.EmbeddedConfig{Dir: t.TempDir(), UnsafeNoFsync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	const warning = "local stages can reach this etcd"
	srv := startProcess(t, bin, "--listen", "127.0.0.1:0", "--data-dir", t.TempDir(), "--auth-secret", testSecret,
		"--etcd-endpoints", strings.Join(e.Endpoints(), ","))
	if !srv.warned(warning) {
		t.Errorf("no start-up warning %q with an external etcd and no client certificate", warning)
	}
	embedded := startProcess(t, bin, "--listen", "127.0.0.1:0", "--data-dir", t.TempDir(), "--auth-secret", testSecret)
	if embedded.warned(warning) {
		t.Error("the embedded etcd is warned about too")
	}
}
