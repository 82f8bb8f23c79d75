package etcdstore

import (
	"encoding/json"
	"maps"
	"strings"
	"sync"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kontinuous/kontinuous/pipeline"
)

// Hot-path helpers: bounded range reads and a cache of decoded builds.

// newestWindow is how far below the newest build number a store has seen
// its bounded range reads reach (see newestHints).
const newestWindow = 64

// newestHints remembers, per pipeline, the highest build number this store
// has seen. etcd counts every key of a range to answer its total, even
// when the range has a limit, so an open-ended read of "the newest build"
// or "the newest 50" costs in proportion to the pipeline's whole history.
// Build keys sort newest first, and numbers only grow (deletion does not
// lower the counter), so a range from the prefix's start to the key of
// (hint − window) holds every build newer than that: the newest ones,
// wherever they were created. Only if deletions emptied that window does
// a read fall back to the open range.
type newestHints struct {
	mu sync.Mutex
	m  map[string]int
}

func (h *newestHints) get(pk string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.m[pk]
}

func (h *newestHints) see(pk string, n int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.m == nil {
		h.m = map[string]int{}
	}
	if n > h.m[pk] {
		h.m[pk] = n
	}
}

func (h *newestHints) forget(pk string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.m, pk)
}

// buildsRangeEnd is the exclusive end of a range over pk's builds that
// holds every build numbered above lowest (the whole prefix when lowest <
// 1), and whether it is bounded.
func (s *Store) buildsRangeEnd(pk string, lowest int) (string, bool) {
	if lowest < 1 {
		return clientv3.GetPrefixRangeEnd(s.buildsPrefix(pk)), false
	}
	return s.buildKey(pk, lowest), true
}

// buildCacheSize bounds the decoded builds kept in memory.
const buildCacheSize = 20000

// buildCache keeps decoded builds by key, each valid for the ModRevision
// it was decoded from: a read that gets the same revision back reuses the
// decoded value instead of parsing the JSON again. Reads still go to etcd
// (and stay linearizable); only the decoding is saved. Callers get deep
// copies, so nothing they do reaches the cache.
type buildCache struct {
	mu sync.RWMutex
	m  map[string]cachedBuild
}

type cachedBuild struct {
	rev int64
	b   pipeline.Build
}

// decode returns the build stored in kv, from the cache when kv's
// revision was decoded before.
func (c *buildCache) decode(kv *mvccpb.KeyValue) (pipeline.Build, error) {
	return c.decodeAs(kv, cloneBuild)
}

// decodeListed is decode for lists: the copy leaves out Spec, a
// server-side field no list needs.
func (c *buildCache) decodeListed(kv *mvccpb.KeyValue) (pipeline.Build, error) {
	b, err := c.decodeAs(kv, cloneListed)
	b.Spec = nil
	return b, err
}

func (c *buildCache) decodeAs(kv *mvccpb.KeyValue, clone func(pipeline.Build) pipeline.Build) (pipeline.Build, error) {
	c.mu.RLock()
	e, ok := c.m[string(kv.Key)] // no allocation for the look-up
	c.mu.RUnlock()
	if ok && e.rev == kv.ModRevision {
		return clone(e.b), nil
	}
	key := string(kv.Key)
	b, err := decodeBuild(kv.Value)
	if err != nil {
		return b, err
	}
	c.mu.Lock()
	if c.m == nil {
		c.m = map[string]cachedBuild{}
	}
	if len(c.m) >= buildCacheSize {
		// Drop about half, arbitrarily (map order): cheap and bounded.
		i := 0
		for k := range c.m {
			if i%2 == 0 {
				delete(c.m, k)
			}
			i++
		}
	}
	if cur, ok := c.m[key]; !ok || cur.rev < kv.ModRevision {
		c.m[key] = cachedBuild{rev: kv.ModRevision, b: cloneBuild(b)}
	}
	c.mu.Unlock()
	return b, nil
}

// forgetPrefix drops the cached builds under prefix (a deleted pipeline).
func (c *buildCache) forgetPrefix(prefix string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := range c.m {
		if strings.HasPrefix(k, prefix) {
			delete(c.m, k)
		}
	}
}

// cloneListed is cloneBuild without Spec.
func cloneListed(b pipeline.Build) pipeline.Build {
	b.Spec = nil
	return cloneBuild(b)
}

// cloneBuild deep-copies b so that the copy shares no slice or map with it.
func cloneBuild(b pipeline.Build) pipeline.Build {
	out := b
	if b.Stages != nil {
		out.Stages = make([]pipeline.Stage, len(b.Stages))
		for i, st := range b.Stages {
			st.Params = cloneAnyMap(st.Params)
			st.Labels = maps.Clone(st.Labels)
			st.Vars = maps.Clone(st.Vars)
			st.Artifacts = cloneStrings(st.Artifacts)
			st.Secrets = cloneStrings(st.Secrets)
			out.Stages[i] = st
		}
	}
	if b.Spec != nil {
		out.Spec = append([]byte{}, b.Spec...)
	}
	return out
}

func cloneStrings(s []string) []string {
	if s == nil {
		return nil
	}
	return append([]string{}, s...)
}

// cloneAnyMap deep-copies decoded JSON (maps, slices and scalars).
func cloneAnyMap(m map[string]any) map[string]any {
	if m == nil {
		return nil
	}
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = cloneAny(v)
	}
	return out
}

func cloneAny(v any) any {
	switch x := v.(type) {
	case map[string]any:
		return cloneAnyMap(x)
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = cloneAny(e)
		}
		return out
	case []string:
		return cloneStrings(x)
	case map[string]string:
		return maps.Clone(x)
	case json.RawMessage:
		return append(json.RawMessage{}, x...)
	}
	// Scalars (string, float64, bool, json.Number, nil) are values.
	return v
}

// pipelineCache keeps decoded pipelines by key, each valid for the
// ModRevision it was decoded from, as buildCache does for builds. A
// pipeline's decoding opens two sealed values (webhook secret, deploy
// key), which a webhook delivery would otherwise pay every time.
type pipelineCache struct {
	mu sync.RWMutex
	m  map[string]cachedPipeline
}

type cachedPipeline struct {
	rev int64
	p   pipeline.Pipeline
}

// pipelineCacheSize bounds the decoded pipelines kept in memory.
const pipelineCacheSize = 10000

func (c *pipelineCache) get(kv *mvccpb.KeyValue) (pipeline.Pipeline, bool) {
	c.mu.RLock()
	e, ok := c.m[string(kv.Key)]
	c.mu.RUnlock()
	if !ok || e.rev != kv.ModRevision {
		return pipeline.Pipeline{}, false
	}
	return clonePipeline(e.p), true
}

func (c *pipelineCache) put(kv *mvccpb.KeyValue, p pipeline.Pipeline) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]cachedPipeline{}
	}
	if len(c.m) >= pipelineCacheSize {
		clear(c.m)
	}
	key := string(kv.Key)
	if cur, ok := c.m[key]; !ok || cur.rev < kv.ModRevision {
		c.m[key] = cachedPipeline{rev: kv.ModRevision, p: clonePipeline(p)}
	}
}

// clonePipeline deep-copies p (LatestBuild is not kept).
func clonePipeline(p pipeline.Pipeline) pipeline.Pipeline {
	out := p
	out.LatestBuild = nil
	out.Events = cloneStrings(p.Events)
	out.Secrets = cloneStrings(p.Secrets)
	out.Vars = maps.Clone(p.Vars)
	if p.Notif != nil {
		out.Notif = make([]pipeline.Notif, len(p.Notif))
		for i, n := range p.Notif {
			n.Secrets = cloneStrings(n.Secrets)
			n.Metadata = maps.Clone(n.Metadata)
			out.Notif[i] = n
		}
	}
	return out
}
