package testenv

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// The real node: a kubelet with containerd and runc, beside KWOK's fake
// node. It is labelled and tainted NodePoolKey=NodePoolValue, so only pods
// that select and tolerate it run there (the kubernetes executor's
// --kube-node-pool NodePool); every other pod stays on KWOK's node.
const (
	// RealNodeName is the kubelet's node.
	RealNodeName = "kontinuous-testenv-node"
	// NodePoolKey and NodePoolValue are the real node's label and taint.
	NodePoolKey   = "kontinuous.test/node-pool"
	NodePoolValue = "real"
	// NodePool is the executor setting (key=value) that runs stage pods on
	// the real node.
	NodePool = NodePoolKey + "=" + NodePoolValue
	// BusyboxImage is a local image of busybox-static (sh, echo, sleep, env
	// ...), already in containerd: pods use it without a registry.
	BusyboxImage = "kontinuous.test/busybox:testenv"
	// ClonerImage is busybox with the host's git (and the libraries it and
	// git-remote-http load): what the executor's clone init container needs.
	ClonerImage = "kontinuous.test/cloner:testenv"
	// Gateway is the host's address on the pods' bridge. A server pods must
	// reach (a git server for clones) listens here.
	Gateway = "10.244.77.1"

	pauseImage = "kontinuous.test/pause:testenv"
	bridgeName = "kontb0"
	podSubnet  = "10.244.77.0/24"
	cniBinDir  = "/usr/lib/cni"
	// nodeLockPath serialises real nodes across test binaries: a kubelet
	// changes host-wide settings, so one runs at a time.
	nodeLockPath = "/run/kontinuous-testenv-node.lock"
)

// Node is a running real node.
type Node struct {
	// Dir holds containerd's and the kubelet's state and logs.
	Dir string

	env        *Env
	host       *hostState
	lock       *os.File
	procs      []*proc
	cgroupRoot string
	bridge     bool
	sock       string
}

var (
	nodeOnce sync.Once
	node     *Node
	nodeErr  error
)

// NodeUnavailable says why the real node cannot run on this host, or "".
func NodeUnavailable() string {
	if os.Geteuid() != 0 {
		return "the real test node (kubelet, containerd) needs root"
	}
	var missing []string
	for _, c := range []string{"containerd", "containerd-shim-runc-v2", "ctr", "runc", "iptables", "ip", "ldd"} {
		if _, err := exec.LookPath(c); err != nil {
			missing = append(missing, c)
		}
	}
	for _, p := range []string{cniBinDir + "/bridge", cniBinDir + "/host-local", cniBinDir + "/loopback"} {
		if _, err := os.Stat(p); err != nil {
			missing = append(missing, p)
		}
	}
	if !staticBinary("/bin/busybox") {
		missing = append(missing, "a static /bin/busybox")
	}
	if len(missing) > 0 {
		return "the real test node lacks " + strings.Join(missing, ", ") +
			" (apt-get install containerd runc containernetworking-plugins busybox-static iptables nftables git; .ci/run does)"
	}
	return ""
}

// staticBinary reports an ELF file without a program interpreter.
func staticBinary(path string) bool {
	f, err := elf.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return false
		}
	}
	return true
}

// RequireNode returns the test binary's control plane with a real node,
// starting both on first use. In CI (CI=true) a host that cannot run the
// node fails the test with one line saying why; elsewhere the test is
// skipped with that line (and with -short or KONTINUOUS_KUBE_TESTS=skip).
func RequireNode(t testing.TB) (*Env, *Node) {
	t.Helper()
	if why := enabled(); why != "" {
		t.Skip(why)
	}
	if why := NodeUnavailable(); why != "" {
		if os.Getenv("CI") == "true" {
			t.Fatal(why)
		}
		t.Skip(why + "; run as root with those packages (or in CI) to run this test")
	}
	env := Require(t)
	nodeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		node, nodeErr = env.StartNode(ctx)
	})
	if nodeErr != nil {
		t.Fatalf("cannot start the real test node: %v", nodeErr)
	}
	return env, node
}

// StartNode starts containerd and a kubelet registering as RealNodeName,
// with BusyboxImage and ClonerImage imported. It waits (up to ctx) for
// another test binary's node to stop first. Stop it with Stop.
func (e *Env) StartNode(ctx context.Context) (n *Node, err error) {
	if why := NodeUnavailable(); why != "" {
		return nil, errors.New(why)
	}
	kubelet := filepath.Join(e.bin, "kubelet")
	if _, err := os.Stat(kubelet); err != nil {
		return nil, fmt.Errorf("no kubelet in %s (scripts/kube-testenv/build.sh builds it unless KUBE_TESTENV_KUBELET=0): %w", e.bin, err)
	}
	lock, err := lockNode(ctx)
	if err != nil {
		return nil, err
	}
	// A test binary that died with its node running (a panic, go test's
	// -timeout) could not put the host back: do it now, before recording.
	recoverLeftover()
	n = &Node{env: e, lock: lock}
	defer func() {
		if err != nil {
			if errs := n.Stop(); len(errs) > 0 {
				err = fmt.Errorf("%w (and tearing down: %v)", err, errors.Join(errs...))
			}
		}
	}()
	if err := n.prepare(); err != nil {
		return n, err
	}
	if err := n.makeBridge(); err != nil {
		return n, err
	}
	if err := n.startContainerd(ctx); err != nil {
		return n, err
	}
	if err := n.importImages(ctx); err != nil {
		return n, err
	}
	if err := n.startKubelet(ctx, kubelet); err != nil {
		return n, err
	}
	return n, nil
}

// lockNode takes nodeLockPath, waiting (up to ctx) for another test
// binary's node to release it.
func lockNode(ctx context.Context) (*os.File, error) {
	lock, err := os.OpenFile(nodeLockPath, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	for syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
		select {
		case <-ctx.Done():
			lock.Close()
			return nil, fmt.Errorf("another test binary's real node holds %s", nodeLockPath)
		case <-time.After(time.Second):
		}
	}
	return lock, nil
}

// prepare records the host's state, makes the node's directory and
// records the leftover file that lets a later binary restore the host.
func (n *Node) prepare() (err error) {
	if n.host, err = recordHost(); err != nil {
		return err
	}
	if n.Dir, err = os.MkdirTemp("", "kontinuous-node-"); err != nil {
		return err
	}
	n.cgroupRoot = "/kontinuous-testenv-" + randomHex(4)
	n.sock = filepath.Join(n.Dir, "containerd.sock")
	if err := n.writeLeftover(); err != nil {
		return err
	}
	for _, d := range []string{"containerd/root", "containerd/state", "containerd/opt", "cni/net.d", "cni/ipam", "kubelet", "pods", "volume-plugins", "images"} {
		if err := os.MkdirAll(filepath.Join(n.Dir, d), 0o755); err != nil {
			return err
		}
	}
	return nil
}

// makeBridge makes the pods' bridge up front so that servers can listen
// on Gateway before the first pod; the CNI bridge plugin adopts it.
func (n *Node) makeBridge() error {
	if err := exec.Command("ip", "link", "show", bridgeName).Run(); err == nil {
		_ = exec.Command("ip", "link", "delete", bridgeName).Run() // a crashed run's leftover
	}
	for _, args := range [][]string{
		{"link", "add", bridgeName, "type", "bridge"},
		{"addr", "add", Gateway + "/24", "dev", bridgeName},
		{"link", "set", bridgeName, "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
		}
		n.bridge = true
	}
	return nil
}

// startContainerd starts containerd, everything under Dir, and waits for
// its socket.
func (n *Node) startContainerd(ctx context.Context) error {
	if err := n.writeContainerdConfig(); err != nil {
		return err
	}
	if err := n.start("containerd", "containerd", "--config", filepath.Join(n.Dir, "containerd.toml")); err != nil {
		return err
	}
	return n.env.waitFor(ctx, "containerd's socket", 60*time.Second, func(ctx context.Context) (bool, error) {
		if err := n.exited(); err != nil {
			return false, err
		}
		return exec.CommandContext(ctx, "ctr", "--address", n.sock, "version").Run() == nil, nil
	})
}

// importImages writes the images and imports them: no registry is
// involved.
func (n *Node) importImages(ctx context.Context) error {
	images, err := writeImages(filepath.Join(n.Dir, "images"))
	if err != nil {
		return err
	}
	for _, tarball := range images {
		out, err := exec.CommandContext(ctx, "ctr", "--address", n.sock, "-n", "k8s.io", "images", "import", tarball).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ctr images import %s: %v: %s", filepath.Base(tarball), err, bytes.TrimSpace(out))
		}
	}
	return nil
}

// startKubelet starts the kubelet in its own cgroup tree (removed on
// Stop) and waits for the node to be Ready.
func (n *Node) startKubelet(ctx context.Context, kubelet string) error {
	e := n.env
	hierarchies, _ := filepath.Glob("/sys/fs/cgroup/*")
	for _, h := range hierarchies {
		if fi, err := os.Stat(h); err == nil && fi.IsDir() {
			_ = os.Mkdir(filepath.Join(h, n.cgroupRoot), 0o755) // read-only or odd hierarchies are left alone
		}
	}
	ports, err := freePorts(1)
	if err != nil {
		return err
	}
	if err := n.writeKubeletConfig(ports[0]); err != nil {
		return err
	}
	if err := n.start("kubelet", kubelet,
		"--config="+filepath.Join(n.Dir, "kubelet.yaml"),
		"--kubeconfig="+e.Kubeconfig,
		"--root-dir="+filepath.Join(n.Dir, "kubelet"),
		"--hostname-override="+RealNodeName,
		"--node-ip="+Gateway, // the kubelet refuses a loopback node IP
		"--node-labels="+NodePool,
		"--v=1",
	); err != nil {
		return err
	}
	admin := e.Admin()
	if err := e.waitFor(ctx, "the real node to be Ready", 3*time.Minute, func(ctx context.Context) (bool, error) {
		return n.ready(ctx, admin)
	}); err != nil {
		return fmt.Errorf("%w\nkubelet: %s", err, n.LogTail("kubelet"))
	}
	return nil
}

// ready tells whether the kubelet is still running and RealNodeName is
// Ready.
func (n *Node) ready(ctx context.Context, admin kubernetes.Interface) (bool, error) {
	if err := n.exited(); err != nil {
		return false, err
	}
	nd, err := admin.CoreV1().Nodes().Get(ctx, RealNodeName, metav1.GetOptions{})
	if err != nil {
		return false, nil
	}
	for _, c := range nd.Status.Conditions {
		if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
			return true, nil
		}
	}
	return false, nil
}

func (n *Node) writeContainerdConfig() error {
	cfg := fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = %[3]q

[plugins."io.containerd.internal.v1.opt"]
  path = %[4]q

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[5]q
  # The test sandbox lacks CAP_SYS_RESOURCE: without this runc fails with
  # "can't get final child's PID from pipe: EOF".
  restrict_oom_score_adj = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %[6]q
    conf_dir = %[7]q
    max_conf_num = 1
`, filepath.Join(n.Dir, "containerd/root"), filepath.Join(n.Dir, "containerd/state"), n.sock,
		filepath.Join(n.Dir, "containerd/opt"), pauseImage, cniBinDir, filepath.Join(n.Dir, "cni/net.d"))
	if err := os.WriteFile(filepath.Join(n.Dir, "containerd.toml"), []byte(cfg), 0o600); err != nil {
		return err
	}
	// No masquerade: pods only talk to the host (Gateway), so no NAT rule
	// is needed on the host.
	conflist := fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "kontinuous-testenv",
  "plugins": [
    {
      "type": "bridge",
      "bridge": %q,
      "isGateway": true,
      "ipMasq": false,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": %q, "gateway": %q}]],
        "dataDir": %q
      }
    }
  ]
}
`, bridgeName, podSubnet, Gateway, filepath.Join(n.Dir, "cni/ipam"))
	return os.WriteFile(filepath.Join(n.Dir, "cni/net.d/10-kontinuous.conflist"), []byte(conflist), 0o600)
}

func (n *Node) writeKubeletConfig(port int) error {
	cfg := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# 1.35 refuses cgroup v1 hosts unless told not to; this host is v1 (hybrid).
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: %[1]s
failSwapOn: false
containerRuntimeEndpoint: unix://%[2]s
address: %[8]s
port: %[3]d
readOnlyPort: 0
healthzPort: 0
# The API server reaches the kubelet (logs) on the bridge with no client
# certificate: a test-only setting.
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
podLogsDir: %[4]s
volumePluginDir: %[5]s
resolvConf: ""
makeIPTablesUtilChains: false
protectKernelDefaults: false
# The images exist only locally: never collect them, and never evict for
# a busy shared disk.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "1Mi"
  nodefs.available: "1%%"
  nodefs.inodesFree: "1%%"
  imagefs.available: "1%%"
registerWithTaints:
- key: %[6]s
  value: %[7]s
  effect: NoSchedule
maxPods: 20
`, n.cgroupRoot, n.sock, port, filepath.Join(n.Dir, "pods"), filepath.Join(n.Dir, "volume-plugins"), NodePoolKey, NodePoolValue, Gateway)
	return os.WriteFile(filepath.Join(n.Dir, "kubelet.yaml"), []byte(cfg), 0o600)
}

func (n *Node) start(name, path string, args ...string) error {
	logPath := filepath.Join(n.Dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return err
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Dir = n.Dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait() // noticed through done; the log says why
		f.Close()
		close(p.done)
	}()
	n.procs = append(n.procs, p)
	return nil
}

func (n *Node) exited() error {
	for _, p := range n.procs {
		select {
		case <-p.done:
			return fmt.Errorf("%s exited: %s", p.name, tail(p.log))
		default:
		}
	}
	return nil
}

// LogTail returns the end of "kubelet"'s or "containerd"'s log.
func (n *Node) LogTail(name string) string {
	return tail(filepath.Join(n.Dir, name+".log"))
}

// Stop stops the kubelet, every container, the shims and containerd, and
// puts the host back as it was (mounts, paths, sysctls, firewall tables,
// cgroups, the bridge). It returns what could not be undone.
func (n *Node) Stop() []error {
	var errs []error
	for i := len(n.procs) - 1; i >= 0; i-- {
		if n.procs[i].name == "kubelet" {
			n.procs[i].stop()
		}
	}
	// Containers: every process in the node's cgroups.
	if n.cgroupRoot != "" {
		for range 50 {
			if killCgroup(n.cgroupRoot) == 0 {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	// Shims outlive containerd: end those of this containerd.
	if n.sock != "" {
		killShims(n.sock)
	}
	for i := len(n.procs) - 1; i >= 0; i-- {
		n.procs[i].stop()
	}
	n.procs = nil
	if n.host != nil {
		errs = append(errs, n.host.restore(n.Dir)...)
	}
	if n.cgroupRoot != "" {
		errs = append(errs, removeCgroups(n.cgroupRoot)...)
	}
	if n.bridge {
		if out, err := exec.Command("ip", "link", "delete", bridgeName).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("ip link delete %s: %v: %s", bridgeName, err, bytes.TrimSpace(out)))
		}
	}
	if n.Dir != "" {
		if err := os.RemoveAll(n.Dir); err != nil {
			errs = append(errs, err)
		}
	}
	if n.lock != nil {
		// The host is as good as this run can make it: a later run must not
		// "restore" what it recorded.
		if err := os.Remove(leftoverPath); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
		n.lock.Close() // releases the flock
	}
	return errs
}

// leftoverPath holds the record of the running node (what the host was
// like before it, where its state is) while it runs; Stop removes it. A
// record found by StartNode is a dead test binary's.
var leftoverPath = "/run/kontinuous-testenv-node.json"

// leftover is the record at leftoverPath.
type leftover struct {
	Dir        string
	CgroupRoot string
	Sock       string
	Sysctls    map[string]string
	Absent     []string
	Tables     map[string]bool
	Chains     map[string][]string
	Mounts     map[string]bool
}

func (n *Node) writeLeftover() error {
	b, err := json.Marshal(leftover{Dir: n.Dir, CgroupRoot: n.cgroupRoot, Sock: n.sock,
		Sysctls: n.host.sysctls, Absent: n.host.absent, Tables: n.host.tables, Chains: n.host.chains, Mounts: n.host.mounts})
	if err != nil {
		return err
	}
	return os.WriteFile(leftoverPath, b, 0o600)
}

// recoverLeftover tears down the node of a dead test binary, if its record
// is there: its containers, shims, bridge, cgroups and directory, and puts
// back the host settings it recorded. The caller holds nodeLockPath. What
// cannot be undone is reported on stderr; the record goes either way, so
// one stuck step cannot block every later run.
func recoverLeftover() {
	b, err := os.ReadFile(leftoverPath)
	if err != nil {
		return
	}
	var l leftover
	if err := json.Unmarshal(b, &l); err != nil || l.Dir == "" || l.CgroupRoot == "" {
		fmt.Fprintf(os.Stderr, "testenv: ignoring an unreadable %s: %v\n", leftoverPath, err)
		_ = os.Remove(leftoverPath) // unusable; the next node records afresh
		return
	}
	fmt.Fprintf(os.Stderr, "testenv: a real node of a test binary that died was left running (%s); tearing it down and restoring the host\n", l.Dir)
	n := &Node{Dir: l.Dir, cgroupRoot: l.CgroupRoot, sock: l.Sock,
		host:   &hostState{sysctls: l.Sysctls, absent: l.Absent, tables: l.Tables, chains: l.Chains, mounts: l.Mounts},
		bridge: exec.Command("ip", "link", "show", bridgeName).Run() == nil}
	for _, err := range n.Stop() {
		fmt.Fprintf(os.Stderr, "testenv: restoring the host after a dead test binary's node: %v\n", err)
	}
	_ = os.Remove(leftoverPath) // reported above if it mattered
}

// killCgroup SIGKILLs every process in the cgroup tree root of every
// hierarchy and returns how many it found.
func killCgroup(root string) int {
	found := 0
	hierarchies, _ := filepath.Glob("/sys/fs/cgroup/*")
	for _, h := range hierarchies {
		_ = filepath.WalkDir(filepath.Join(h, root), func(p string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
				return nil
			}
			b, _ := os.ReadFile(p)
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil && pid > 0 {
					found++
					_ = syscall.Kill(pid, syscall.SIGKILL) // it may be gone already
				}
			}
			return nil
		})
	}
	return found
}

// killShims SIGKILLs the containerd-shim processes serving the containerd
// at sock.
func killShims(sock string) {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if len(args) == 0 || !strings.Contains(filepath.Base(args[0]), "containerd-shim") {
			continue
		}
		for i, a := range args {
			if a == "-address" && i+1 < len(args) && args[i+1] == sock {
				if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p))); err == nil {
					_ = syscall.Kill(pid, syscall.SIGKILL) // it may be gone already
				}
			}
		}
	}
}

// stopNode stops the shared node, if any, reporting on stderr what it
// could not undo; false then.
func stopNode() bool {
	if node == nil {
		return true
	}
	errs := node.Stop()
	node = nil
	for _, err := range errs {
		fmt.Fprintf(os.Stderr, "testenv: restoring the host after the real node: %v\n", err)
	}
	return len(errs) == 0
}
