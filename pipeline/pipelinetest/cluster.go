package pipelinetest

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/kontinuous/kontinuous/pipeline/etcdstore"
)

// ClusterSize is the number of members StartEtcdCluster starts.
const ClusterSize = 3

// EtcdCluster is a 3-member etcd cluster running in the test process, each
// member an embedded etcd with its own data dir under t.TempDir() and its
// own loopback client and peer ports. Members can be stopped and started
// again one by one (same dir, same ports) to see how code copes with a
// lost member, a lost quorum and their return. Raft runs over real TCP
// between the members, as in a deployed cluster.
type EtcdCluster struct {
	t       testing.TB
	members []*clusterMember
	initial string // name=peerURL,... of every member
}

type clusterMember struct {
	name      string
	dir       string
	clientURL url.URL
	peerURL   url.URL

	mu sync.Mutex
	e  *embed.Etcd
}

// StartEtcdCluster starts a 3-member cluster (fsync off) and waits until it
// has a leader. Every member is stopped when the test ends.
func StartEtcdCluster(t testing.TB) *EtcdCluster {
	t.Helper()
	root := t.TempDir()
	c := &EtcdCluster{t: t}
	ports, err := freePorts(2 * ClusterSize)
	if err != nil {
		t.Fatalf("etcd cluster: %v", err)
	}
	var initial []string
	for i := range ClusterSize {
		m := &clusterMember{
			name:      fmt.Sprintf("m%d", i+1),
			dir:       filepath.Join(root, fmt.Sprintf("m%d", i+1)),
			clientURL: url.URL{Scheme: "http", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[2*i]))},
			peerURL:   url.URL{Scheme: "http", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[2*i+1]))},
		}
		c.members = append(c.members, m)
		initial = append(initial, m.name+"="+m.peerURL.String())
	}
	c.initial = strings.Join(initial, ",")
	t.Cleanup(c.StopAll)
	// A member is ready only once a quorum has formed: start them together.
	errs := make(chan error, ClusterSize)
	for i := range c.members {
		go func() { errs <- c.start(i, true) }()
	}
	for range c.members {
		if err := <-errs; err != nil {
			t.Fatalf("etcd cluster: %v", err)
		}
	}
	return c
}

func (c *EtcdCluster) config(m *clusterMember) *embed.Config {
	ec := embed.NewConfig()
	ec.Name = m.name
	ec.Dir = m.dir
	ec.ListenClientUrls = []url.URL{m.clientURL}
	ec.AdvertiseClientUrls = []url.URL{m.clientURL}
	ec.ListenPeerUrls = []url.URL{m.peerURL}
	ec.AdvertisePeerUrls = []url.URL{m.peerURL}
	ec.InitialCluster = c.initial
	ec.InitialClusterToken = "kontinuous-test-cluster"
	ec.ClusterState = embed.ClusterStateFlagNew // ignored once the dir has data
	ec.UnsafeNoFsync = true
	ec.EnableGRPCGateway = false
	ec.LogLevel = "error"
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	// Loopback peers: keep raft's defaults (100 ms heartbeat, 1 s
	// election), which a loaded 2-core machine still meets.
	return ec
}

// start starts member i; waitReady waits for it to join a quorum.
func (c *EtcdCluster) start(i int, waitReady bool) error {
	m := c.members[i]
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.e != nil {
		return nil
	}
	var e *embed.Etcd
	// The ports are outside the ephemeral range (see freePorts); should
	// another listener hold one for a moment, retry the same ports: the
	// other members and the clients know these.
	err := retryInUse(60*time.Second, func() error {
		var err error
		e, err = embed.StartEtcd(c.config(m))
		return err
	})
	if err != nil {
		return fmt.Errorf("start member %s: %w", m.name, err)
	}
	m.e = e
	if !waitReady {
		return nil
	}
	select {
	case <-e.Server.ReadyNotify():
		return nil
	case err := <-e.Err():
		return fmt.Errorf("member %s: %w", m.name, err)
	case <-time.After(60 * time.Second):
		return fmt.Errorf("member %s not ready within 60s", m.name)
	}
}

// Endpoints returns every member's client URL (stable across restarts).
func (c *EtcdCluster) Endpoints() []string {
	out := make([]string, len(c.members))
	for i, m := range c.members {
		out[i] = m.clientURL.String()
	}
	return out
}

// Stop stops member i (0-based) cleanly; its data and ports are kept for
// Start. Stopping an already stopped member does nothing.
func (c *EtcdCluster) Stop(i int) {
	m := c.members[i]
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.e != nil {
		m.e.Close()
		m.e = nil
	}
}

// Start starts member i again on its dir and ports. It waits until the
// member serves when a quorum is up (it returns at once otherwise: a lone
// member cannot be ready; use WaitReady after starting enough of them).
func (c *EtcdCluster) Start(i int) {
	c.t.Helper()
	if err := c.start(i, false); err != nil {
		c.t.Fatalf("etcd cluster: %v", err)
	}
}

// StopAll stops every member.
func (c *EtcdCluster) StopAll() {
	for i := range c.members {
		c.Stop(i)
	}
}

// StartAll starts every stopped member and waits until the cluster
// serves.
func (c *EtcdCluster) StartAll() {
	c.t.Helper()
	for i := range c.members {
		c.Start(i)
	}
	c.WaitReady(60 * time.Second)
}

// Running reports whether member i runs.
func (c *EtcdCluster) Running(i int) bool {
	m := c.members[i]
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.e != nil
}

// Leader returns the index of the member that leads, or -1 if no running
// member knows of a leader.
func (c *EtcdCluster) Leader() int {
	for _, m := range c.members {
		m.mu.Lock()
		e := m.e
		m.mu.Unlock()
		if e == nil {
			continue
		}
		lead := uint64(e.Server.Leader())
		if lead == 0 {
			continue
		}
		for j, o := range c.members {
			o.mu.Lock()
			oe := o.e
			o.mu.Unlock()
			if oe != nil && uint64(oe.Server.MemberID()) == lead {
				return j
			}
		}
	}
	return -1
}

// WaitReady waits until every running member is ready and a linearizable
// read through the running members' endpoints succeeds.
func (c *EtcdCluster) WaitReady(within time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(within)
	var eps []string
	for i, m := range c.members {
		m.mu.Lock()
		e := m.e
		m.mu.Unlock()
		if e == nil {
			continue
		}
		eps = append(eps, m.clientURL.String())
		select {
		case <-e.Server.ReadyNotify():
		case <-time.After(time.Until(deadline)):
			c.t.Fatalf("etcd cluster: member %d not ready within %s", i, within)
		}
	}
	if len(eps) == 0 {
		c.t.Fatal("etcd cluster: no member runs")
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	cli, err := etcdstore.Connect(ctx, etcdstore.ClientConfig{Endpoints: eps, DialTimeout: time.Until(deadline)})
	if err != nil {
		c.t.Fatalf("etcd cluster: connect: %v", err)
	}
	defer cli.Close()
	for {
		rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := cli.Get(rctx, "ready-probe")
		rcancel()
		if err == nil {
			return
		}
		if ctx.Err() != nil {
			c.t.Fatalf("etcd cluster: no linearizable read within %s: %v", within, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Client connects a new client to every member, closed when the test
// ends.
func (c *EtcdCluster) Client() *clientv3.Client {
	c.t.Helper()
	cli, err := etcdstore.Connect(context.Background(), etcdstore.ClientConfig{Endpoints: c.Endpoints(), DialTimeout: 10 * time.Second})
	if err != nil {
		c.t.Fatalf("etcd cluster: connect: %v", err)
	}
	c.t.Cleanup(func() {
		// Closing a client whose members are gone can report the lost
		// connection; nothing to do about it at the end of a test.
		_ = cli.Close()
	})
	return cli
}
