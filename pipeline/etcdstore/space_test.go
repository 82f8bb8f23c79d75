package etcdstore_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/etcdstore"
)

// tinyEtcd starts an etcd of its own whose quota is quota bytes.
func tinyEtcd(t *testing.T, quota int64) (*etcdstore.Embedded, *clientv3.Client) {
	t.Helper()
	e, err := etcdstore.StartEmbedded(t.Context(), etcdstore.EmbeddedConfig{Dir: t.TempDir(), UnsafeNoFsync: true, StartTimeout: patience, QuotaBackendBytes: quota})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	cli, err := etcdstore.Connect(t.Context(), etcdstore.ClientConfig{Endpoints: e.Endpoints()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() }) // closing at the end: nothing to do on error
	return e, cli
}

// fillUntilNoSpace writes big values until etcd refuses one for lack of
// space.
func fillUntilNoSpace(t *testing.T, cli *clientv3.Client, prefix string) {
	t.Helper()
	v := strings.Repeat("x", 64<<10)
	for i := range 10000 {
		_, err := cli.Put(t.Context(), fmt.Sprintf("%sfill/%05d", prefix, i), v)
		if err == nil {
			continue
		}
		if !strings.Contains(err.Error(), "database space exceeded") {
			t.Fatalf("fill: %v", err)
		}
		return
	}
	t.Fatal("etcd never ran out of space")
}

func TestNoSpaceAlarmFailsReadyAndWritesWithItsCauseAndRecovers(t *testing.T) {
	const quota = 2 << 20
	_, cli := tinyEtcd(t, quota)
	s := newStoreWith(t, cli, etcdstore.Options{Prefix: "/k/"})
	mustCreatePipeline(t, s, "acme", "full")
	if err := s.Ready(t.Context()); err != nil {
		t.Fatalf("Ready before: %v", err)
	}
	sp, err := s.Space(t.Context())
	if err != nil || sp.NoSpace || sp.DBSize <= 0 || sp.DBSize > quota || sp.Quota != quota {
		t.Fatalf("Space before = %+v, %v; want sizes under the quota %d, no alarm", sp, err, quota)
	}

	fillUntilNoSpace(t, cli, "/k/")

	err = s.Ready(t.Context())
	if !errors.Is(err, pipeline.ErrUnavailable) || !strings.Contains(pipeline.PublicMessage(err), "NOSPACE") {
		t.Fatalf("Ready under NOSPACE: %v (message %q); want unavailable naming NOSPACE", err, pipeline.PublicMessage(err))
	}
	sp, err = s.Space(t.Context())
	if err != nil || !sp.NoSpace || sp.DBSize < quota/2 {
		t.Fatalf("Space under NOSPACE = %+v, %v", sp, err)
	}
	// Writes fail at once, with the cause; reads go on.
	_, err = s.CreateBuild(t.Context(), "acme", "full", pipeline.Build{})
	if !errors.Is(err, pipeline.ErrUnavailable) || pipeline.PublicMessage(err) != etcdstore.NoSpaceMessage {
		t.Fatalf("write under NOSPACE: %v (message %q)", err, pipeline.PublicMessage(err))
	}
	if _, err := s.UpdatePipeline(t.Context(), "acme", "full", func(p *pipeline.Pipeline) error { p.Login = "other"; return nil }); pipeline.PublicMessage(err) != etcdstore.NoSpaceMessage {
		t.Fatalf("update under NOSPACE: %v", err)
	}
	if p, err := s.GetPipeline(t.Context(), "acme", "full"); err != nil || p.Login != "octocat" {
		t.Fatalf("read under NOSPACE: %+v, %v", p, err)
	}
	if _, err := s.ListBuilds(t.Context(), "acme", "full", 10, 0); err != nil {
		t.Fatalf("list under NOSPACE: %v", err)
	}

	// The documented recovery: free space, compact, defragment, disarm.
	del, err := cli.Delete(t.Context(), "/k/fill/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Compact(t.Context(), del.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	for _, ep := range cli.Endpoints() {
		if _, err := cli.Defragment(t.Context(), ep); err != nil {
			t.Fatal(err)
		}
	}
	alarms, err := cli.AlarmList(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range alarms.Alarms {
		if a.Alarm == pb.AlarmType_NOSPACE {
			if _, err := cli.AlarmDisarm(t.Context(), &clientv3.AlarmMember{MemberID: a.MemberID, Alarm: a.Alarm}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := s.Ready(t.Context()); err != nil {
		t.Fatalf("Ready after recovery: %v", err)
	}
	if b, err := s.CreateBuild(t.Context(), "acme", "full", pipeline.Build{}); err != nil || b.Number != 1 {
		t.Fatalf("write after recovery: %+v, %v", b, err)
	}
	sp, err = s.Space(t.Context())
	if err != nil || sp.NoSpace || sp.DBSize >= quota/2 {
		t.Fatalf("Space after recovery = %+v, %v", sp, err)
	}
}

func TestSpaceReportsEtcdDefaultQuotaWhenNoneIsSet(t *testing.T) {
	s := newStore(t)
	sp, err := s.Space(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if sp.Quota != etcdstore.DefaultQuotaBytes || sp.DBSize <= 0 || sp.DBSizeInUse <= 0 || sp.DBSizeInUse > sp.DBSize {
		t.Fatalf("Space = %+v; want the default quota and sizes", sp)
	}
}
