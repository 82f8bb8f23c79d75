package testenv

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
)

// hostSysctls are the kernel settings the kubelet (kernel.*, vm.*) and the
// CNI bridge plugin (ip_forward) change on the host; the node records them
// and puts them back.
var hostSysctls = []string{
	"kernel/panic", "kernel/panic_on_oops", "vm/overcommit_memory",
	"net/ipv4/ip_forward",
}

// hostPaths are fixed host paths the kubelet, containerd, its shims and
// the CNI plugins create whatever their configured directories: the node
// removes those that did not exist before it started.
var hostPaths = []string{
	"/var/lib/kubelet", "/var/log/containers", "/var/log/pods",
	"/var/lib/cni", "/run/containerd", "/var/run/netns", "/run/netns",
	"/usr/libexec/kubernetes", "/etc/cni", "/opt/cni", "/opt/containerd",
	"/var/lib/containerd",
}

// hostState is what the node changes on the host, as it was before.
type hostState struct {
	sysctls map[string]string
	absent  []string            // hostPaths that did not exist
	tables  map[string]bool     // "family name" of the nftables tables
	chains  map[string][]string // iptables chains by "cmd table"
	mounts  map[string]bool     // mount points
}

// recordHost reads what the node may change.
func recordHost() (*hostState, error) {
	h := &hostState{sysctls: map[string]string{}, chains: map[string][]string{}}
	for _, k := range hostSysctls {
		b, err := os.ReadFile("/proc/sys/" + k)
		if err != nil {
			return nil, fmt.Errorf("read sysctl %s: %w", k, err)
		}
		h.sysctls[k] = strings.TrimSpace(string(b))
	}
	for _, p := range hostPaths {
		if _, err := os.Lstat(p); errors.Is(err, os.ErrNotExist) {
			h.absent = append(h.absent, p)
		}
	}
	var err error
	if h.tables, err = nftTables(); err != nil {
		return nil, err
	}
	for _, cmd := range []string{"iptables", "ip6tables"} {
		for _, table := range []string{"filter", "nat", "mangle"} {
			h.chains[cmd+" "+table] = iptablesChains(cmd, table)
		}
	}
	if h.mounts, err = mountPoints(); err != nil {
		return nil, err
	}
	return h, nil
}

// restore puts back the recorded settings and removes what the node left
// (mounts made since recordHost under dir or under a host path that did
// not exist); it returns every step that failed (nil when the host is as
// it was).
func (h *hostState) restore(dir string) []error {
	var errs []error
	// Mounts first: a mount inside a path blocks its removal.
	errs = append(errs, h.unmountAdded(dir)...)
	errs = append(errs, h.removeAbsent()...)
	errs = append(errs, h.restoreSysctls()...)
	errs = append(errs, h.dropChains()...)
	errs = append(errs, h.dropTables()...)
	return errs
}

// unmountAdded unmounts, deepest first, the mounts made since recordHost
// under dir or under a host path that did not exist.
func (h *hostState) unmountAdded(dir string) []error {
	var errs []error
	now, err := mountPoints()
	if err != nil {
		errs = append(errs, err)
	}
	var added []string
	for m := range now {
		if h.mounts[m] {
			continue
		}
		ours := strings.HasPrefix(m, dir+"/")
		for _, p := range h.absent {
			ours = ours || m == p || strings.HasPrefix(m, p+"/")
		}
		if ours {
			added = append(added, m)
		}
	}
	// Deepest first.
	sort.Slice(added, func(i, j int) bool { return len(added[i]) > len(added[j]) })
	for _, m := range added {
		if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", m, err))
		}
	}
	return errs
}

// removeAbsent removes the host paths that did not exist.
func (h *hostState) removeAbsent() []error {
	var errs []error
	for _, p := range h.absent {
		if err := os.RemoveAll(p); err != nil {
			errs = append(errs, fmt.Errorf("remove %s: %w", p, err))
		}
	}
	return errs
}

// restoreSysctls writes back the sysctls that changed.
func (h *hostState) restoreSysctls() []error {
	var errs []error
	for _, k := range hostSysctls {
		b, err := os.ReadFile("/proc/sys/" + k)
		if err == nil && strings.TrimSpace(string(b)) == h.sysctls[k] {
			continue
		}
		if err := os.WriteFile("/proc/sys/"+k, []byte(h.sysctls[k]+"\n"), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("restore sysctl %s=%s: %w", k, h.sysctls[k], err))
		}
	}
	return errs
}

// dropChains removes the iptables chains created in tables that existed:
// first the rules that jump to them, then the chains.
func (h *hostState) dropChains() []error {
	var errs []error
	for key, before := range h.chains {
		cmd, table, _ := strings.Cut(key, " ")
		for _, c := range iptablesChains(cmd, table) {
			if slices.Contains(before, c) {
				continue
			}
			errs = append(errs, dropChain(cmd, table, c)...)
		}
	}
	return errs
}

// dropChain deletes the rules of table that jump to chain c, then flushes
// and deletes c.
func dropChain(cmd, table, c string) []error {
	var errs []error
	for _, rule := range iptablesRulesJumpingTo(cmd, table, c) {
		args := append([]string{"-t", table, "-D"}, rule...)
		if out, err := exec.Command(cmd, args...).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("%s %s: %v: %s", cmd, strings.Join(args, " "), err, out))
		}
	}
	for _, op := range []string{"-F", "-X"} {
		if out, err := exec.Command(cmd, "-t", table, op, c).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("%s -t %s %s %s: %v: %s", cmd, table, op, c, err, out))
		}
	}
	return errs
}

// dropTables deletes whole nftables tables that did not exist
// (iptables-nft makes one per iptables table it is first asked about).
func (h *hostState) dropTables() []error {
	var errs []error
	tables, err := nftTables()
	if err != nil {
		errs = append(errs, err)
	}
	for t := range tables {
		if h.tables[t] {
			continue
		}
		fam, name, _ := strings.Cut(t, " ")
		if out, err := exec.Command("nft", "delete", "table", fam, name).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("nft delete table %s: %v: %s", t, err, out))
		}
	}
	return errs
}

// nftTables lists the nftables tables ("family name"); none when nft is
// not installed (the iptables checks cover iptables-legacy hosts).
func nftTables() (map[string]bool, error) {
	tables := map[string]bool{}
	if _, err := exec.LookPath("nft"); err != nil {
		return tables, nil
	}
	out, err := exec.Command("nft", "list", "tables").Output()
	if err != nil {
		return nil, fmt.Errorf("nft list tables: %w", err)
	}
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) == 3 && f[0] == "table" {
			tables[f[1]+" "+f[2]] = true
		}
	}
	return tables, nil
}

// iptablesChains lists a table's user-defined chains (none when the
// command is missing or the table does not exist).
func iptablesChains(cmd, table string) []string {
	out, err := exec.Command(cmd, "-w", "-t", table, "-S").Output()
	if err != nil {
		return nil
	}
	var chains []string
	for _, l := range strings.Split(string(out), "\n") {
		if c, ok := strings.CutPrefix(l, "-N "); ok {
			chains = append(chains, strings.TrimSpace(c))
		}
	}
	return chains
}

// iptablesRulesJumpingTo returns, as -D arguments, the rules of a table
// that jump to chain.
func iptablesRulesJumpingTo(cmd, table, chain string) [][]string {
	out, err := exec.Command(cmd, "-w", "-t", table, "-S").Output()
	if err != nil {
		return nil
	}
	var rules [][]string
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 || f[0] != "-A" || !slices.Contains(f, chain) {
			continue
		}
		if i := slices.Index(f, "-j"); i >= 0 && i+1 < len(f) && f[i+1] == chain {
			rules = append(rules, unquote(f[1:]))
		}
	}
	return rules
}

// unquote drops the quotes iptables -S puts around comments. Good enough
// for the kubelet's rules, which quote only single-word-free comments.
func unquote(f []string) []string {
	var out []string
	for i := 0; i < len(f); i++ {
		if strings.HasPrefix(f[i], `"`) {
			s := f[i]
			for !strings.HasSuffix(s, `"`) || len(s) == 1 {
				i++
				if i >= len(f) {
					break
				}
				s += " " + f[i]
			}
			out = append(out, strings.Trim(s, `"`))
			continue
		}
		out = append(out, f[i])
	}
	return out
}

// mountPoints lists the mount points of this mount namespace.
func mountPoints() (map[string]bool, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 {
			m[unescapeMount(fields[4])] = true
		}
	}
	return m, sc.Err()
}

// unescapeMount decodes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v int
			if _, err := fmt.Sscanf(s[i+1:i+4], "%o", &v); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// removeCgroups removes the cgroup tree root (e.g. /kontinuous-testenv-x)
// from every hierarchy under /sys/fs/cgroup, deepest first. Its processes
// must be gone.
func removeCgroups(root string) []error {
	var errs []error
	hierarchies, _ := filepath.Glob("/sys/fs/cgroup/*")
	hierarchies = append(hierarchies, "/sys/fs/cgroup")
	for _, h := range hierarchies {
		top := filepath.Join(h, root)
		if _, err := os.Stat(top); err != nil {
			continue
		}
		var dirs []string
		_ = filepath.WalkDir(top, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := syscall.Rmdir(dirs[i]); err != nil && !errors.Is(err, syscall.ENOENT) {
				errs = append(errs, fmt.Errorf("rmdir %s: %w", dirs[i], err))
			}
		}
	}
	return errs
}
