package etcdstore

import (
	"context"
	"errors"
	"math"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kontinuous/kontinuous/pipeline"
)

// revocationMargin keeps a revocation past its token's expiry, covering
// the clock leeway token verification allows.
const revocationMargin = 2 * time.Minute

// leaseTTL is the lease length, in whole seconds (at least 1), that lasts
// until t.
func leaseTTL(t time.Time) int64 {
	return max(1, int64(math.Ceil(time.Until(t).Seconds())))
}

// UseOnce records id until expires, with a lease so etcd forgets it then.
// It returns an error wrapping pipeline.ErrConflict if id is recorded
// already.
func (s *Store) UseOnce(ctx context.Context, id string, expires time.Time) error {
	if id == "" {
		return s.wrap(pipeline.Invalid("id", "must not be empty"), "use once")
	}
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	lease, err := s.cli.Grant(ctx, leaseTTL(expires))
	if err != nil {
		return s.wrap(err, "use once")
	}
	key := s.onceKey(id)
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, "", clientv3.WithLease(lease.ID))).
		Commit()
	if err == nil && resp.Succeeded {
		return nil
	}
	// The lease is unused: release it. If that fails it expires by itself.
	if _, rerr := s.cli.Revoke(ctx, lease.ID); rerr != nil {
		s.log.Debug("etcdstore: release unused lease", "err", rerr)
	}
	if err != nil {
		return s.wrap(err, "use once")
	}
	return s.wrap(pipeline.ErrConflict, "use once: already used")
}

// Revoke records jti as revoked until expires (plus the verification
// leeway). The local set is updated first, so this instance refuses the
// token at once even if the write to etcd fails; other instances learn it
// through their watch.
func (s *Store) Revoke(ctx context.Context, jti string, expires time.Time) error {
	if jti == "" {
		return s.wrap(pipeline.Invalid("jti", "must not be empty"), "revoke")
	}
	until := expires.Add(revocationMargin)
	if !time.Now().Before(until) {
		return nil // the token cannot be used any more anyway
	}
	s.addRevoked(jti, until)
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	lease, err := s.cli.Grant(ctx, leaseTTL(until))
	if err != nil {
		return s.wrap(err, "revoke")
	}
	if _, err := s.cli.Put(ctx, s.revokedPrefix()+jti, strconv.FormatInt(until.UnixNano(), 10), clientv3.WithLease(lease.ID)); err != nil {
		return s.wrap(err, "revoke")
	}
	return nil
}

// Revoked reports whether jti is revoked, from memory only: the set is
// loaded by Start and kept current by a watch.
func (s *Store) Revoked(jti string) bool {
	s.revMu.RLock()
	until, ok := s.revoked[jti]
	s.revMu.RUnlock()
	return ok && time.Now().Before(until)
}

func (s *Store) addRevoked(jti string, until time.Time) {
	s.revMu.Lock()
	defer s.revMu.Unlock()
	if cur, ok := s.revoked[jti]; !ok || until.After(cur) {
		s.revoked[jti] = until
	}
}

func (s *Store) pruneRevoked() {
	now := time.Now()
	s.revMu.Lock()
	defer s.revMu.Unlock()
	for jti, until := range s.revoked {
		if !now.Before(until) {
			delete(s.revoked, jti)
		}
	}
}

// Start loads the revoked token ids and watches for changes until Close.
// It fails (ErrUnavailable) if etcd cannot be read; calling it again is a
// no-op.
func (s *Store) Start(ctx context.Context) error {
	s.watchMu.Lock()
	defer s.watchMu.Unlock()
	if s.watchCancel != nil {
		return nil
	}
	rev, err := s.loadRevoked(ctx)
	if err != nil {
		return err
	}
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.watchCancel, s.watchDone = cancel, make(chan struct{})
	go s.watchRevoked(wctx, rev+1, s.watchDone)
	return nil
}

// Close stops the revocation watch. The etcd client stays open.
func (s *Store) Close() {
	s.watchMu.Lock()
	cancel, done := s.watchCancel, s.watchDone
	s.watchMu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

// loadRevoked merges the stored revocations into memory and returns the
// revision read.
func (s *Store) loadRevoked(ctx context.Context) (int64, error) {
	ctx, cancel := s.opCtx(ctx)
	defer cancel()
	resp, err := s.cli.Get(ctx, s.revokedPrefix(), clientv3.WithPrefix())
	if err != nil {
		return 0, s.wrap(err, "load revocations")
	}
	for _, kv := range resp.Kvs {
		s.applyRevokedPut(kv)
	}
	return resp.Header.Revision, nil
}

func (s *Store) applyRevokedPut(kv *mvccpb.KeyValue) {
	jti := strings.TrimPrefix(string(kv.Key), s.revokedPrefix())
	ns, err := strconv.ParseInt(string(kv.Value), 10, 64)
	if err != nil {
		// Unreadable expiry: keep it revoked for as long as any token lives.
		ns = time.Now().Add(30 * 24 * time.Hour).UnixNano()
	}
	s.addRevoked(jti, time.Unix(0, ns))
}

// watchRevoked keeps the revoked set current from rev on. When the watch
// breaks (compaction, lost leader) it reloads and watches again; entries
// only leave the set on a DELETE event (lease expiry) or by their expiry.
func (s *Store) watchRevoked(ctx context.Context, rev int64, done chan struct{}) {
	defer close(done)
	prune := time.NewTicker(time.Minute)
	defer prune.Stop()
	for {
		err := s.followRevoked(ctx, &rev, prune.C)
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("etcdstore: revocation watch restarted", "err", err)
		for {
			if sleepCtx(ctx, watchRetryDelay) != nil {
				return
			}
			r, err := s.loadRevoked(ctx)
			if err == nil {
				rev = r + 1
				break
			}
			if ctx.Err() != nil {
				return
			}
		}
	}
}

// followRevoked applies watch events until the watch breaks or ctx ends.
func (s *Store) followRevoked(ctx context.Context, rev *int64, prune <-chan time.Time) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := s.cli.Watch(wctx, s.revokedPrefix(), clientv3.WithPrefix(), clientv3.WithRev(*rev))
	for {
		select {
		case <-prune:
			s.pruneRevoked()
		case wr, ok := <-wch:
			if !ok {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				return errors.New("watch closed")
			}
			if err := wr.Err(); err != nil {
				return err
			}
			for _, ev := range wr.Events {
				switch ev.Type {
				case mvccpb.PUT:
					s.applyRevokedPut(ev.Kv)
				case mvccpb.DELETE:
					s.revMu.Lock()
					delete(s.revoked, strings.TrimPrefix(string(ev.Kv.Key), s.revokedPrefix()))
					s.revMu.Unlock()
				}
			}
			*rev = wr.Header.Revision + 1
		}
	}
}
