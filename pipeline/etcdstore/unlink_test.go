package etcdstore_test

import (
	"bytes"
	"context"
	"sync"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/etcdstore"
)

// hookedKV runs beforeUnlinkCommit (once) just before the first guarded
// transaction that changes a link commits: between UnlinkUser's read and
// its write.
type hookedKV struct {
	clientv3.KV
	once               sync.Once
	beforeUnlinkCommit func()
}

func (kv *hookedKV) Txn(ctx context.Context) clientv3.Txn {
	return &hookedTxn{Txn: kv.KV.Txn(ctx), kv: kv}
}

type hookedTxn struct {
	clientv3.Txn
	kv            *hookedKV
	guarded, link bool
}

func (t *hookedTxn) If(cs ...clientv3.Cmp) clientv3.Txn {
	t.guarded = len(cs) > 0
	t.Txn = t.Txn.If(cs...)
	return t
}

func (t *hookedTxn) Then(ops ...clientv3.Op) clientv3.Txn {
	for _, op := range ops {
		t.link = t.link || bytes.Contains(op.KeyBytes(), []byte("/links/"))
	}
	t.Txn = t.Txn.Then(ops...)
	return t
}

func (t *hookedTxn) Commit() (*clientv3.TxnResponse, error) {
	if t.guarded && t.link && t.kv.beforeUnlinkCommit != nil {
		t.kv.once.Do(t.kv.beforeUnlinkCommit)
	}
	return t.Txn.Commit()
}

// UnlinkUser decides from the disconnected account's links whether to
// delete its user; a link of that account's added or removed (by another
// server) between its read and its write makes it read again, so the
// user is kept while a link to it stays and deleted once none does.
func TestUnlinkUserRereadsLinksChangedMeanwhile(t *testing.T) {
	const gh, bb, dc = "github|1", "bitbucket|{0b3c}", "bitbucket-dc|3"
	for _, tc := range []struct {
		name string
		// linked: dc is linked to bb before the unlink; meanwhile, run
		// while the unlink of gh's link is between its read and its write.
		linked      bool
		meanwhile   func(*testing.T, pipeline.LinkStore) error
		wantDeleted bool
	}{
		{"a link added", false, func(t *testing.T, other pipeline.LinkStore) error {
			return other.LinkUsers(t.Context(), dc, bb)
		}, false},
		{"the last other link removed", true, func(t *testing.T, other pipeline.LinkStore) error {
			deleted, err := other.UnlinkUser(t.Context(), dc, "bitbucket", bb)
			if err == nil && deleted {
				t.Errorf("the other unlink deleted %s, still linked to %s", bb, gh)
			}
			return err
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			cli, err := etcdstore.Connect(ctx, etcdstore.ClientConfig{Endpoints: sharedEndpoints(t)})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = cli.Close() }) // closing a test client: nothing to do on error
			kv := &hookedKV{KV: cli.KV}
			cli.KV = kv
			opts := newOpts(prefixOf(t))
			s := newPlainWith(t, cli, opts)
			other := newPlainWith(t, sharedClient(t), opts) // another server
			for _, id := range []string{gh, bb, dc} {
				if err := s.PutUser(ctx, pipeline.User{ID: id, Login: "alice", Token: pipeline.ForgeToken{AccessToken: "at-" + id}}); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.LinkUsers(ctx, gh, bb); err != nil {
				t.Fatal(err)
			}
			if tc.linked {
				if err := s.LinkUsers(ctx, dc, bb); err != nil {
					t.Fatal(err)
				}
			}
			ran := false
			kv.beforeUnlinkCommit = func() {
				ran = true
				if err := tc.meanwhile(t, other); err != nil {
					t.Errorf("meanwhile: %v", err)
				}
			}
			deleted, err := s.UnlinkUser(ctx, gh, "bitbucket", bb)
			if err != nil {
				t.Fatal(err)
			}
			if !ran {
				t.Fatal("the unlink did not commit a guarded transaction")
			}
			links, err := s.LinkedUsers(ctx, bb)
			if err != nil {
				t.Fatal(err)
			}
			_, uerr := s.GetUser(ctx, bb)
			if deleted != tc.wantDeleted || (uerr == nil) == deleted {
				t.Errorf("deleted %v (user: %v) with %s's links now %v; want deleted %v", deleted, uerr, bb, links, tc.wantDeleted)
			}
			if len(links) > 0 && uerr != nil {
				t.Errorf("%s's user is deleted, but links to it stay: %v", bb, links)
			}
		})
	}
}
