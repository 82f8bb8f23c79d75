// Package testenv runs a real Kubernetes control plane for tests: etcd
// 3.6, kube-apiserver (RBAC on), kube-controller-manager (job, garbage
// collector, service account, TTL-after-finished and namespace
// controllers), kube-scheduler and KWOK faking one node, all on loopback
// ports in a temporary directory. The binaries come from
// scripts/kube-testenv/build.sh, which builds them from the Go module proxy
// once into ${KONTINUOUS_KUBE_CACHE:-$HOME/.cache/kontinuous-kube}.
//
// Tests call Require, which provisions on first use and shares one control
// plane per test binary. The package's TestMain is
//
//	func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }
//
// which builds the binaries before go test's -timeout starts counting (a
// cold build takes minutes) and stops the control plane at the end. Pods do
// not really run: KWOK moves them through their lifecycle, deciding their
// end from the first container's command (see stages.yaml): [false ...]
// fails, [sleep ...] keeps running, anything else succeeds.
package testenv

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	_ "embed"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/yaml"
)

//go:embed stages.yaml
var podStages []byte

// NodeName is the KWOK node pods are scheduled on.
const NodeName = "kwok-node-0"

// Env is a running control plane.
type Env struct {
	// Dir holds the data, keys, kubeconfig and each process's log.
	Dir string
	// Host is the API server's URL.
	Host string
	// AdminToken authenticates as a member of system:masters.
	AdminToken string
	// Kubeconfig is the path of an admin kubeconfig.
	Kubeconfig string

	procs []*proc
	bin   string // the binaries' directory
}

// Config returns a client configuration authenticating with token
// (AdminToken, or a ServiceAccount token).
func (e *Env) Config(token string) *rest.Config {
	return &rest.Config{
		Host:            e.Host,
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{Insecure: true},
		QPS:             200,
		Burst:           400,
	}
}

// Admin returns a client with full rights.
func (e *Env) Admin() kubernetes.Interface {
	c, err := kubernetes.NewForConfig(e.Config(e.AdminToken))
	if err != nil {
		panic(err) // only fails on a malformed config, which Config never makes
	}
	return c
}

var (
	sharedOnce sync.Once
	shared     *Env
	sharedErr  error
	// built is closed when the build Prepare started has ended, with
	// buildErr its error; nil when Prepare was not called.
	built    chan struct{}
	buildErr error
)

// Prepare starts building (or finding cached) the control-plane binaries
// for a TestMain that does more than Main: call it before m.Run, and
// StopShared after. It does not wait: the binary's other tests run while
// the build goes on (on a cold machine, tens of minutes), and the first
// Require waits for it. Without Prepare, the first Require starts the
// build itself.
func Prepare() {
	if !flag.Parsed() {
		flag.Parse()
	}
	if enabled() != "" || built != nil {
		return
	}
	built = make(chan struct{})
	go func() {
		defer close(built)
		ctx, cancel := context.WithTimeout(context.Background(), 45*time.Minute)
		defer cancel()
		_, buildErr = Binaries(ctx)
	}()
}

// waitBuilt waits for the build Prepare started, until deadline.
func waitBuilt(deadline time.Time) error {
	if built == nil {
		return nil
	}
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	select {
	case <-built:
		return buildErr
	case <-timer.C:
		return errors.New("the build of the control-plane binaries started by Prepare has not ended (see $KONTINUOUS_KUBE_CACHE/build.status)")
	}
}

// Main runs a test binary's tests for TestMain: it first builds (or finds
// cached) the control-plane binaries, outside the -timeout that go test
// sets for the tests themselves, then runs the tests, then stops the
// shared control plane. It returns the exit code for os.Exit.
func Main(m *testing.M) int {
	Prepare()
	if built != nil {
		<-built // every test here needs the binaries: wait outside -timeout
	}
	code := m.Run()
	if !StopShared() && code == 0 {
		code = 1
	}
	return code
}

// enabled returns why the integration tests are skipped, or "".
func enabled() string {
	if os.Getenv("CI") == "true" {
		return ""
	}
	if os.Getenv("KONTINUOUS_KUBE_TESTS") == "skip" {
		return "Kubernetes integration tests skipped: KONTINUOUS_KUBE_TESTS=skip"
	}
	if testing.Short() {
		return "Kubernetes integration tests skipped with -short"
	}
	return ""
}

// Require returns the test binary's control plane, provisioning it (and
// building the binaries, the first time on a machine) on first use. When it
// cannot be provisioned the test fails; it is skipped only when
// KONTINUOUS_KUBE_TESTS=skip, or with -short outside CI.
func Require(t testing.TB) *Env {
	t.Helper()
	if why := enabled(); why != "" {
		t.Skip(why)
	}
	// Stop a minute before go test's -timeout would kill the binary, so a
	// build that cannot finish in time fails the test saying so.
	deadline := time.Now().Add(45 * time.Minute)
	if d, ok := t.(interface{ Deadline() (time.Time, bool) }); ok {
		if dl, ok := d.Deadline(); ok && dl.Add(-time.Minute).Before(deadline) {
			deadline = dl.Add(-time.Minute)
		}
	}
	if err := waitBuilt(deadline); err != nil {
		t.Fatalf("cannot build the Kubernetes control plane: %v", err)
	}
	sharedOnce.Do(func() {
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		defer cancel()
		shared, sharedErr = Start(ctx)
		if sharedErr != nil && ctx.Err() != nil {
			sharedErr = fmt.Errorf("%w (a cold build of the binaries takes minutes: call testenv.Main or testenv.Prepare in TestMain, or run scripts/kube-testenv/build.sh first)", sharedErr)
		}
	})
	if sharedErr != nil {
		t.Fatalf("cannot provision the Kubernetes control plane: %v", sharedErr)
	}
	return shared
}

// StopShared stops the real node RequireNode started and the control
// plane Require started, if any. It returns false when the host could not
// be put back as it was before the node (the reasons are on stderr).
func StopShared() bool {
	ok := stopNode()
	if shared != nil {
		shared.Stop()
	}
	return ok
}

// Binaries returns the directory holding the control-plane binaries,
// running scripts/kube-testenv/build.sh (which returns at once when they
// are cached) to get them.
func Binaries(ctx context.Context) (string, error) {
	script, err := findScript()
	if err != nil {
		return "", err
	}
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, "bash", script)
	cmd.Stdout = &out
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s: %w", script, err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	dir := lines[len(lines)-1]
	if _, err := os.Stat(filepath.Join(dir, "kube-apiserver")); err != nil {
		return "", fmt.Errorf("%s printed %q, which has no kube-apiserver", script, dir)
	}
	return dir, nil
}

// findScript finds scripts/kube-testenv/build.sh above the working
// directory (a test runs in its package's directory).
func findScript() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		p := filepath.Join(dir, "scripts", "kube-testenv", "build.sh")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("scripts/kube-testenv/build.sh not found above the working directory")
		}
		dir = parent
	}
}

// Start provisions a new control plane. Stop it with Stop.
func Start(ctx context.Context) (env *Env, err error) {
	bin, err := Binaries(ctx)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "kontinuous-kube-")
	if err != nil {
		return nil, err
	}
	e := &Env{Dir: dir, AdminToken: randomHex(16), bin: bin}
	defer func() {
		if err != nil {
			e.Stop()
		}
	}()
	ports, err := freePorts(4)
	if err != nil {
		return nil, err
	}
	etcdPort, peerPort, apiPort, kwokPort := ports[0], ports[1], ports[2], ports[3]

	// etcd
	etcdURL := "http://127.0.0.1:" + strconv.Itoa(etcdPort)
	peerURL := "http://127.0.0.1:" + strconv.Itoa(peerPort)
	if err := e.start(bin, "etcd",
		"--name=default", "--data-dir="+filepath.Join(dir, "etcd"),
		"--listen-client-urls="+etcdURL, "--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL, "--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=default="+peerURL, "--unsafe-no-fsync", "--log-level=error",
	); err != nil {
		return nil, err
	}
	if err := e.waitHTTP(ctx, "etcd", etcdURL+"/health", "", 30*time.Second); err != nil {
		return nil, err
	}

	// kube-apiserver
	if err := writeFiles(dir, e.AdminToken); err != nil {
		return nil, err
	}
	e.Host = "https://127.0.0.1:" + strconv.Itoa(apiPort)
	if err := e.start(bin, "kube-apiserver",
		"--etcd-servers="+etcdURL,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", "--secure-port="+strconv.Itoa(apiPort),
		"--cert-dir="+filepath.Join(dir, "pki"),
		"--service-cluster-ip-range=10.96.0.0/24",
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file="+filepath.Join(dir, "sa.pub"),
		"--service-account-signing-key-file="+filepath.Join(dir, "sa.key"),
		"--token-auth-file="+filepath.Join(dir, "tokens.csv"),
		"--authorization-mode=RBAC",
		// No node-lifecycle controller runs to lift the not-ready taint
		// this plugin puts on new nodes; KWOK's node is Ready at once.
		"--disable-admission-plugins=TaintNodesByCondition",
		"--enable-priority-and-fairness=false",
		"--kubelet-preferred-address-types=InternalIP",
		"--profiling=false",
	); err != nil {
		return nil, err
	}
	if err := e.waitHTTP(ctx, "kube-apiserver", e.Host+"/readyz", e.AdminToken, 90*time.Second); err != nil {
		return nil, err
	}
	e.Kubeconfig = filepath.Join(dir, "admin.kubeconfig")
	if err := e.writeKubeconfig(); err != nil {
		return nil, err
	}

	// controllers and scheduler
	if err := e.start(bin, "kube-controller-manager",
		"--kubeconfig="+e.Kubeconfig, "--leader-elect=false", "--secure-port=0",
		"--controllers=job-controller,garbage-collector-controller,serviceaccount-controller,ttl-after-finished-controller,namespace-controller,pod-garbage-collector-controller,root-ca-certificate-publisher-controller",
	); err != nil {
		return nil, err
	}
	if err := e.start(bin, "kube-scheduler",
		"--kubeconfig="+e.Kubeconfig, "--leader-elect=false", "--secure-port=0",
	); err != nil {
		return nil, err
	}

	// a fake node
	admin := e.Admin()
	if err := createNode(ctx, admin); err != nil {
		return nil, err
	}
	stages := []string{filepath.Join(dir, "pod-stages.yaml")}
	if err := os.WriteFile(stages[0], podStages, 0o600); err != nil {
		return nil, err
	}
	for _, f := range []string{"node-initialize", "node-heartbeat", "pod-ready", "pod-delete"} {
		stages = append(stages, filepath.Join(filepath.Dir(bin), "kwok-stages", f+".yaml"))
	}
	kwokArgs := []string{
		"--kubeconfig=" + e.Kubeconfig, "--manage-single-node=" + NodeName,
		"--node-ip=127.0.0.1", "--node-port=" + strconv.Itoa(kwokPort),
		"--server-address=127.0.0.1:" + strconv.Itoa(kwokPort),
		"--cidr=10.0.0.0/24",
	}
	for _, s := range stages {
		kwokArgs = append(kwokArgs, "--config="+s)
	}
	if err := e.start(bin, "kwok", kwokArgs...); err != nil {
		return nil, err
	}
	if err := e.waitFor(ctx, "the kwok node to be Ready and the default ServiceAccount to exist", 60*time.Second, func(ctx context.Context) (bool, error) {
		n, err := admin.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		ready := false
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				ready = true
			}
		}
		if !ready {
			return false, nil
		}
		_, err = admin.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	}); err != nil {
		return nil, err
	}
	return e, nil
}

// Stop ends every process (SIGTERM, then SIGKILL) and removes Dir.
func (e *Env) Stop() {
	for i := len(e.procs) - 1; i >= 0; i-- {
		e.procs[i].stop()
	}
	e.procs = nil
	if e.Dir != "" {
		_ = os.RemoveAll(e.Dir) // best effort: a leftover temp dir is harmless
	}
}

// proc is one control-plane process.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

func (e *Env) start(bin, name string, args ...string) error {
	logPath := filepath.Join(e.Dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return err
	}
	cmd := exec.Command(filepath.Join(bin, name), args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Dir = e.Dir
	// Die with the test binary, whatever happens to it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait() // the exit is noticed through done; the log says why
		f.Close()
		close(p.done)
	}()
	e.procs = append(e.procs, p)
	return nil
}

func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM) // it may have just exited
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill() // last resort
		<-p.done
	}
}

// exited reports a process that died, with the end of its log.
func (e *Env) exited() error {
	for _, p := range e.procs {
		select {
		case <-p.done:
			return fmt.Errorf("%s exited: %s", p.name, tail(p.log))
		default:
		}
	}
	return nil
}

// LogTail returns the last bytes of a process's log ("kube-apiserver",
// "etcd", "kube-controller-manager", "kube-scheduler", "kwok"), for test
// failure messages.
func (e *Env) LogTail(name string) string {
	return tail(filepath.Join(e.Dir, name+".log"))
}

func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}

// waitFor polls cond until it holds, a process dies or timeout passes.
func (e *Env) waitFor(ctx context.Context, what string, timeout time.Duration, cond func(context.Context) (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		if err := e.exited(); err != nil {
			return err
		}
		ok, err := cond(ctx)
		if err != nil {
			return fmt.Errorf("waiting for %s: %w", what, err)
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("timed out after %s waiting for %s (logs in %s)", timeout, what, e.Dir)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (e *Env) waitHTTP(ctx context.Context, what, url, token string, timeout time.Duration) error {
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, // a loopback test server with a self-signed cert
	}}
	return e.waitFor(ctx, what+" at "+url, timeout, func(ctx context.Context) (bool, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return false, err
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
}

// writeFiles writes the service-account signing key and the token file.
func writeFiles(dir, adminToken string) error {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	priv := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	pubDER, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return err
	}
	pub := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	tokens := adminToken + `,admin,admin,"system:masters"` + "\n"
	for name, data := range map[string][]byte{"sa.key": priv, "sa.pub": pub, "tokens.csv": []byte(tokens)} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return err
		}
	}
	return nil
}

func (e *Env) writeKubeconfig() error {
	return e.WriteKubeconfig(e.Kubeconfig, e.AdminToken)
}

// WriteKubeconfig writes to path a kubeconfig for the API server that
// authenticates with token (AdminToken, or a ServiceAccount's token from
// ServiceAccountToken).
func (e *Env) WriteKubeconfig(path, token string) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["test"] = &clientcmdapi.Cluster{Server: e.Host, InsecureSkipTLSVerify: true}
	cfg.AuthInfos["user"] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["test"] = &clientcmdapi.Context{Cluster: "test", AuthInfo: "user"}
	cfg.CurrentContext = "test"
	return clientcmd.WriteToFile(*cfg, path)
}

// ServiceAccountToken creates the ServiceAccount ns/name (if it does not
// exist) and returns a token for it, valid for an hour.
func (e *Env) ServiceAccountToken(ctx context.Context, ns, name string) (string, error) {
	admin := e.Admin()
	_, err := admin.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return "", fmt.Errorf("create service account %s/%s: %w", ns, name, err)
	}
	hour := int64(3600)
	tok, err := admin.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &hour}}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("token of service account %s/%s: %w", ns, name, err)
	}
	return tok.Status.Token, nil
}

// ApplyRoles creates in namespace ns the Roles and RoleBindings of a
// multi-document YAML file (docs/kubernetes/rbac.yaml), with every
// binding's ServiceAccount subjects moved to namespace subjectNS. Anything
// but Roles and RoleBindings is an error, as is a file with none of either.
func (e *Env) ApplyRoles(ctx context.Context, raw []byte, ns, subjectNS string) error {
	admin := e.Admin()
	roles, bindings := 0, 0
	for _, doc := range splitYAML(raw) {
		var meta struct{ Kind string }
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			return err
		}
		switch meta.Kind {
		case "Role":
			var r rbacv1.Role
			if err := yaml.UnmarshalStrict(doc, &r); err != nil {
				return err
			}
			r.Namespace = ns
			if _, err := admin.RbacV1().Roles(ns).Create(ctx, &r, metav1.CreateOptions{}); err != nil {
				return fmt.Errorf("create role %s/%s: %w", ns, r.Name, err)
			}
			roles++
		case "RoleBinding":
			var b rbacv1.RoleBinding
			if err := yaml.UnmarshalStrict(doc, &b); err != nil {
				return err
			}
			b.Namespace = ns
			for i := range b.Subjects {
				if b.Subjects[i].Kind == rbacv1.ServiceAccountKind {
					b.Subjects[i].Namespace = subjectNS
				}
			}
			if _, err := admin.RbacV1().RoleBindings(ns).Create(ctx, &b, metav1.CreateOptions{}); err != nil {
				return fmt.Errorf("create rolebinding %s/%s: %w", ns, b.Name, err)
			}
			bindings++
		default:
			return fmt.Errorf("a %s among the Roles: only Roles and RoleBindings are expected", meta.Kind)
		}
	}
	if roles == 0 || bindings == 0 {
		return fmt.Errorf("%d Roles and %d RoleBindings, want some of each", roles, bindings)
	}
	return nil
}

// splitYAML splits a multi-document YAML file, dropping documents that are
// only comments.
func splitYAML(raw []byte) [][]byte {
	var docs [][]byte
	for _, d := range bytes.Split(raw, []byte("\n---")) {
		var body []byte
		for _, l := range bytes.Split(d, []byte("\n")) {
			if !bytes.HasPrefix(bytes.TrimSpace(l), []byte("#")) {
				body = append(append(body, l...), '\n')
			}
		}
		if len(bytes.TrimSpace(body)) > 0 {
			docs = append(docs, d)
		}
	}
	return docs
}

func createNode(ctx context.Context, c kubernetes.Interface) error {
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("32"),
		corev1.ResourceMemory: resource.MustParse("256Gi"),
		corev1.ResourcePods:   resource.MustParse("110"),
	}
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:        NodeName,
			Annotations: map[string]string{"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
			Labels:      map[string]string{"kubernetes.io/hostname": NodeName, "kubernetes.io/os": "linux", "type": "kwok"},
		},
		Status: corev1.NodeStatus{Capacity: capacity, Allocatable: capacity},
	}
	_, err := c.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create node: %w", err)
	}
	return nil
}

// freePorts reserves n distinct loopback ports.
func freePorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b)
}
