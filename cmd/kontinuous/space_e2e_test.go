package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kontinuous/kontinuous/pipeline/etcdstore"
)

// TestEtcdOutOfSpaceAnswers503WithTheCauseAndRecovers: an etcd with a
// tiny quota is filled until NOSPACE; /readyz and writes answer 503
// naming the cause, reads go on, /metrics shows the alarm; after the
// documented recovery (compact, defrag, disarm) the server is ready again.
func TestEtcdOutOfSpaceAnswers503WithTheCauseAndRecovers(t *testing.T) {
	const quota = 2 << 20
	e, err := etcdstore.StartEmbedded(t.Context(), etcdstore.EmbeddedConfig{Dir: t.TempDir(), UnsafeNoFsync: true, QuotaBackendBytes: quota})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	cli, err := etcdstore.Connect(t.Context(), etcdstore.ClientConfig{Endpoints: e.Endpoints()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() }) // teardown
	gh := newGitHub(t)
	app := startApp(t, gh, t.TempDir(), "--etcd-endpoints", strings.Join(e.Endpoints(), ","), "--etcd-quota-bytes", "2MiB")
	rc := newRetryClient()
	base := app.URL
	createAppPipeline(t, rc, base)
	alice := tbToken(t, "alice", 1001, "tok-alice")
	status, body := rc.do(http.MethodGet, base+"/readyz", "", nil, nil)
	if status != http.StatusOK {
		t.Fatalf("readyz before: %d %s", status, body)
	}
	// /readyz shows etcd's size against its quota, as /metrics does.
	var ready struct {
		Status string
		Etcd   *struct {
			DBSize int64    `json:"db_size"`
			Quota  int64    `json:"quota"`
			Alarms []string `json:"alarms"`
		}
	}
	if err := json.Unmarshal(body, &ready); err != nil || ready.Status != "ready" || ready.Etcd == nil ||
		ready.Etcd.Quota != quota || ready.Etcd.DBSize <= 0 || ready.Etcd.Alarms == nil || len(ready.Etcd.Alarms) != 0 {
		t.Fatalf("readyz before: %s (%v)", body, err)
	}
	// A probe asking for text/plain is answered, not refused.
	if status, body := rc.do(http.MethodGet, base+"/healthz", "", nil, map[string]string{"Accept": "text/plain"}); status != http.StatusOK {
		t.Fatalf("healthz with Accept: text/plain: %d %s", status, body)
	}
	_, metrics := rc.do(http.MethodGet, base+"/metrics", "", nil, nil)
	for _, want := range []string{"kontinuous_etcd_db_size_bytes ", "kontinuous_etcd_db_size_in_use_bytes ", fmt.Sprintf("kontinuous_etcd_quota_bytes %g", float64(quota)), "kontinuous_etcd_alarm_nospace 0", "kontinuous_store_cache_hits_total ", "kontinuous_store_cache_misses_total ", "kontinuous_store_consistent_reads_total "} {
		if !strings.Contains(string(metrics), want) {
			t.Fatalf("/metrics lacks %q:\n%s", want, metrics)
		}
	}

	v := strings.Repeat("x", 64<<10)
	for i := 0; ; i++ {
		if i == 10000 {
			t.Fatal("etcd never ran out of space")
		}
		if _, err := cli.Put(t.Context(), fmt.Sprintf("/fill/%05d", i), v); err != nil {
			if !strings.Contains(err.Error(), "database space exceeded") {
				t.Fatal(err)
			}
			break
		}
	}
	status, body = rc.do(http.MethodGet, base+"/readyz", "", nil, nil)
	if status != http.StatusServiceUnavailable || !strings.Contains(string(body), "NOSPACE") {
		t.Fatalf("readyz under NOSPACE: %d %s", status, body)
	}
	// A write: a secret set.
	status, body = rc.do(http.MethodPut, base+"/api/v1/pipelines/acme/app/secrets/creds", alice, []byte(`{"data":{"A":"b"}}`), nil)
	if status != http.StatusServiceUnavailable || !strings.Contains(string(body), "out of space") {
		t.Fatalf("write under NOSPACE: %d %s", status, body)
	}
	if status, body := rc.do(http.MethodGet, base+"/api/v1/pipelines/acme/app", alice, nil, nil); status != http.StatusOK {
		t.Fatalf("read under NOSPACE: %d %s", status, body)
	}
	_, metrics = rc.do(http.MethodGet, base+"/metrics", "", nil, nil)
	if !strings.Contains(string(metrics), "kontinuous_etcd_alarm_nospace 1") {
		t.Fatalf("/metrics does not show the alarm:\n%s", metrics)
	}

	// Recovery as docs/kubernetes says: free, compact, defrag, disarm.
	del, err := cli.Delete(t.Context(), "/fill/", clientv3.WithPrefix())
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
	deadline := time.Now().Add(60 * time.Second)
	for {
		status, body = rc.do(http.MethodGet, base+"/readyz", "", nil, nil)
		if status == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("readyz after recovery: %d %s", status, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
