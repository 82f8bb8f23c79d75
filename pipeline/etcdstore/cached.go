package etcdstore

import (
	"context"
	"sync"
	"time"

	"github.com/kontinuous/kontinuous/pipeline"
)

// Cached decorates a Store with the watch-fed read cache (readcache.go),
// as the Kubernetes apiserver's cacher decorates its etcd3 storage: one
// watch of the whole prefix keeps the pipelines this server reads in
// memory, so GetBuild, ListBuilds and GetPipeline answer without an etcd
// round trip, and its fan-out (hub.go) feeds every WatchBuild caller, log
// follower and build stream of the process. Everything else (writes,
// group commit, records, secrets, users, retention) is the Store's,
// reached through the embedded *Store.
//
// The cache owns the watch, the event ring, the hub, its counters and
// read-your-writes (a read waits for the watch to reach the Store's own
// newest revision); it knows the Store only through the small seam
// described in store.go.
type Cached struct {
	*Store
	copts CacheOptions
	rc    readCache
	hub   hub // fans rc's watch out to followers

	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan struct{}
}

// CacheOptions tune a Cached. Zero values take the defaults.
type CacheOptions struct {
	// LinearizableReads makes GetBuild, ListBuilds and GetPipeline
	// consistent reads: each first takes etcd's current revision (one
	// cheap linearizable read of a single key) and answers from the
	// watch-fed cache once it has reached that revision (from etcd if it
	// does not within a short time), so a read on one server sees a write
	// just answered by another. Without it, reads see this server's own
	// writes and other servers' writes as soon as the watch delivers them
	// (see readcache.go).
	LinearizableReads bool
}

// Cached satisfies pipeline.Store and pipeline.BuildFollower (and, through
// the Store, auth.OnceStore and auth.RevocationStore).
var (
	_ pipeline.Store         = (*Cached)(nil)
	_ pipeline.BuildFollower = (*Cached)(nil)
)

// NewCached returns s with a read cache in front. The cache is off (every
// read goes to s) until Start; Close stops it and s.
func NewCached(s *Store, opts CacheOptions) *Cached {
	return &Cached{Store: s, copts: opts}
}

// Start starts the Store (see Store.Start), then the cache's watch, and
// waits (up to the Store's OpTimeout) for the watch to be set up, so that
// reads right after Start use the cache (if it is slow, they go to etcd
// meanwhile). Calling it again is a no-op.
func (cs *Cached) Start(ctx context.Context) error {
	if err := cs.Store.Start(ctx); err != nil {
		return err
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.cancel != nil {
		return nil
	}
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	cs.cancel, cs.done = cancel, make(chan struct{})
	up := make(chan struct{})
	go cs.runReadCache(wctx, up, cs.done)
	t := time.NewTimer(cs.opts.OpTimeout)
	defer t.Stop()
	select {
	case <-up:
	case <-t.C:
	case <-ctx.Done():
	}
	return nil
}

// Close stops the cache's watch, then the Store's. The etcd client stays
// open.
func (cs *Cached) Close() {
	cs.mu.Lock()
	cancel, done := cs.cancel, cs.done
	cs.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
	cs.Store.Close()
}

// CacheStats returns the read cache's counters (for /metrics).
func (cs *Cached) CacheStats() CacheStats {
	c := &cs.rc
	return CacheStats{
		Hits: c.hits.Load(), Misses: c.misses.Load(), ConsistentReads: c.consistent.Load(),
		ProgressRequests: c.progressReqs.Load(), BuildWatches: cs.hub.ownWatches.Load(),
	}
}

// GetBuild returns one build with its stages, from the cache when it
// holds the build's pipeline (see Store.GetBuild).
func (cs *Cached) GetBuild(ctx context.Context, owner, repo string, number int) (pipeline.Build, error) {
	pk, err := pipelineKey(owner, repo)
	if err == nil {
		err = checkNumber(number)
	}
	if err != nil {
		return cs.Store.GetBuild(ctx, owner, repo, number)
	}
	ctx, cancel := cs.opCtx(ctx)
	defer cancel()
	kv, ok := cs.cachedBuild(ctx, pk, number)
	if !ok {
		return cs.Store.GetBuild(ctx, owner, repo, number)
	}
	return cs.buildOf(pk, number, kv)
}

// ListBuilds returns up to limit builds numbered below before, newest
// first, from the cache when it holds them (see Store.ListBuilds).
func (cs *Cached) ListBuilds(ctx context.Context, owner, repo string, limit, before int) ([]pipeline.Build, error) {
	pk, err := pipelineKey(owner, repo)
	if err != nil {
		return cs.Store.ListBuilds(ctx, owner, repo, limit, before)
	}
	if limit <= 0 {
		limit = defaultPage
	}
	ctx, cancel := cs.opCtx(ctx)
	defer cancel()
	kvs, exists, ok := cs.cachedList(ctx, pk, cs.listStart(pk, before), limit)
	if !ok {
		return cs.Store.ListBuilds(ctx, owner, repo, limit, before)
	}
	if !exists {
		return nil, cs.wrap(pipeline.ErrNotFound, "list builds of %s: no such pipeline", pk)
	}
	return cs.decodeList(pk, kvs, before)
}

// GetPipeline returns a pipeline with LatestBuild filled, from the cache
// when it holds it (see Store.GetPipeline).
func (cs *Cached) GetPipeline(ctx context.Context, owner, repo string) (pipeline.Pipeline, error) {
	pk, err := pipelineKey(owner, repo)
	if err != nil {
		return cs.Store.GetPipeline(ctx, owner, repo)
	}
	ctx, cancel := cs.opCtx(ctx)
	defer cancel()
	pkv, lkv, ok := cs.cachedPipeline(ctx, pk)
	if !ok {
		return cs.Store.GetPipeline(ctx, owner, repo)
	}
	return cs.pipelineOf(pk, pkv, lkv)
}

// UpdateBuild is Store.UpdateBuild starting from the cache's value of the
// build when it holds one: that saves the first read (the transaction
// compares its revision, so a value no longer current only costs a retry
// with the one etcd returns).
func (cs *Cached) UpdateBuild(ctx context.Context, owner, repo string, number int, fn func(*pipeline.Build) error) (pipeline.Build, error) {
	pk, err := pipelineKey(owner, repo)
	if err == nil {
		err = checkNumber(number)
	}
	if err != nil {
		return cs.Store.UpdateBuild(ctx, owner, repo, number, fn)
	}
	ctx, cancel := cs.opCtx(ctx)
	defer cancel()
	first, _ := cs.cachedBuild(ctx, pk, number)
	return cs.updateBuild(ctx, owner, repo, number, first, fn)
}

// WatchBuild is Store.WatchBuild fed by the cache's one prefix watch: a
// thousand watchers cost no etcd watch of their own; only while that
// watch is not running does a watcher open one (CacheStats.BuildWatches).
func (cs *Cached) WatchBuild(ctx context.Context, owner, repo string, number int, fn func(pipeline.Build) bool) error {
	return cs.watchBuild(ctx, &cs.hub, owner, repo, number, fn)
}

// FollowBuilds is Store.FollowBuilds fed by the cache's one prefix watch:
// a stream costs one etcd read when it starts (and again only if it falls
// behind or the watch breaks), never a watch of its own.
func (cs *Cached) FollowBuilds(ctx context.Context, owner, repo string, number, limit int, fn func(pipeline.BuildEvent) error) error {
	return cs.followBuilds(ctx, &cs.hub, owner, repo, number, limit, fn)
}

// Logs returns the etcd log store sharing the Store's client, whose
// followers the cache's one prefix watch feeds (they poll only while it
// restarts).
func (cs *Cached) Logs(opts LogOptions) *Logs {
	return cs.logs(opts, &cs.hub)
}
