package etcdstore

import (
	"context"
	"errors"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/metadata"
)

// Watch-fed read cache (Cached): GetBuild, ListBuilds and GetPipeline
// answer from memory, with no etcd round trip, for pipelines this server
// has read before, while a watch of the whole prefix keeps that memory
// current.
//
// What a reader sees (the guarantees, weaker than a linearizable read
// only across servers):
//
//   - its own server's writes: a read waits (briefly) until the watch has
//     delivered every write the wrapped Store committed (or value it read)
//     before the read began (Store.revision: read-your-writes per
//     process); if it does not catch up within readCacheCatchUp, the read
//     goes to etcd through the Store;
//   - other servers' writes: as soon as etcd's watch delivers them to this
//     server (normally well under a millisecond), never older than what
//     etcd confirmed within readCacheFresh;
//   - with CacheOptions.LinearizableReads (consistent reads): a read first asks
//     etcd for its current revision (one linearizable read of a single
//     key, no values) and waits until the watch has applied it, so it sees
//     every write any server committed before it began, at the cost of one
//     cheap round trip instead of a full read;
//   - etcd unavailable: the cache is not used while the client has no
//     connection to etcd, nor when the watch has not been heard from for
//     readCacheFresh and does not answer a progress request within
//     readCacheCatchUp; reads then go to etcd and fail with ErrUnavailable
//     as before. Progress is requested only while a reader waits (an
//     idle server sends etcd nothing). A lost
//     leader cancels the watch (it requires a leader; etcd notices after
//     a few election timeouts, which bounds how stale a server cut off
//     with a minority of members can read) and empties the cache.
//
// For each cached pipeline the cache holds its pipeline record and every
// build key in a complete range [builds prefix, bound): the newest
// builds, since build keys sort newest first. New builds land inside the
// range, so it stays complete as long as every event is applied; it is
// trimmed from its old end (bound moves down) to readCacheBuildsPerPipeline.
// A pipeline is loaded on its first read (one range read of its newest
// readCacheFillBuilds builds): events committed between that read and the
// moment it is installed are replayed from a ring of recent events, so
// nothing is missed. Any break of the watch drops everything. Only
// pipelines that exist are kept: a read of a pipeline that does not exist
// (e.g. an anonymous webhook post) is answered from its one etcd read and
// never evicts a cached pipeline.
//
// Values are kept as etcd returned them and decoded through the
// (key, ModRevision) decode caches, so callers still get their own
// copies.
const (
	readCacheFresh             = 350 * time.Millisecond
	readCacheCatchUp           = 50 * time.Millisecond
	readCacheFillBuilds        = 200
	readCacheBuildsPerPipeline = 400
	// readCachePipelines × readCacheBuildsPerPipeline bounds the records
	// kept (about 100,000; a pipeline beyond it evicts the one read
	// longest ago).
	readCachePipelines = 256
	readCacheRing      = 8192
)

// readCache is the watch-fed cache; its zero value is off (every read goes
// to etcd) until Cached.Start runs it.
type readCache struct {
	mu        sync.RWMutex
	running   bool      // a watch is following the prefix
	applied   int64     // every event up to this revision is applied
	lastHeard time.Time // last answer from the watch (events or progress)
	advanced  chan struct{}
	pipes     map[string]*cachedPipe
	// ring holds the recent events of builds and pipelines, for replay
	// into a pipeline being loaded: every event with revision > floor.
	ring  []ringEvent
	floor int64
	// progress asks the watch's progress goroutine for a progress
	// report (buffered 1: requests coalesce while one is under way).
	progress chan struct{}

	uses         atomic.Int64 // read clock for cachedPipe.used
	hits         atomic.Int64 // reads answered from memory
	misses       atomic.Int64 // reads that had to ask etcd for the data
	consistent   atomic.Int64 // consistent reads (revision from etcd, then memory or etcd)
	progressReqs atomic.Int64 // progress requests sent to etcd
}

// CacheStats are the read cache's counters since NewCached.
type CacheStats struct {
	// Hits are reads answered from memory.
	Hits int64
	// Misses are reads that asked etcd for the data (pipeline not cached,
	// cache not running, stale or behind).
	Misses int64
	// ConsistentReads are reads that took etcd's current revision first
	// (CacheOptions.LinearizableReads).
	ConsistentReads int64
	// ProgressRequests are the watch progress requests sent to etcd
	// (only while a reader waits).
	ProgressRequests int64
	// BuildWatches are etcd watches opened by WatchBuild because the
	// shared prefix watch was not running.
	BuildWatches int64
}

type ringEvent struct {
	del bool
	kv  *mvccpb.KeyValue // for a delete, Key and ModRevision (of the delete)
}

// cachedPipe is one pipeline's record (nil: it does not exist) and every
// build whose key is in [builds prefix, bound), sorted by key (newest
// first). Values are never changed in place: they are replaced.
type cachedPipe struct {
	pkv    *mvccpb.KeyValue
	builds []*mvccpb.KeyValue
	bound  string
	end    string       // the builds prefix's range end: bound == end means all builds
	used   atomic.Int64 // c.uses when last read: the least recently read is evicted
}

// cacheReady waits until the cache may answer a read that starts now,
// and returns with cs.rc.mu read-locked if so.
func (cs *Cached) cacheReady(ctx context.Context) bool {
	c := &cs.rc
	target := cs.revision()
	if cs.copts.LinearizableReads {
		c.consistent.Add(1)
		rev, err := cs.currentRevision(ctx)
		if err != nil {
			return false
		}
		target = max(target, rev)
	}
	var timer *time.Timer
	for {
		c.mu.RLock()
		if !c.running || !cs.connected() {
			c.mu.RUnlock()
			return false
		}
		if c.applied >= target && time.Since(c.lastHeard) <= readCacheFresh {
			return true
		}
		ch, progress := c.advanced, c.progress
		c.mu.RUnlock()
		// Behind or not heard from lately: ask the watch to report its
		// progress (it answers with the revision it has sent everything
		// up to, which also proves it is alive).
		select {
		case progress <- struct{}{}:
		default:
		}
		if timer == nil {
			timer = time.NewTimer(readCacheCatchUp)
			defer timer.Stop()
		}
		select {
		case <-ch:
		case <-timer.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

// cachedPipeOf returns pk's cached pipeline, loading it first if needed
// (loaded: the data came from etcd); on ok, cs.rc.mu is read-locked and
// the caller must unlock it. A pipeline that does not exist is not
// installed: its load is returned for this one read.
func (cs *Cached) cachedPipeOf(ctx context.Context, pk string) (p *cachedPipe, loaded, ok bool) {
	if !cs.cacheReady(ctx) {
		return nil, false, false
	}
	if p := cs.rc.pipes[pk]; p != nil {
		p.used.Store(cs.rc.uses.Add(1))
		return p, false, true
	}
	cs.rc.mu.RUnlock()
	if p = cs.loadPipe(ctx, pk); p == nil {
		return nil, false, false
	}
	cs.rc.mu.RLock()
	if q := cs.rc.pipes[pk]; q != nil {
		p = q
	}
	return p, true, true
}

// count records a read answered from memory (hit) or from etcd.
func (c *readCache) count(hit bool) {
	if hit {
		c.hits.Add(1)
	} else {
		c.misses.Add(1)
	}
}

// loadPipe reads pk's record and newest builds and, once the watch has
// reached the read's revision, installs them if the pipeline exists. It
// returns what it read (nil: ask etcd).
func (cs *Cached) loadPipe(ctx context.Context, pk string) *cachedPipe {
	prefix := cs.buildsPrefix(pk)
	end := clientv3.GetPrefixRangeEnd(prefix)
	raw, err := cs.readPipelineRaw(ctx, pk, readCacheFillBuilds)
	if err != nil {
		return nil
	}
	rev := raw.rev
	p := &cachedPipe{end: end, bound: end, pkv: raw.pkv, builds: raw.builds}
	if raw.more && len(raw.builds) > 0 {
		p.bound = string(raw.builds[len(raw.builds)-1].Key) + "\x00"
	}
	c := &cs.rc
	timer := time.NewTimer(readCacheCatchUp)
	defer timer.Stop()
	for {
		c.mu.Lock()
		if !c.running || c.floor > rev {
			c.mu.Unlock()
			return nil
		}
		if c.applied >= rev {
			break
		}
		ch := c.advanced
		c.mu.Unlock()
		select {
		case <-ch:
		case <-timer.C:
			return nil
		case <-ctx.Done():
			return nil
		}
	}
	defer c.mu.Unlock()
	if q := c.pipes[pk]; q != nil {
		return q // loaded meanwhile by another reader
	}
	pipesKey := cs.pipelineKeyOf(pk)
	for _, e := range c.ring {
		if e.kv.ModRevision > rev {
			key := string(e.kv.Key)
			if key == pipesKey || strings.HasPrefix(key, prefix) {
				p.apply(key, pipesKey, e)
			}
		}
	}
	if p.pkv == nil {
		return p // no such pipeline: answer this read, keep nothing
	}
	if len(c.pipes) >= readCachePipelines {
		c.evictLeastRecentlyRead()
	}
	p.used.Store(c.uses.Add(1))
	c.pipes[pk] = p
	return p
}

// evictLeastRecentlyRead drops the cached pipeline read longest ago
// (c.mu held for writing).
func (c *readCache) evictLeastRecentlyRead() {
	oldest, at := "", int64(0)
	for k, p := range c.pipes {
		if u := p.used.Load(); oldest == "" || u < at {
			oldest, at = k, u
		}
	}
	delete(c.pipes, oldest)
}

// apply brings p up to date with one event on key (pipesKey is p's
// pipeline record key). Events at or below a value's revision are
// ignored, so replays are harmless.
func (p *cachedPipe) apply(key, pipesKey string, e ringEvent) {
	rev := e.kv.ModRevision
	if key == pipesKey {
		switch {
		case p.pkv != nil && rev <= p.pkv.ModRevision:
		case e.del:
			p.pkv = nil
		default:
			p.pkv = e.kv
		}
		return
	}
	if key >= p.bound {
		return
	}
	i := sort.Search(len(p.builds), func(i int) bool { return string(p.builds[i].Key) >= key })
	found := i < len(p.builds) && string(p.builds[i].Key) == key
	switch {
	case found && rev <= p.builds[i].ModRevision:
	case e.del && found:
		p.builds = append(p.builds[:i:i], p.builds[i+1:]...)
	case e.del:
	case found:
		nb := append([]*mvccpb.KeyValue(nil), p.builds...)
		nb[i] = e.kv
		p.builds = nb
	default:
		nb := make([]*mvccpb.KeyValue, 0, len(p.builds)+1)
		nb = append(append(append(nb, p.builds[:i]...), e.kv), p.builds[i:]...)
		if len(nb) > readCacheBuildsPerPipeline {
			p.bound = string(nb[readCacheBuildsPerPipeline].Key)
			nb = nb[:readCacheBuildsPerPipeline]
		}
		p.builds = nb
	}
}

// runReadCache follows the prefix until ctx ends, starting over (with an
// empty cache) whenever the watch breaks. It closes up once the first
// watch is set up.
func (cs *Cached) runReadCache(ctx context.Context, up, done chan struct{}) {
	defer close(done)
	var once sync.Once
	for {
		err := cs.followReadCache(ctx, func() { once.Do(func() { close(up) }) })
		cs.rc.mu.Lock()
		cs.rc.running, cs.rc.pipes, cs.rc.ring = false, nil, nil
		cs.rc.mu.Unlock()
		cs.hub.stop()
		if ctx.Err() != nil {
			return
		}
		cs.log.Warn("etcdstore: read cache watch restarted", "err", err)
		if sleepCtx(ctx, watchRetryDelay) != nil {
			return
		}
	}
}

// followReadCache sets the watch up and applies its events until it
// breaks or ctx ends.
func (cs *Cached) followReadCache(ctx context.Context, up func()) error {
	start, err := cs.currentRevision(ctx)
	if err != nil {
		return err
	}
	// Its own gRPC stream (streams are shared by metadata), so that
	// progress requests and their answers concern this watch only.
	wctx, wcancel := context.WithCancel(metadata.AppendToOutgoingContext(clientv3.WithRequireLeader(ctx), "kontinuous-watch", "read-cache"))
	defer wcancel()
	wch := cs.cli.Watch(wctx, cs.opts.Prefix, clientv3.WithPrefix(), clientv3.WithRev(start+1))
	c := &cs.rc
	c.mu.Lock()
	c.running, c.applied, c.floor, c.lastHeard = true, start, start, time.Now()
	c.pipes, c.ring = map[string]*cachedPipe{}, nil
	progress := make(chan struct{}, 1)
	c.progress = progress
	c.advance()
	c.mu.Unlock()
	cs.hub.start()
	up()
	go func() {
		// Progress only on demand: a reader found the cache behind or not
		// heard from lately (see cacheReady).
		for {
			select {
			case <-wctx.Done():
				return
			case <-progress:
				c.progressReqs.Add(1)
				pctx, pcancel := context.WithTimeout(wctx, readCacheFresh)
				_ = cs.cli.RequestProgress(pctx) // no answer: the cache stays stale and is not used
				pcancel()
			}
		}
	}()
	buildsPrefix, pipesPrefix := cs.opts.Prefix+"builds/", cs.pipelinesPrefix()
	for {
		var wr clientv3.WatchResponse
		var ok bool
		select {
		case <-ctx.Done():
			return ctx.Err()
		case wr, ok = <-wch:
		}
		if !ok {
			return errors.New("watch closed")
		}
		if err := wr.Err(); err != nil {
			return err
		}
		c.mu.Lock()
		c.lastHeard = time.Now()
		top := c.applied
		if wr.IsProgressNotify() {
			// Sent only once every event up to this revision was sent.
			top = max(top, wr.Header.Revision)
		}
		for _, ev := range wr.Events {
			top = max(top, ev.Kv.ModRevision)
			cs.hub.publish(ev.Type == mvccpb.DELETE, ev.Kv)
			key := string(ev.Kv.Key)
			var pk string
			switch {
			case strings.HasPrefix(key, buildsPrefix):
				rest := key[len(buildsPrefix):]
				i := strings.LastIndexByte(rest, '/')
				if i < 0 {
					continue
				}
				pk = rest[:i]
			case strings.HasPrefix(key, pipesPrefix):
				pk = key[len(pipesPrefix):]
			default:
				continue
			}
			e := ringEvent{del: ev.Type == mvccpb.DELETE, kv: ev.Kv}
			c.ring = append(c.ring, e)
			if p := c.pipes[pk]; p != nil {
				p.apply(key, pipesPrefix+pk, e)
			}
		}
		if len(c.ring) >= 2*readCacheRing {
			drop := len(c.ring) - readCacheRing
			c.floor = c.ring[drop-1].kv.ModRevision
			c.ring = append([]ringEvent(nil), c.ring[drop:]...)
		}
		if top > c.applied || wr.IsProgressNotify() {
			// A progress report wakes readers even without news: it
			// proves the watch alive.
			c.applied = max(top, c.applied)
			c.advance()
		}
		c.mu.Unlock()
	}
}

// advance wakes the readers waiting for the watch (c.mu held).
func (c *readCache) advance() {
	if c.advanced != nil {
		close(c.advanced)
	}
	c.advanced = make(chan struct{})
}

// cachedBuild answers GetBuild from the cache: ok=false means ask etcd.
func (cs *Cached) cachedBuild(ctx context.Context, pk string, number int) (*mvccpb.KeyValue, bool) {
	p, loaded, ok := cs.cachedPipeOf(ctx, pk)
	if !ok {
		cs.rc.misses.Add(1)
		return nil, false
	}
	defer cs.rc.mu.RUnlock()
	key := cs.buildKey(pk, number)
	if key >= p.bound {
		cs.rc.misses.Add(1)
		return nil, false
	}
	cs.rc.count(!loaded)
	i := sort.Search(len(p.builds), func(i int) bool { return string(p.builds[i].Key) >= key })
	if i < len(p.builds) && string(p.builds[i].Key) == key {
		return p.builds[i], true
	}
	return nil, true
}

// cachedList answers ListBuilds from the cache (the builds from start
// on, up to limit; exists=false: no such pipeline): ok=false means ask
// etcd.
func (cs *Cached) cachedList(ctx context.Context, pk, start string, limit int) (kvs []*mvccpb.KeyValue, exists, ok bool) {
	p, loaded, ok := cs.cachedPipeOf(ctx, pk)
	if !ok {
		cs.rc.misses.Add(1)
		return nil, false, false
	}
	defer cs.rc.mu.RUnlock()
	if p.pkv != nil && start >= p.bound {
		cs.rc.misses.Add(1)
		return nil, true, false
	}
	if p.pkv != nil {
		i := sort.Search(len(p.builds), func(i int) bool { return string(p.builds[i].Key) >= start })
		kvs = p.builds[i:min(i+limit, len(p.builds))]
		if len(kvs) < limit && p.bound != p.end {
			cs.rc.misses.Add(1)
			return nil, true, false
		}
	}
	cs.rc.count(!loaded)
	return kvs, p.pkv != nil, true
}

// cachedPipeline answers GetPipeline from the cache: the record (nil: no
// such pipeline) and the newest build (nil: none); ok=false means ask
// etcd.
func (cs *Cached) cachedPipeline(ctx context.Context, pk string) (pkv, latest *mvccpb.KeyValue, ok bool) {
	p, loaded, ok := cs.cachedPipeOf(ctx, pk)
	if !ok {
		cs.rc.misses.Add(1)
		return nil, nil, false
	}
	defer cs.rc.mu.RUnlock()
	if p.pkv != nil && len(p.builds) == 0 && p.bound != p.end {
		cs.rc.misses.Add(1)
		return nil, nil, false
	}
	cs.rc.count(!loaded)
	if p.pkv == nil || len(p.builds) == 0 {
		return p.pkv, nil, true
	}
	return p.pkv, p.builds[0], true
}
