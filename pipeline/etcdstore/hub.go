package etcdstore

import (
	"errors"
	"strings"
	"sync"
	"sync/atomic"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

// Fan-out of the read cache's watch. Cached already follows the whole
// prefix with one etcd watch per server; its hub hands the events of that
// watch to in-process subscribers (WatchBuild callers, log followers,
// build streams), so that a thousand followers cost one watch, not a
// thousand. The plain Store's watchBuild, followBuilds and logs take the
// hub as a parameter; a nil hub (plain store) is never running.
//
// A subscriber registers a key prefix before it reads the current state
// from etcd (revision R), then applies the events it receives whose
// ModRevision is above R: with a linearizable read after the registration
// nothing falls between the two. A subscriber that falls behind (its
// buffer is full) or whose watch broke is told through lost and must read
// the state again and subscribe anew.

// hubBuffer is how many events a subscriber may have pending.
const hubBuffer = 256

// errHubOff: the watch is not running (no cache, or its watch restarts);
// callers poll or watch alone instead.
var errHubOff = errors.New("etcdstore: watch fan-out not running")

type hub struct {
	mu      sync.Mutex
	running bool
	subs    map[string]map[*subscription]struct{} // by exact prefix
	// ownWatches counts the etcd watches WatchBuild opened because the
	// hub was not running.
	ownWatches atomic.Int64
}

type subscription struct {
	h      *hub
	prefix string
	ch     chan hubEvent
	lost   chan struct{}
	once   sync.Once
}

type hubEvent struct {
	del bool
	kv  *mvccpb.KeyValue
}

// subscribe registers a subscriber for the keys starting with prefix
// (prefixes end with "/", or are a whole key). A nil hub is never
// running.
func (h *hub) subscribe(prefix string) (*subscription, error) {
	if h == nil {
		return nil, errHubOff
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.running {
		return nil, errHubOff
	}
	sub := &subscription{h: h, prefix: prefix, ch: make(chan hubEvent, hubBuffer), lost: make(chan struct{})}
	if h.subs == nil {
		h.subs = map[string]map[*subscription]struct{}{}
	}
	m := h.subs[prefix]
	if m == nil {
		m = map[*subscription]struct{}{}
		h.subs[prefix] = m
	}
	m[sub] = struct{}{}
	return sub, nil
}

// countOwnWatch counts a watch opened because h was not running (a nil
// hub counts nothing).
func (h *hub) countOwnWatch() {
	if h != nil {
		h.ownWatches.Add(1)
	}
}

// close unregisters sub; safe to call more than once.
func (sub *subscription) close() {
	h := sub.h
	h.mu.Lock()
	defer h.mu.Unlock()
	h.dropLocked(sub)
}

func (h *hub) dropLocked(sub *subscription) {
	if m := h.subs[sub.prefix]; m != nil {
		delete(m, sub)
		if len(m) == 0 {
			delete(h.subs, sub.prefix)
		}
	}
	sub.once.Do(func() { close(sub.lost) })
}

// start marks the watch as running.
func (h *hub) start() {
	h.mu.Lock()
	h.running = true
	h.mu.Unlock()
}

// stop marks the watch as broken: every subscriber is lost.
func (h *hub) stop() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.running = false
	for _, m := range h.subs {
		for sub := range m {
			h.dropLocked(sub)
		}
	}
}

// publish hands one event to the subscribers of every prefix of its key.
func (h *hub) publish(del bool, kv *mvccpb.KeyValue) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.subs) == 0 {
		return
	}
	key := string(kv.Key)
	for i := 0; i <= len(key); {
		j := strings.IndexByte(key[i:], '/')
		end := len(key)
		if j >= 0 {
			end = i + j + 1
		}
		for sub := range h.subs[key[:end]] {
			select {
			case sub.ch <- hubEvent{del: del, kv: kv}:
			default:
				h.dropLocked(sub) // fell behind: it reads again
			}
		}
		if j < 0 {
			break
		}
		i = end
	}
}

// subscribers counts the registered subscribers (for tests and metrics).
func (h *hub) subscribers() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, m := range h.subs {
		n += len(m)
	}
	return n
}
