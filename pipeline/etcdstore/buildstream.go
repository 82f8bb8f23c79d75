package etcdstore

import (
	"context"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kontinuous/kontinuous/pipeline"
)

var _ pipeline.BuildFollower = (*Store)(nil)

// buildPollInterval is how often a build stream reads when no watch
// fan-out feeds it (plain store, or the cache's watch restarting).
const buildPollInterval = time.Second

// FollowBuilds streams a pipeline's builds (number 0) or one build,
// reading them once a second; Cached.FollowBuilds follows its cache's
// watch instead.
func (s *Store) FollowBuilds(ctx context.Context, owner, repo string, number, limit int, fn func(pipeline.BuildEvent) error) error {
	return s.followBuilds(ctx, nil, owner, repo, number, limit, fn)
}

// followBuilds is FollowBuilds fed by h, the fan-out of a cache's one
// prefix watch (see hub.go): a stream then costs one etcd read when it
// starts (and again only if it falls behind or the watch breaks), never a
// watch of its own. Without h, or while its watch is not running, it
// reads once a second.
func (s *Store) followBuilds(ctx context.Context, h *hub, owner, repo string, number, limit int, fn func(pipeline.BuildEvent) error) error {
	pk, err := pipelineKey(owner, repo)
	if err == nil && number != 0 {
		err = checkNumber(number)
	}
	if err != nil {
		return s.wrap(err, "follow builds")
	}
	if limit <= 0 {
		limit = defaultPage
	}
	prefix := s.buildsPrefix(pk)
	if number > 0 {
		prefix = s.buildKey(pk, number)
	}
	sent := map[string]int64{} // key → ModRevision sent
	poll := time.NewTicker(buildPollInterval)
	defer poll.Stop()
	first := true
	for {
		sub, _ := h.subscribe(prefix) // nil: poll
		rev, err := s.followSnapshot(ctx, pk, prefix, number, limit, sent, first, fn)
		first = false
		if err != nil {
			if sub != nil {
				sub.close()
			}
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		err = s.followEvents(ctx, sub, poll.C, rev, number, sent, fn)
		if sub != nil {
			sub.close()
		}
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// followSnapshot sends the current builds not sent yet (or changed since)
// and returns the revision of the read.
func (s *Store) followSnapshot(ctx context.Context, pk, prefix string, number, limit int, sent map[string]int64, first bool, fn func(pipeline.BuildEvent) error) (int64, error) {
	gctx, cancel := s.opCtx(ctx)
	defer cancel()
	var kvs []*mvccpb.KeyValue
	var rev int64
	if number > 0 {
		resp, err := s.cli.Get(gctx, prefix)
		if err != nil {
			return 0, s.wrap(err, "follow build %s#%d", pk, number)
		}
		if len(resp.Kvs) == 0 {
			if first {
				return 0, s.wrap(pipeline.ErrNotFound, "follow build %s#%d", pk, number)
			}
			if _, ok := sent[prefix]; ok {
				delete(sent, prefix)
				if err := fn(pipeline.BuildEvent{Build: pipeline.Build{Number: number}, Deleted: true}); err != nil {
					return 0, err
				}
			}
		}
		kvs, rev = resp.Kvs, resp.Header.Revision
	} else {
		resp, err := s.cli.Txn(gctx).Then(
			clientv3.OpGet(s.pipelineKeyOf(pk), clientv3.WithCountOnly()),
			clientv3.OpGet(prefix, clientv3.WithPrefix(), clientv3.WithLimit(int64(limit))),
		).Commit()
		if err != nil {
			return 0, s.wrap(err, "follow builds of %s", pk)
		}
		if resp.Responses[0].GetResponseRange().Count == 0 && first {
			return 0, s.wrap(pipeline.ErrNotFound, "follow builds of %s: no such pipeline", pk)
		}
		kvs, rev = resp.Responses[1].GetResponseRange().Kvs, resp.Header.Revision
	}
	s.saw(rev, kvs)
	for _, kv := range kvs {
		if err := s.sendBuild(kv, number, sent, fn); err != nil {
			return 0, err
		}
	}
	return rev, nil
}

// sendBuild hands one stored build to fn unless that version was sent.
func (s *Store) sendBuild(kv *mvccpb.KeyValue, number int, sent map[string]int64, fn func(pipeline.BuildEvent) error) error {
	key := string(kv.Key)
	if r, ok := sent[key]; ok && r >= kv.ModRevision {
		return nil
	}
	var b pipeline.Build
	var err error
	if number > 0 {
		b, err = s.builds.decode(kv)
	} else {
		b, err = s.builds.decodeListed(kv)
	}
	if err != nil {
		return s.wrap(err, "follow builds: %s", key)
	}
	b.Revision = kv.ModRevision
	sent[key] = kv.ModRevision
	return fn(pipeline.BuildEvent{Build: b})
}

// followEvents applies the watch's events after rev until the
// subscription is lost (nil: read again) or fn fails. Without a
// subscription it returns at the next poll tick.
func (s *Store) followEvents(ctx context.Context, sub *subscription, poll <-chan time.Time, rev int64, number int, sent map[string]int64, fn func(pipeline.BuildEvent) error) error {
	if sub == nil {
		select {
		case <-ctx.Done():
		case <-poll:
		}
		return nil
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-sub.lost:
			return nil
		case ev := <-sub.ch:
			if ev.kv.ModRevision <= rev {
				continue
			}
			key := string(ev.kv.Key)
			if !ev.del {
				if err := s.sendBuild(ev.kv, number, sent, fn); err != nil {
					return err
				}
				continue
			}
			delete(sent, key)
			n, ok := numberOfKey(key)
			if !ok {
				continue
			}
			if err := fn(pipeline.BuildEvent{Build: pipeline.Build{Number: n}, Deleted: true}); err != nil {
				return err
			}
		}
	}
}

// numberOfKey is the build number of a build key.
func numberOfKey(key string) (int, bool) {
	inv, err := strconv.Atoi(key[strings.LastIndexByte(key, '/')+1:])
	if err != nil {
		return 0, false
	}
	return maxBuildNumber + 1 - inv, true
}
