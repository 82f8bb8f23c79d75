// Package etcdstore is the pipeline.Store on etcd (embedded or external),
// also serving auth's OnceStore and RevocationStore.
//
// # Store and cache
//
// Store is the plain etcd store: records, optimistic writes, the group
// commit of build creation, the active-build index, retention; every read
// is a linearizable etcd read. Cached (cached.go, readcache.go, hub.go)
// decorates it with a watch-fed read cache, as the Kubernetes apiserver's
// cacher decorates its etcd3 storage: it answers GetBuild, ListBuilds and
// GetPipeline from memory, and feeds WatchBuild, FollowBuilds and log
// followers from its one watch of the prefix; everything else goes
// straight to the Store it embeds. A server runs Cached. The two meet at a
// small unexported seam, described in store.go after Ready.
//
// # Data model
//
// Every entity is one JSON document under a configurable prefix
// (default "/kontinuous/"); owner and repo are lower-cased in keys while
// the documents keep their display case:
//
//	pipelines/<owner>/<repo>             pipeline
//	counters/<owner>/<repo>              last build number allocated (decimal)
//	builds/<owner>/<repo>/<inv>          build; inv = %010d of 9999999999-number
//	active/<owner>/<repo>/<inv>          marker of a build whose status is not final
//	deliveries/<owner>/<repo>/<delivery> build number of a forge delivery (leased, 72h)
//	secrets/<owner>/<repo>/<name>        secret set
//	users/<id>                           user
//	once/<id>                            single-use value (leased until it expires)
//	revoked/<jti>                        revoked token id (leased until it expires)
//
// Build keys hold the inverted number so that etcd's natural ascending
// key order is newest first: ListBuilds and the latest-build look-ups are
// one range read whose limit etcd applies while scanning (a descending
// sort would make etcd read every build of the pipeline first).
//
// The stored documents are this package's own record types, not the
// domain's JSON (which hides server-side fields): every domain field is
// kept. Secret material (webhook secret, deploy key, forge tokens, secret
// values) is sealed with secretbox, bound to the record's key and field so
// a sealed value copied into another record does not open.
//
// Identities: a pipeline's ID is a random UUID given at creation (a
// re-created pipeline gets a new one); a build's ID is a random UUID too
// (label- and tag-safe), its Number the per-pipeline sequence. Numbers are
// allocated in the transaction that stores the build, so they are unique
// and gap-free; the counter survives DeleteBuild and DeletePipeline, so a
// number is never reused for an owner/repo, even after the pipeline is
// deleted and created again (its numbering then continues).
//
// Writes use optimistic concurrency: create is "CreateRevision == 0 then
// put", update is "ModRevision unchanged then put", retried with the value
// the failed transaction returned.
package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"

	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/secretbox"
)

// Options tune a Store. Zero values take the defaults.
type Options struct {
	// Prefix of every key (default "/kontinuous/"); it should end in "/".
	Prefix string
	// OpTimeout bounds each call whose ctx has no deadline (default 5s).
	OpTimeout time.Duration
	// MaxAttempts bounds the tries of an optimistic write under
	// contention (default 64).
	MaxAttempts int
	// DeliveryTTL is how long a forge delivery id is remembered to
	// de-duplicate redeliveries (default 72h).
	DeliveryTTL time.Duration
	// Logger receives the store's own warnings (watch restarts); nil
	// discards them.
	Logger *slog.Logger
}

// Store implements pipeline.Store, auth.OnceStore and auth.RevocationStore
// on an etcd client: every read is a linearizable etcd read. It is safe
// for concurrent use. Cached (cached.go) puts the watch-fed read cache in
// front of it.
type Store struct {
	cli  *clientv3.Client
	box  *secretbox.Box
	opts Options
	log  *slog.Logger

	deliveryLease leaseCache
	creates       createBatcher
	newest        newestHints
	builds        buildCache
	pipelines     pipelineCache

	logWriters sync.Map     // log base key → struct{}: writers open in this process
	seen       atomic.Int64 // newest revision this store committed or read (see wrote)

	revMu   sync.RWMutex
	revoked map[string]time.Time // jti → expiry

	watchMu     sync.Mutex
	watchCancel context.CancelFunc
	watchDone   chan struct{}
}

// Store satisfies pipeline.Store here; auth.OnceStore and
// auth.RevocationStore are checked in the tests, so that this package does
// not depend on auth.
var _ pipeline.Store = (*Store)(nil)

// New returns a store on cli, sealing secret material with box. Call Start
// before relying on Revoked across instances, and Close when done (the
// client stays open; its owner closes it).
func New(cli *clientv3.Client, box *secretbox.Box, opts Options) *Store {
	if opts.Prefix == "" {
		opts.Prefix = "/kontinuous/"
	}
	if !strings.HasSuffix(opts.Prefix, "/") {
		opts.Prefix += "/"
	}
	if opts.OpTimeout <= 0 {
		opts.OpTimeout = 5 * time.Second
	}
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = 64
	}
	if opts.DeliveryTTL <= 0 {
		opts.DeliveryTTL = 72 * time.Hour
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Store{cli: cli, box: box, opts: opts, log: log, revoked: map[string]time.Time{}}
}

// Ready reports whether etcd answers a linearizable read (which needs a
// leader) within a short time; an error wraps pipeline.ErrUnavailable.
func (s *Store) Ready(ctx context.Context) error {
	timeout := min(s.opts.OpTimeout, 2*time.Second)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if _, err := s.currentRevision(ctx); err != nil {
		return s.wrap(err, "ready")
	}
	// A NOSPACE (or CORRUPT) alarm: reads work, writes do not.
	return s.readyAlarms(ctx)
}

// The seam for a cache in front of the store (Cached, cached.go). The
// store itself never caches a read; it gives a cache what it cannot
// know from its watch alone:
//
//   - revision: the newest revision this store committed or read, which a
//     cache waits for its watch to reach before it answers (so a process
//     reads its own writes and never goes back in time);
//   - currentRevision and connected: etcd's current revision (one cheap
//     linearizable read, no values) and whether the client is connected;
//   - readPipelineRaw (pipelines.go): one pipeline's record and newest
//     builds as etcd holds them, with the read's revision;
//   - buildOf, decodeList, pipelineOf: the decoding of GetBuild's,
//     ListBuilds' and GetPipeline's raw values (through the decode caches
//     of hot.go), and listStart, the first key of a ListBuilds page;
//   - updateBuild: UpdateBuild from a value the cache holds (saving the
//     first read; the transaction checks its revision);
//   - watchBuild, followBuilds and logs: WatchBuild, FollowBuilds and Logs
//     fed by a hub (hub.go, the fan-out of the cache's watch) instead of a
//     watch of their own or polling.

// wrote records the revision of a write this store committed, or of a
// value it read from etcd (see revision).
func (s *Store) wrote(rev int64) {
	for {
		cur := s.seen.Load()
		if rev <= cur || s.seen.CompareAndSwap(cur, rev) {
			return
		}
	}
}

// saw records the newest of the values read from etcd (see wrote); when
// the read found nothing, the read's revision.
func (s *Store) saw(header int64, kvs []*mvccpb.KeyValue) {
	rev := int64(0)
	for _, kv := range kvs {
		rev = max(rev, kv.ModRevision)
	}
	if rev == 0 {
		rev = header
	}
	s.wrote(rev)
}

// revision is the newest revision of a write this store committed or of
// a value it read: an answer that reflects everything up to it shows
// nothing older than what this process wrote or saw (read-your-writes,
// monotonic reads).
func (s *Store) revision() int64 { return s.seen.Load() }

// currentRevision is etcd's current revision, from a linearizable read of
// one key with no value returned.
func (s *Store) currentRevision(ctx context.Context) (int64, error) {
	gctx, cancel := s.opCtx(ctx)
	defer cancel()
	resp, err := s.cli.Get(gctx, s.opts.Prefix, clientv3.WithCountOnly())
	if err != nil {
		return 0, err
	}
	return resp.Header.Revision, nil
}

// connected reports whether the etcd client has a connection up.
func (s *Store) connected() bool {
	conn := s.cli.ActiveConnection()
	return conn != nil && conn.GetState() == connectivity.Ready
}

// opCtx applies the default op timeout when ctx has no deadline.
func (s *Store) opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, s.opts.OpTimeout)
}

// wrap adds context to err and maps etcd's failures to the domain
// sentinels: unreachable, timed out or leaderless → ErrUnavailable.
// Cancellation by the caller stays context.Canceled.
func (s *Store) wrap(err error, format string, args ...any) error {
	msg := "etcdstore: " + fmt.Sprintf(format, args...)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, pipeline.ErrNotFound), errors.Is(err, pipeline.ErrConflict),
		errors.Is(err, pipeline.ErrInvalid), errors.Is(err, pipeline.ErrUnavailable):
		return fmt.Errorf("%s: %w", msg, err)
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("%s: %w", msg, err)
	case isNoSpace(err):
		return fmt.Errorf("%s: %w", msg, noSpace(err))
	case errors.Is(err, rpctypes.ErrRequestTooLarge), isMessageTooLarge(err):
		return fmt.Errorf("%s: %w: %w", msg, pipeline.ErrTooLarge, err)
	case isUnavailable(err):
		return fmt.Errorf("%s: %w: %w", msg, pipeline.ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", msg, err)
}

// isUnavailable reports whether err means etcd could not serve the
// request now (as opposed to refusing it). NOSPACE is not among them:
// retrying does not help until an operator acts (see space.go).
func isUnavailable(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	for _, e := range []error{
		rpctypes.ErrNoLeader, rpctypes.ErrNotLeader, rpctypes.ErrNotCapable, rpctypes.ErrStopped,
		rpctypes.ErrTimeout, rpctypes.ErrTimeoutDueToLeaderFail,
		rpctypes.ErrTimeoutDueToConnectionLost, rpctypes.ErrTimeoutWaitAppliedIndex,
		rpctypes.ErrLeaderChanged, rpctypes.ErrUnhealthy, rpctypes.ErrTooManyRequests,
	} {
		if errors.Is(err, e) {
			return true
		}
	}
	if st, ok := status.FromError(err); ok {
		switch st.Code() {
		case codes.Unavailable, codes.DeadlineExceeded:
			return true
		}
	}
	return false
}

// leaseCache shares one lease between records that may live a little
// longer than asked (deliveries): one grant per window instead of one per
// record.
type leaseCache struct {
	mu      sync.Mutex
	id      clientv3.LeaseID
	renewAt time.Time
}

// get returns a lease that lives at least ttl from now, granting a new one
// (of ttl+window) at most once per window.
func (c *leaseCache) get(ctx context.Context, cli *clientv3.Client, ttl, window time.Duration) (clientv3.LeaseID, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	if c.id != 0 && now.Before(c.renewAt) {
		return c.id, nil
	}
	resp, err := cli.Grant(ctx, int64((ttl+window)/time.Second))
	if err != nil {
		return 0, err
	}
	c.id, c.renewAt = resp.ID, now.Add(window)
	return c.id, nil
}

// forget drops id if it is the cached lease (it was found missing).
func (c *leaseCache) forget(id clientv3.LeaseID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.id == id {
		c.id = 0
	}
}

// backoff sleeps a little, more as attempts grow, to spread contenders.
func backoff(ctx context.Context, attempt int) error {
	if attempt < 2 {
		return ctx.Err()
	}
	return sleepCtx(ctx, time.Duration(rand.Int64N(int64(min(attempt, 20))*int64(time.Millisecond))))
}

// watchRetryDelay spaces attempts to set a broken watch up again.
const watchRetryDelay = 250 * time.Millisecond

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
