package local

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// Sandbox runs command stages with bubblewrap (bwrap), each in its own
// PID, mount, IPC, UTS and cgroup namespaces (and user namespace where the
// kernel allows one), with every capability dropped. A stage sees:
//
//   - its build's src, home and tmp directories, read-write, at the same
//     paths as on the host (so HOME, TMPDIR and paths in logs stay true);
//   - the system directories (/usr, /bin, /sbin, /lib*, /etc, /opt and the
//     absolute PATH entries outside the server's data directory),
//     read-only;
//   - a private /tmp and /var/tmp (tmpfs), a minimal /dev and the /proc of
//     its own PID namespace (with /proc/sys read-only).
//
// It does not see the server's processes, environment or memory, its data
// directory (etcd, secrets, other builds' workspaces, logs) nor the Docker
// socket. The network is the host's: stages fetch dependencies, and they
// can reach loopback services (the server's HTTP API, which wants a token).
//
// The stage's command runs as pid 2 under bwrap's init (pid 1). When the
// command exits, or the stage is canceled or times out, init is killed,
// and the kernel kills every process left in the PID namespace: nothing a
// stage starts (setsid, double forks, daemons) outlives it.
type Sandbox struct {
	bwrap   string // absolute path of bwrap
	version string // "bubblewrap 0.8.0"
}

// sysDirs are the host directories a sandbox shows read-only (symbolic
// links among them, as /bin on merged-/usr systems, stay links).
var sysDirs = []string{"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt"}

// NewSandbox finds bwrap in path (a PATH list) and proves that it can
// build a sandbox on this host by running a command in one. The error says
// why not, with bwrap's own message (e.g. no user namespaces in a
// container).
func NewSandbox(ctx context.Context, path string) (*Sandbox, error) {
	bwrap, err := lookPath("bwrap", "", path)
	if err != nil {
		return nil, errors.New("bwrap (bubblewrap) is not installed")
	}
	s := &Sandbox{bwrap: bwrap}
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, bwrap, "--version").Output(); err == nil {
		s.version = strings.TrimSpace(string(out))
	}
	probe, err := lookPath("true", "", path)
	if err != nil {
		probe = "/bin/true"
	}
	dir, err := os.MkdirTemp("", "kontinuous-sandbox-probe-")
	if err != nil {
		return nil, fmt.Errorf("bwrap probe: %w", err)
	}
	defer func() { _ = os.RemoveAll(dir) }() // best effort: an empty temp dir
	ws := workspace{root: dir, src: dir, home: dir, tmp: dir}
	args := s.args(ws, dir, path, nil)
	cmd := exec.CommandContext(ctx, bwrap, append(args, "--", probe)...)
	cmd.Env = []string{"PATH=" + path}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if i := strings.IndexByte(msg, '\n'); i >= 0 {
			msg = msg[:i]
		}
		if msg == "" {
			msg = err.Error()
		}
		return nil, fmt.Errorf("%s cannot create a sandbox on this host: %s", bwrap, msg)
	}
	return s, nil
}

// String names the sandbox for logs: "bwrap (bubblewrap 0.8.0, /usr/bin/bwrap)".
func (s *Sandbox) String() string {
	if s.version == "" {
		return "bwrap (" + s.bwrap + ")"
	}
	return "bwrap (" + s.version + ", " + s.bwrap + ")"
}

// args are bwrap's options (before "--" and the command) for a command
// of ws running in dir. path is the commands' PATH; hidden are the
// directories and files never shown (the server's data directory, its key
// files and kubeconfig), even where they lie under a shown directory.
func (s *Sandbox) args(ws workspace, dir, path string, hidden []string) []string {
	a := []string{
		"--unshare-user-try", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
		"--die-with-parent", "--new-session", "--cap-drop", "ALL",
	}
	shown := map[string]bool{}
	for _, d := range sysDirs {
		fi, err := os.Lstat(d)
		switch {
		case err != nil:
			continue
		case fi.Mode()&os.ModeSymlink != 0:
			if target, err := os.Readlink(d); err == nil {
				a = append(a, "--symlink", target, d)
			}
		case fi.IsDir():
			a = append(a, "--ro-bind", d, d)
			shown[d] = true
		}
	}
	covered := func(p string) bool {
		for d := range shown {
			if within(p, d) {
				return true
			}
		}
		return false
	}
	// /etc/resolv.conf may be a link out of /etc (systemd-resolved):
	// show its target, or names would not resolve.
	hidden = resolved(hidden)
	// A path inside a hidden one is never shown; one that holds a hidden
	// path is shown with that path masked (below).
	hides := func(p string) bool {
		for _, h := range hidden {
			if within(p, h) {
				return true
			}
		}
		return false
	}
	if real, err := filepath.EvalSymlinks("/etc/resolv.conf"); err == nil && !covered(real) && !hides(real) {
		a = append(a, "--ro-bind-try", real, real)
	}
	for _, d := range filepath.SplitList(path) {
		if !filepath.IsAbs(d) {
			continue
		}
		d = filepath.Clean(d)
		if covered(d) || hides(d) {
			continue
		}
		if fi, err := os.Stat(d); err == nil && fi.IsDir() {
			a = append(a, "--ro-bind", d, d)
			shown[d] = true
		}
	}
	// A data directory under a shown one (/opt/kontinuous) is hidden
	// under an empty tmpfs, a file (/etc/kontinuous/tls.key) under an
	// empty one.
	for _, h := range hidden {
		if !covered(h) {
			continue
		}
		if fi, err := os.Stat(h); err == nil && fi.IsDir() {
			a = append(a, "--tmpfs", h)
		} else if err == nil {
			a = append(a, "--ro-bind", os.DevNull, h)
		}
	}
	a = append(a,
		"--proc", "/proc",
		// A fresh procfs lets uid 0 write global sysctls: not from a stage.
		"--ro-bind-try", "/proc/sys", "/proc/sys",
		"--ro-bind-try", "/proc/sysrq-trigger", "/proc/sysrq-trigger",
		"--dev", "/dev",
		"--tmpfs", "/tmp",
		"--tmpfs", "/var/tmp",
	)
	// The workspace last: it may lie under /tmp (tests' temp dirs).
	seen := map[string]bool{}
	for _, d := range []string{ws.src, ws.home, ws.tmp} {
		if !seen[d] {
			seen[d] = true
			a = append(a, "--bind", d, d)
		}
	}
	return append(a, "--chdir", dir)
}

// within reports whether p is dir or inside it.
func within(p, dir string) bool {
	r, err := filepath.Rel(dir, p)
	return err == nil && filepath.IsLocal(r) || r == "."
}

// resolved is paths, absolute and clean, each with its target too when it
// is a symbolic link (both names must be hidden); empty ones dropped.
func resolved(paths []string) []string {
	var out []string
	for _, p := range paths {
		if p == "" {
			continue
		}
		if abs, err := filepath.Abs(p); err == nil {
			p = abs
		}
		out = append(out, filepath.Clean(p))
		if real, err := filepath.EvalSymlinks(p); err == nil && real != filepath.Clean(p) {
			out = append(out, real)
		}
	}
	return out
}

// sandboxed is one program started in the sandbox.
type sandboxed struct {
	infoR, infoW *os.File
	done         chan struct{}              // closed once bwrap's info is read or will not come
	init         atomic.Pointer[os.Process] // the sandbox's init (pid 1 inside), once known
}

// sandbox turns cmd (built for p) into bwrap running p in the sandbox.
// bwrap writes the host pid of the sandbox's init to fd 3 once the
// namespaces exist; cmd's own process is bwrap's monitor, which exits
// with the command's status (128+n for a signal) when the command exits.
func (x *Executor) sandbox(cmd *exec.Cmd, p process) (*sandboxed, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("local executor: %w", err)
	}
	args := x.cfg.Sandbox.args(*p.ws, p.dir, x.cfg.Path, append([]string{filepath.Dir(x.cfg.WorkDir)}, x.cfg.Hide...))
	argv := append([]string{"bwrap"}, args...)
	argv = append(argv, "--info-fd", "3", "--", p.path)
	cmd.Path = x.cfg.Sandbox.bwrap
	cmd.Args = append(argv, p.argv[1:]...)
	cmd.ExtraFiles = []*os.File{w}
	return &sandboxed{infoR: r, infoW: w, done: make(chan struct{})}, nil
}

// started reads bwrap's info once cmd.Start has returned (successfully
// or not).
func (s *sandboxed) started() {
	_ = s.infoW.Close() // bwrap has its copy
	go func() {
		defer close(s.done)
		defer func() { _ = s.infoR.Close() }() // read-only pipe end
		var info struct {
			ChildPid int `json:"child-pid"`
		}
		if err := json.NewDecoder(s.infoR).Decode(&info); err != nil || info.ChildPid <= 0 {
			return
		}
		// On Linux this holds a pidfd: later signals cannot reach a
		// process that reused the pid.
		if p, err := os.FindProcess(info.ChildPid); err == nil {
			s.init.Store(p)
		}
	}()
}

// term asks the stage's processes to stop: SIGTERM to the sandbox's
// session (its init ignores it; the command and the children that stayed
// in its group get it).
func (s *sandboxed) term(exited <-chan struct{}, wait time.Duration) {
	select {
	case <-s.done:
	case <-exited:
	case <-time.After(wait):
	}
	if p := s.init.Load(); p != nil {
		_ = syscall.Kill(-p.Pid, syscall.SIGTERM) // the group may be gone already
	}
}

// kill ends the sandbox: SIGKILL to its init takes every process of its
// PID namespace with it. bwrap's monitor is killed first by the caller;
// init also dies with it (--die-with-parent).
func (s *sandboxed) kill() {
	select {
	case <-s.done:
	case <-time.After(5 * time.Second): // a monitor that never wrote its info
	}
	if p := s.init.Load(); p != nil {
		_ = p.Signal(syscall.SIGKILL) // gone already is fine
	}
}

// ran reports whether the sandbox was set up (its init existed).
func (s *sandboxed) ran() bool { return s.init.Load() != nil }
