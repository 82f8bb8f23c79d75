package etcdstore

import (
	"context"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/kontinuous/kontinuous/pipeline"
)

var (
	_ pipeline.LinkStore  = (*Store)(nil)
	_ pipeline.UserLocker = (*Store)(nil)
)

// linkKey holds the user of forge linked to user id.
func (s *Store) linkKey(id, forge string) string {
	return s.opts.Prefix + "links/" + id + "/" + forge
}

// LinkUsers links a and b both ways in one transaction (links/{a}/{b's
// forge} = b and links/{b}/{a's forge} = a), guarded by the revisions it
// read: a concurrent link of either side makes it read again.
func (s *Store) LinkUsers(ctx context.Context, a, b string) error {
	fa, fb := pipeline.ForgeName(a), pipeline.ForgeName(b)
	for _, id := range []string{a, b} {
		if err := checkSegment("user_id", id); err != nil {
			return s.wrap(err, "link users")
		}
	}
	if fa == "" || fb == "" || fa == fb {
		return s.wrap(pipeline.Invalid("user_id", "a link joins users of two different forges"), "link users")
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	ka, kb := s.linkKey(a, fb), s.linkKey(b, fa)
	for range 10 {
		resp, err := s.cli.Txn(ctx).Then(clientv3.OpGet(ka), clientv3.OpGet(kb)).Commit()
		if err != nil {
			return s.wrap(err, "link %s and %s", a, b)
		}
		var revA, revB int64
		if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
			if string(kvs[0].Value) != b {
				return s.wrap(pipeline.Errorf(pipeline.ErrConflict, "%s is already linked to another %s account", a, fb), "link users")
			}
			revA = kvs[0].ModRevision
		}
		if kvs := resp.Responses[1].GetResponseRange().Kvs; len(kvs) > 0 {
			if string(kvs[0].Value) != a {
				return s.wrap(pipeline.Errorf(pipeline.ErrConflict, "this %s account is already linked to another Kontinuous user", fb), "link users")
			}
			revB = kvs[0].ModRevision
		}
		tr, err := s.cli.Txn(ctx).If(
			clientv3.Compare(clientv3.ModRevision(ka), "=", revA),
			clientv3.Compare(clientv3.ModRevision(kb), "=", revB),
		).Then(clientv3.OpPut(ka, b), clientv3.OpPut(kb, a)).Commit()
		if err != nil {
			return s.wrap(err, "link %s and %s", a, b)
		}
		if tr.Succeeded {
			return nil
		}
	}
	return s.wrap(pipeline.Errorf(pipeline.ErrConflict, "linking %s and %s kept conflicting; try again", a, b), "link users")
}

// UnlinkUser removes links/{id}/{forge} (to other) and the link back,
// and deletes other's user (its sealed tokens) when other has no link
// left, in one transaction. It reads the link and every link of other's
// (links/{other}/…) at one revision and is guarded by them: a link of
// other's added, changed or removed meanwhile (or id's relinked) makes it
// read again, so other's user is never deleted while a link to it stays
// and never kept once none does.
func (s *Store) UnlinkUser(ctx context.Context, id, forge, other string) (bool, error) {
	if err := checkSegment("user_id", id); err != nil {
		return false, s.wrap(err, "unlink user")
	}
	if err := checkSegment("forge", forge); err != nil {
		return false, s.wrap(err, "unlink user")
	}
	if err := checkSegment("user_id", other); err != nil {
		return false, s.wrap(err, "unlink user")
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	ka, kb := s.linkKey(id, forge), s.linkKey(other, pipeline.ForgeName(id))
	otherLinks := s.opts.Prefix + "links/" + other + "/"
	for range 10 {
		resp, err := s.cli.Txn(ctx).Then(clientv3.OpGet(ka), clientv3.OpGet(otherLinks, clientv3.WithPrefix())).Commit()
		if err != nil {
			return false, s.wrap(err, "unlink %s from %s", id, forge)
		}
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 0 {
			return false, s.wrap(pipeline.ErrNotFound, "unlink %s from %s", id, forge)
		}
		if string(kvs[0].Value) != other {
			return false, s.wrap(pipeline.Errorf(pipeline.ErrConflict, "the %s account linked to %s is no longer %s", forge, id, other), "unlink user")
		}
		guards := []clientv3.Cmp{
			clientv3.Compare(clientv3.ModRevision(ka), "=", kvs[0].ModRevision),
			// No link of other's added or changed since the read…
			clientv3.Compare(clientv3.ModRevision(otherLinks).WithPrefix(), "<", resp.Header.Revision+1),
		}
		ops := []clientv3.Op{clientv3.OpDelete(ka)}
		left := 0
		for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
			// …nor removed.
			guards = append(guards, clientv3.Compare(clientv3.ModRevision(string(kv.Key)), "=", kv.ModRevision))
			if string(kv.Key) == kb && string(kv.Value) == id {
				ops = append(ops, clientv3.OpDelete(kb)) // the link back, only when it is to id
				continue
			}
			left++
		}
		if left == 0 {
			ops = append(ops, clientv3.OpDelete(s.userKey(other)))
		}
		tr, err := s.cli.Txn(ctx).If(guards...).Then(ops...).Commit()
		if err != nil {
			return false, s.wrap(err, "unlink %s from %s", id, forge)
		}
		if tr.Succeeded {
			return left == 0, nil
		}
	}
	return false, s.wrap(pipeline.Errorf(pipeline.ErrConflict, "unlinking %s from %s kept conflicting; try again", id, forge), "unlink user")
}

// LinkedUsers returns the users linked to id, by forge.
func (s *Store) LinkedUsers(ctx context.Context, id string) (map[string]string, error) {
	if err := checkSegment("user_id", id); err != nil {
		return nil, s.wrap(err, "linked users")
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	prefix := s.opts.Prefix + "links/" + id + "/"
	resp, err := s.cli.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, s.wrap(err, "linked users of %s", id)
	}
	out := make(map[string]string, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		out[strings.TrimPrefix(string(kv.Key), prefix)] = string(kv.Value)
	}
	return out, nil
}

// lockTTL is the lease of a user lock: a server that dies holding it
// frees it after this long.
const lockTTL = 10 * time.Second

// LockUser takes the cluster-wide lock of user id
// (go.etcd.io/etcd/client/v3/concurrency: a Mutex on locks/users/{id}
// held by a session whose lease lives lockTTL unless kept alive). Every
// server sharing the etcd waits for it.
func (s *Store) LockUser(ctx context.Context, id string) (func(), error) {
	if err := checkSegment("user_id", id); err != nil {
		return nil, s.wrap(err, "lock user")
	}
	sess, err := concurrency.NewSession(s.cli, concurrency.WithTTL(int(lockTTL/time.Second)), concurrency.WithContext(context.WithoutCancel(ctx)))
	if err != nil {
		return nil, s.wrap(err, "lock user %s", id)
	}
	m := concurrency.NewMutex(sess, s.opts.Prefix+"locks/users/"+id)
	lctx, cancel := ctx, context.CancelFunc(func() {})
	if _, ok := ctx.Deadline(); !ok {
		// Waiting covers the holder's whole refresh (a forge round trip).
		lctx, cancel = context.WithTimeout(ctx, 30*time.Second)
	}
	defer cancel()
	if err := m.Lock(lctx); err != nil {
		_ = sess.Close()
		return nil, s.wrap(fmt.Errorf("wait for the lock: %w", err), "lock user %s", id)
	}
	return func() {
		uctx, cancel := context.WithTimeout(context.Background(), s.opts.OpTimeout)
		defer cancel()
		_ = m.Unlock(uctx)
		_ = sess.Close() // revokes the lease: the lock is free even if Unlock failed
	}, nil
}
