package etcdstore

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kontinuous/kontinuous/pipeline"
)

// Stage logs in etcd, so that every server reads and follows every log
// and a log outlives the server that ran its stage.
//
// Layout, under logs/<owner>/<repo>/<inv build>/<stage>/:
//
//	m              the run id of the log being written (Create puts it)
//	c/<seq>        a chunk: the offset of its first byte in the stage's
//	               whole output (8 bytes, big-endian) and up to
//	               ChunkBytes of output
//	d              the log is finished; after compaction a JSON
//	               {"parts": n, "start": offset of the parts' first byte}
//	p/<n>          compacted parts (each ≤ 1 MiB), valid once d says so
//
// The writer buffers output in memory and flushes it as chunks every
// FlushInterval or whenever ChunkBytes are pending, in transactions that
// write only while m still names its run (a deleted build's log never
// comes back). Only the tail is kept: chunks older than MaxBytes are
// deleted as new ones land, and when a stage prints faster than etcd
// takes it, the writer keeps the newest MaxBytes it has not flushed and
// drops the rest (readers see the truncation notice). Write never waits
// for etcd. When the stage ends, the chunks are rewritten as a few parts
// (one for most logs) so that a finished log is a handful of keys.
//
// Followers subscribe to the store's one prefix watch (the read cache's),
// fanned out in memory, so a follower costs no etcd watch; with the read
// cache off they poll once per PollInterval (1s).

// LogOptions tune Logs. Zero values take the defaults.
type LogOptions struct {
	// MaxBytes is how much of each stage's output is kept (the tail);
	// default 4 MiB, as the file store.
	MaxBytes int64
	// ChunkBytes is the largest chunk (default 64 KiB).
	ChunkBytes int
	// FlushInterval is the longest output waits before it is written
	// (default 250ms).
	FlushInterval time.Duration
	// PollInterval is how often a follower reads when the watch fan-out
	// is not running (default 1s).
	PollInterval time.Duration
}

const (
	logPartBytes    = 1 << 20 // compacted part size: under etcd's 1.5 MiB request limit
	logChunksPerTxn = 8       // chunk puts per transaction (≤ 512 KiB by default)
	logMaxLine      = 64 << 10
)

// Logs is a pipeline.LogStore in etcd. Get it with Store.Logs.
type Logs struct {
	s    *Store
	opts LogOptions
}

var _ pipeline.LogStore = (*Logs)(nil)

// Logs returns the etcd log store sharing s's client and watch.
func (s *Store) Logs(opts LogOptions) *Logs {
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = 4 << 20
	}
	if opts.ChunkBytes <= 0 {
		opts.ChunkBytes = 64 << 10
	}
	if opts.FlushInterval <= 0 {
		opts.FlushInterval = 250 * time.Millisecond
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = time.Second
	}
	return &Logs{s: s, opts: opts}
}

// Notice is the first line of a log whose older output was dropped (the
// same words as the file store's).
func (l *Logs) Notice() string {
	return fmt.Sprintf("[kontinuous] log truncated: only the last %d bytes of this stage's output are kept", l.opts.MaxBytes)
}

func (s *Store) logsPipelinePrefix(pk string) string { return s.opts.Prefix + "logs/" + pk + "/" }

func (s *Store) logsBuildPrefix(pk string, build int) string {
	return s.logsPipelinePrefix(pk) + invNumber(build) + "/"
}

// base returns the key prefix of ref's log.
func (l *Logs) base(ref pipeline.LogRef) (string, error) {
	owner, repo, _ := strings.Cut(ref.Pipeline, "/")
	pk, err := pipelineKey(owner, repo)
	if err != nil {
		return "", err
	}
	if err := checkNumber(ref.Build); err != nil {
		return "", err
	}
	if ref.Stage < 0 || ref.Stage > 99999 {
		return "", pipeline.Invalid("stage", "stage index %d is out of range", ref.Stage)
	}
	return fmt.Sprintf("%s%05d/", l.s.logsBuildPrefix(pk, ref.Build), ref.Stage), nil
}

func chunkKey(base string, seq int64) string { return fmt.Sprintf("%sc/%012d", base, seq) }

// Create starts ref's log, removing an older log of the same stage. One
// writer per log per process (ErrConflict).
func (l *Logs) Create(ctx context.Context, ref pipeline.LogRef) (io.WriteCloser, error) {
	base, err := l.base(ref)
	if err != nil {
		return nil, l.s.wrap(err, "create log")
	}
	if _, busy := l.s.logWriters.LoadOrStore(base, struct{}{}); busy {
		return nil, fmt.Errorf("etcdstore: log of %s build %d stage %d is being written: %w", ref.Pipeline, ref.Build, ref.Stage, pipeline.ErrConflict)
	}
	var rb [12]byte
	_, _ = rand.Read(rb[:]) // never fails (crypto/rand)
	run := hex.EncodeToString(rb[:])
	cctx, cancel := l.s.opCtx(ctx)
	defer cancel()
	// Everything but m goes ("c/", "d" sort before "m", "p/" after): a
	// put may not overlap a delete in one transaction.
	_, err = l.s.cli.Txn(cctx).Then(
		clientv3.OpDelete(base, clientv3.WithRange(base+"m")),
		clientv3.OpDelete(base+"m\x00", clientv3.WithRange(clientv3.GetPrefixRangeEnd(base))),
		clientv3.OpPut(base+"m", run),
	).Commit()
	if err != nil {
		l.s.logWriters.Delete(base)
		return nil, l.s.wrap(err, "create log %s#%d/%d", ref.Pipeline, ref.Build, ref.Stage)
	}
	wctx, wcancel := context.WithCancel(context.Background())
	w := &logWriter{l: l, base: base, run: run, ctx: wctx, cancel: wcancel,
		kick: make(chan struct{}, 1), closing: make(chan struct{}), done: make(chan struct{})}
	go w.flusher()
	return w, nil
}

type storedChunk struct {
	seq  int64
	size int64
}

// logWriter buffers output and flushes it as chunks (see the package
// layout above).
type logWriter struct {
	l      *Logs
	base   string
	run    string
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	pending []byte
	written int64 // bytes written so far: pending ends there
	closed  bool

	kick    chan struct{}
	closing chan struct{}
	done    chan struct{}
	err     error // the flusher's last error, read after done

	// owned by the flusher
	seq       int64
	stored    []storedChunk
	total     int64
	gone      bool  // m no longer names this run: the log was replaced or deleted
	deletedTo int64 // chunks below this seq are deleted
	off       int64 // offset of the next byte to store
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return 0, errors.New("etcdstore: write to a closed log")
	}
	n := len(p)
	w.written += int64(n)
	max := int(w.l.opts.MaxBytes)
	if len(p) > max {
		w.pending = w.pending[:0]
		p = p[len(p)-max:]
	}
	w.pending = append(w.pending, p...)
	if len(w.pending) > 2*max { // amortized: keep the newest max bytes
		k := copy(w.pending, w.pending[len(w.pending)-max:])
		w.pending = w.pending[:k]
	}
	if len(w.pending) >= w.l.opts.ChunkBytes {
		select {
		case w.kick <- struct{}{}:
		default:
		}
	}
	return n, nil
}

// take returns the output to flush, the offset of its first byte, and
// whether the writer is closed.
func (w *logWriter) take() ([]byte, int64, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	data, closed := w.pending, w.closed
	if max := int(w.l.opts.MaxBytes); len(data) > max {
		data = data[len(data)-max:]
	}
	w.pending = nil
	return data, w.written - int64(len(data)), closed
}

func (w *logWriter) flusher() {
	defer close(w.done)
	t := time.NewTicker(w.l.opts.FlushInterval)
	defer t.Stop()
	closing := w.closing
	for {
		select {
		case <-w.kick:
		case <-t.C:
		case <-closing:
			closing = nil
		}
		data, off, closed := w.take()
		if err := w.flush(data, off); err != nil {
			w.err = err
		}
		if closed {
			if err := w.finish(); err != nil {
				w.err = err
			}
			return
		}
	}
}

// flush writes data as chunks, retrying while etcd is unavailable (until
// the writer's context ends).
func (w *logWriter) flush(data []byte, off int64) error {
	if w.gone || len(data) == 0 {
		return nil
	}
	if off > w.off {
		// Output was dropped: the new output alone fills the cap, so every
		// stored chunk goes.
		w.stored, w.total = w.stored[:0], 0
	}
	cb := w.l.opts.ChunkBytes
	for len(data) > 0 {
		var ops []clientv3.Op
		for k := 0; k < logChunksPerTxn && len(data) > 0; k++ {
			n := min(cb, len(data))
			v := binary.BigEndian.AppendUint64(make([]byte, 0, n+8), uint64(off))
			v = append(v, data[:n]...)
			ops = append(ops, clientv3.OpPut(chunkKey(w.base, w.seq), string(v)))
			w.stored = append(w.stored, storedChunk{seq: w.seq, size: int64(n)})
			w.total += int64(n)
			w.seq++
			data, off = data[n:], off+int64(n)
			w.off = off
		}
		// Trim: keep the newest chunks that hold MaxBytes.
		drop := 0
		for drop < len(w.stored)-1 && w.total-w.stored[drop].size >= w.l.opts.MaxBytes {
			w.total -= w.stored[drop].size
			drop++
		}
		w.stored = w.stored[drop:]
		if keep := w.stored[0].seq; keep > w.deletedTo {
			// One range delete of everything before the oldest kept chunk.
			ops = append(ops, clientv3.OpDelete(chunkKey(w.base, w.deletedTo), clientv3.WithRange(chunkKey(w.base, keep))))
			w.deletedTo = keep
		}
		ok, err := w.commit(ops)
		if err != nil {
			return err
		}
		if !ok {
			w.gone = true
			return nil
		}
	}
	return nil
}

// commit runs ops if the log is still this run's; retried while etcd is
// unavailable.
func (w *logWriter) commit(ops []clientv3.Op) (bool, error) {
	for attempt := 0; ; attempt++ {
		ctx, cancel := w.l.s.opCtx(w.ctx)
		resp, err := w.l.s.cli.Txn(ctx).If(clientv3.Compare(clientv3.Value(w.base+"m"), "=", w.run)).Then(ops...).Commit()
		cancel()
		if err == nil {
			w.l.s.wrote(resp.Header.Revision)
			return resp.Succeeded, nil
		}
		if !isUnavailable(err) || w.ctx.Err() != nil {
			return false, w.l.s.wrap(err, "write log")
		}
		if backoff(w.ctx, attempt) != nil {
			return false, w.l.s.wrap(err, "write log")
		}
	}
}

type logDone struct {
	Parts int   `json:"parts"`
	Start int64 `json:"start"`
}

// finish marks the log finished (ending every Follow), then compacts it.
func (w *logWriter) finish() error {
	if w.gone {
		return nil
	}
	ok, err := w.commit([]clientv3.Op{clientv3.OpPut(w.base+"d", "")})
	if err != nil || !ok {
		return err
	}
	return w.compact()
}

// compact rewrites the chunks as parts of at most 1 MiB, then switches d
// to them and deletes the chunks in one transaction: a reader sees either
// the chunks or the parts.
func (w *logWriter) compact() error {
	if len(w.stored) <= 1 {
		return nil
	}
	ctx, cancel := w.l.s.opCtx(w.ctx)
	resp, err := w.l.s.cli.Get(ctx, w.base+"c/", clientv3.WithPrefix())
	cancel()
	if err != nil {
		return w.l.s.wrap(err, "compact log")
	}
	snap := parseLog(w.base, resp.Kvs)
	data, start := snap.content()
	n := 0
	for off := 0; off < len(data) || n == 0; off += logPartBytes {
		part := data[off:min(off+logPartBytes, len(data))]
		ok, err := w.commit([]clientv3.Op{clientv3.OpPut(fmt.Sprintf("%sp/%04d", w.base, n), string(part))})
		if err != nil || !ok {
			return err
		}
		n++
	}
	v, err := json.Marshal(logDone{Parts: n, Start: start})
	if err != nil {
		return err
	}
	_, err = w.commit([]clientv3.Op{
		clientv3.OpDelete(w.base+"c/", clientv3.WithPrefix()),
		clientv3.OpPut(w.base+"d", string(v)),
	})
	return err
}

// Close flushes what is pending, marks the log finished and compacts it,
// giving up after a bounded time if etcd stays away.
func (w *logWriter) Close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil
	}
	w.closed = true
	w.mu.Unlock()
	close(w.closing)
	t := time.NewTimer(3 * w.l.s.opts.OpTimeout)
	defer t.Stop()
	select {
	case <-w.done:
	case <-t.C:
		w.cancel()
		<-w.done
	}
	w.cancel()
	w.l.s.logWriters.Delete(w.base)
	return w.err
}

// logSnap is a log as one range read found it.
type logSnap struct {
	run     string
	exists  bool
	done    bool
	compact *logDone
	chunks  []logChunk
	parts   [][]byte
}

type logChunk struct {
	off  int64 // of its first byte in the whole output
	data []byte
}

func parseLog(base string, kvs []*mvccpb.KeyValue) logSnap {
	var s logSnap
	for _, kv := range kvs {
		name := strings.TrimPrefix(string(kv.Key), base)
		switch {
		case name == "m":
			s.run, s.exists = string(kv.Value), true
		case name == "d":
			s.done = true
			if len(kv.Value) > 0 {
				var d logDone
				if json.Unmarshal(kv.Value, &d) == nil {
					s.compact = &d
				}
			}
		case strings.HasPrefix(name, "c/"):
			if c, ok := parseChunk(name, kv.Value); ok {
				s.chunks = append(s.chunks, c)
			}
		case strings.HasPrefix(name, "p/"):
			s.parts = append(s.parts, kv.Value)
		}
	}
	return s
}

func parseChunk(name string, v []byte) (logChunk, bool) {
	if _, err := strconv.ParseInt(strings.TrimPrefix(name, "c/"), 10, 64); err != nil || len(v) < 8 {
		return logChunk{}, false
	}
	return logChunk{off: int64(binary.BigEndian.Uint64(v)), data: v[8:]}, true
}

// content is the stored output and the offset of its first byte (> 0:
// older output was dropped).
func (s *logSnap) content() ([]byte, int64) {
	if s.compact != nil && len(s.parts) >= s.compact.Parts {
		return bytes.Join(s.parts[:s.compact.Parts], nil), s.compact.Start
	}
	var b []byte
	for _, c := range s.chunks {
		b = append(b, c.data...)
	}
	if len(s.chunks) == 0 {
		return nil, 0
	}
	return b, s.chunks[0].off
}

// shown is what readers get of data: the last max bytes from a line
// start, and whether the notice goes above it.
func shown(data []byte, max int64, truncated bool) ([]byte, bool) {
	if int64(len(data)) <= max && !truncated {
		return data, false
	}
	cut := int64(0)
	if int64(len(data)) > max {
		cut = int64(len(data)) - max
	}
	if cut == 0 || data[cut-1] != '\n' {
		if i := bytes.IndexByte(data[cut:], '\n'); i >= 0 && cut+int64(i)+1 < int64(len(data)) {
			cut += int64(i) + 1
		}
	}
	return data[cut:], true
}

func (l *Logs) snapshot(ctx context.Context, base string) (logSnap, int64, error) {
	gctx, cancel := l.s.opCtx(ctx)
	defer cancel()
	resp, err := l.s.cli.Get(gctx, base, clientv3.WithPrefix())
	if err != nil {
		return logSnap{}, 0, l.s.wrap(err, "read log")
	}
	return parseLog(base, resp.Kvs), resp.Header.Revision, nil
}

// Read returns the stored log: the last MaxBytes bytes, under the notice
// line when older output was dropped.
func (l *Logs) Read(ctx context.Context, ref pipeline.LogRef) ([]byte, error) {
	base, err := l.base(ref)
	if err != nil {
		return nil, l.s.wrap(err, "read log")
	}
	snap, _, err := l.snapshot(ctx, base)
	if err != nil {
		return nil, err
	}
	if !snap.exists {
		return nil, fmt.Errorf("etcdstore: log of %s build %d stage %d: %w", ref.Pipeline, ref.Build, ref.Stage, pipeline.ErrNotFound)
	}
	data, start := snap.content()
	data, notice := shown(data, l.opts.MaxBytes, start > 0)
	if !notice {
		return data, nil
	}
	return append([]byte(l.Notice()+"\n"), data...), nil
}

// Finish marks ref's log finished if it exists and is not already.
func (l *Logs) Finish(ctx context.Context, ref pipeline.LogRef) error {
	base, err := l.base(ref)
	if err != nil {
		return l.s.wrap(err, "finish log")
	}
	cctx, cancel := l.s.opCtx(ctx)
	defer cancel()
	_, err = l.s.cli.Txn(cctx).If(
		clientv3.Compare(clientv3.CreateRevision(base+"m"), ">", 0),
		clientv3.Compare(clientv3.CreateRevision(base+"d"), "=", 0),
	).Then(clientv3.OpPut(base+"d", "")).Commit()
	return l.s.wrap(err, "finish log")
}

// DeleteBuild removes the logs of one build.
func (l *Logs) DeleteBuild(ctx context.Context, key string, build int) error {
	owner, repo, _ := strings.Cut(key, "/")
	pk, err := pipelineKey(owner, repo)
	if err == nil {
		err = checkNumber(build)
	}
	if err != nil {
		return l.s.wrap(err, "delete logs")
	}
	return l.deletePrefix(ctx, l.s.logsBuildPrefix(pk, build))
}

// DeletePipeline removes the logs of every build of a pipeline.
func (l *Logs) DeletePipeline(ctx context.Context, key string) error {
	owner, repo, _ := strings.Cut(key, "/")
	pk, err := pipelineKey(owner, repo)
	if err != nil {
		return l.s.wrap(err, "delete logs")
	}
	return l.deletePrefix(ctx, l.s.logsPipelinePrefix(pk))
}

func (l *Logs) deletePrefix(ctx context.Context, prefix string) error {
	dctx, cancel := l.s.opCtx(ctx)
	defer cancel()
	resp, err := l.s.cli.Delete(dctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return l.s.wrap(err, "delete logs")
	}
	l.s.wrote(resp.Header.Revision)
	return nil
}

// Follow calls fn with each line of the log (the lines Read returns), then
// with each new line as it is written, until the log is finished or
// replaced by a new run (nil), deleted (ErrNotFound), ctx ends or fn
// fails. A log that does not exist yet is ErrNotFound.
func (l *Logs) Follow(ctx context.Context, ref pipeline.LogRef, fn func(line []byte) error) error {
	base, err := l.base(ref)
	if err != nil {
		return l.s.wrap(err, "follow log")
	}
	f := &logFollower{l: l, base: base, fn: fn}
	sub, _ := l.s.hub.subscribe(base) // nil when the fan-out is off: poll
	defer func() {
		if sub != nil {
			sub.close()
		}
	}()
	snap, rev, err := l.snapshot(ctx, base)
	if err != nil {
		return err
	}
	if !snap.exists {
		return fmt.Errorf("etcdstore: log of %s build %d stage %d: %w", ref.Pipeline, ref.Build, ref.Stage, pipeline.ErrNotFound)
	}
	f.run = snap.run
	data, start := snap.content()
	f.off = start + int64(len(data))
	data, notice := shown(data, l.opts.MaxBytes, start > 0)
	if notice {
		if err := fn([]byte(l.Notice())); err != nil {
			return err
		}
	}
	if err := f.feed(data); err != nil {
		return err
	}
	if snap.done {
		return f.flush()
	}
	poll := time.NewTicker(l.opts.PollInterval)
	defer poll.Stop()
	for {
		var lost <-chan struct{}
		var events <-chan hubEvent
		if sub != nil {
			lost, events = sub.lost, sub.ch
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case ev := <-events:
			if ev.kv.ModRevision <= rev {
				continue
			}
			end, err := f.event(ev)
			if end || err != nil {
				return err
			}
			continue
		case <-lost:
			sub.close()
			sub, _ = l.s.hub.subscribe(base)
		case <-poll.C:
			if sub != nil {
				continue // the watch tells
			}
			sub, _ = l.s.hub.subscribe(base)
		}
		// Read again (the watch broke, this follower fell behind, or
		// polling) and go on from the next chunk.
		snap, rev, err = l.snapshot(ctx, base)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		end, err := f.resync(snap)
		if end || err != nil {
			return err
		}
	}
}

// logFollower tracks one Follow's position.
type logFollower struct {
	l    *Logs
	base string
	run  string
	fn   func([]byte) error
	off  int64  // offset of the next byte expected
	line []byte // partial line
}

// event applies one watched event; end says Follow is over.
func (f *logFollower) event(ev hubEvent) (bool, error) {
	name := strings.TrimPrefix(string(ev.kv.Key), f.base)
	switch {
	case name == "m" && ev.del:
		return true, fmt.Errorf("etcdstore: log deleted: %w", pipeline.ErrNotFound)
	case name == "m" && string(ev.kv.Value) != f.run:
		return true, f.flush() // a new run of the stage replaced it
	case name == "d" && !ev.del:
		return true, f.flush()
	case strings.HasPrefix(name, "c/") && !ev.del:
		c, ok := parseChunk(name, ev.kv.Value)
		if ok {
			return false, f.chunk(c)
		}
	}
	return false, nil
}

// resync goes on from a fresh read.
func (f *logFollower) resync(s logSnap) (bool, error) {
	if !s.exists {
		return true, fmt.Errorf("etcdstore: log deleted: %w", pipeline.ErrNotFound)
	}
	if s.run != f.run {
		return true, f.flush()
	}
	if s.compact != nil {
		// Compacted while this follower was away: go on from the parts.
		data, start := s.content()
		if err := f.chunk(logChunk{off: start, data: data}); err != nil {
			return true, err
		}
		return true, f.flush()
	}
	for _, c := range s.chunks {
		if err := f.chunk(c); err != nil {
			return true, err
		}
	}
	return s.done, f.flushIf(s.done)
}

// chunk feeds the part of c not seen yet, with the notice first when
// output between was dropped.
func (f *logFollower) chunk(c logChunk) error {
	end := c.off + int64(len(c.data))
	if end <= f.off {
		return nil
	}
	data := c.data
	if c.off > f.off {
		if err := f.flush(); err != nil {
			return err
		}
		if err := f.fn([]byte(f.l.Notice())); err != nil {
			return err
		}
	} else {
		data = data[f.off-c.off:]
	}
	f.off = end
	return f.feed(data)
}

func (f *logFollower) flushIf(done bool) error {
	if !done {
		return nil
	}
	return f.flush()
}

// feed hands complete lines to fn and keeps a partial last line.
func (f *logFollower) feed(data []byte) error {
	f.line = append(f.line, data...)
	for {
		i := bytes.IndexByte(f.line, '\n')
		if i < 0 {
			if len(f.line) < logMaxLine {
				return nil
			}
			i = logMaxLine
		}
		if err := f.fn(f.line[:i]); err != nil {
			return err
		}
		if i < len(f.line) && f.line[i] == '\n' {
			i++
		}
		f.line = f.line[i:]
	}
}

// flush hands a last line without newline to fn.
func (f *logFollower) flush() error {
	if len(f.line) == 0 {
		return nil
	}
	line := f.line
	f.line = nil
	return f.fn(line)
}
