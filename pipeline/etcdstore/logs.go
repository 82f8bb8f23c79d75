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

	"github.com/klauspost/compress/s2"
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
//	d              the log is finished: empty (Finish, or an older
//	               server's writer) or a JSON {"parts": n, "start":
//	               offset of the parts' first byte, "enc": "s2"}
//	p/<n>          the finished log's parts: up to 1 MiB of output each,
//	               s2-compressed when d says so; valid once d names them
//
// The writer buffers the newest MaxBytes of output in memory (pooled
// 64 KiB blocks) and flushes it as chunks every FlushInterval, in
// transactions that write only while m still names its run (a deleted
// build's log never comes back). Only the tail is kept: chunks older than
// MaxBytes are deleted as new ones land, and output that newer output
// pushed out of the tail before it was flushed is never sent (readers see
// the truncation notice). So a stage printing as fast as it can costs
// etcd at most MaxBytes per FlushInterval, and Write never waits for etcd.
// When the stage ends, the kept tail is written as compressed parts, in as
// few transactions as the request limit allows (one for most logs), with
// d and the deletion of the chunks in the last: from memory, plus a read
// of the stored chunks still in the tail if there are any.
//
// Followers of Cached.Logs subscribe to the cache's one prefix watch,
// fanned out in memory, so a follower costs no etcd watch; followers of a
// plain Store.Logs (or while the cache's watch restarts) poll once per
// PollInterval (1s). A follower keeps the parts it sees written and goes
// on from them when d names them (or reads them, if some came before it
// started).

// LogOptions tune Logs. Zero values take the defaults.
type LogOptions struct {
	// MaxBytes is how much of each stage's output is kept (the tail);
	// default 4 MiB, as the file store.
	MaxBytes int64
	// ChunkBytes is the largest chunk (default 64 KiB).
	ChunkBytes int
	// FlushInterval is how often pending output is written (default
	// 250ms): the longest a follower on another server waits for a line.
	FlushInterval time.Duration
	// PollInterval is how often a follower reads when the watch fan-out
	// is not running (default 1s).
	PollInterval time.Duration
}

const (
	logPartBytes     = 1 << 20 // compacted part size: under etcd's 1.5 MiB request limit
	logChunksPerTxn  = 8       // chunk puts per transaction (≤ 512 KiB by default)
	logMaxLine       = 64 << 10
	logPartsInFlight = 4 // part transactions sent at once when a log finishes
	logPartEnc       = "s2"
)

// Logs is a pipeline.LogStore in etcd. Get it with Store.Logs or
// Cached.Logs.
type Logs struct {
	s    *Store
	hub  *hub // feeds Follow; nil: Follow polls
	opts LogOptions
}

var _ pipeline.LogStore = (*Logs)(nil)

// Logs returns the etcd log store sharing s's client; its followers read
// every PollInterval (Cached.Logs feeds them from the cache's watch).
func (s *Store) Logs(opts LogOptions) *Logs {
	return s.logs(opts, nil)
}

// logs is the log store whose followers h feeds (nil: they poll).
func (s *Store) logs(opts LogOptions, h *hub) *Logs {
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
	return &Logs{s: s, hub: h, opts: opts}
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
		closing: make(chan struct{}), done: make(chan struct{})}
	go w.flusher()
	return w, nil
}

type storedChunk struct {
	seq  int64
	off  int64 // of its first byte in the whole output
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
	pending logBuf // output not taken by the flusher yet (its newest MaxBytes); ends at written
	written int64  // bytes written so far
	closed  bool

	closing chan struct{}
	done    chan struct{}
	err     error // the flusher's last error, read after done

	// owned by the flusher
	seq       int64         // of the next chunk
	stored    []storedChunk // the chunks in etcd, oldest first, contiguous
	total     int64         // their bytes
	gone      bool          // m no longer names this run: the log was replaced or deleted
	deletedTo int64         // chunks below this seq are deleted
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
		p = p[len(p)-max:]
	}
	w.pending.keep(max - len(p))
	w.pending.write(p)
	return n, nil
}

// take hands the pending output to the flusher, with the offset of its
// first byte and whether the writer is closed.
func (w *logWriter) take() (logBuf, int64, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	data := w.pending
	w.pending = logBuf{}
	return data, w.written - int64(data.size), w.closed
}

// state says how many bytes were written so far and whether the writer is
// closed.
func (w *logWriter) state() (int64, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.written, w.closed
}

func (w *logWriter) flusher() {
	defer close(w.done)
	t := time.NewTicker(w.l.opts.FlushInterval)
	defer t.Stop()
	closing := w.closing
	for {
		select {
		case <-t.C:
		case <-closing:
			closing = nil
		}
		data, off, closed := w.take()
		if !closed {
			var err error
			if off, err = w.flush(&data, off); err != nil {
				w.err = err
			}
			if data.size == 0 {
				data.release()
				continue
			}
			// The writer closed during the flush: what was not stored
			// yet goes, with the last output, straight into the parts.
			last, lastOff, _ := w.take()
			if lastOff != off+int64(data.size) || last.skip > 0 {
				data.release() // the last output alone fills the tail
				data, off = last, lastOff
			} else {
				data.appendBuf(&last)
				n := data.size
				data.keep(int(w.l.opts.MaxBytes))
				off += int64(n - data.size)
			}
		}
		if err := w.finish(&data, off); err != nil {
			w.err = err
		}
		data.release()
		return
	}
}

// end is the offset after the last stored chunk.
func (w *logWriter) end() int64 {
	if len(w.stored) == 0 {
		return -1
	}
	c := w.stored[len(w.stored)-1]
	return c.off + c.size
}

// flush writes data (starting at offset off) as chunks, a transaction of
// logChunksPerTxn chunks at a time, dropping what it stored, and retrying
// while etcd is unavailable (until the writer's context ends). Before each
// transaction it skips what newer output has already pushed out of the
// kept tail (it would be deleted right away), and it stops when the writer
// closes, leaving in data what it did not store for the final parts. It
// returns the offset of what is left.
func (w *logWriter) flush(data *logBuf, off int64) (int64, error) {
	cb, max := w.l.opts.ChunkBytes, w.l.opts.MaxBytes
	for data.size > 0 && !w.gone {
		written, closed := w.state()
		if closed {
			return off, nil
		}
		if from := written - max; off < from {
			skip := min(from-off, int64(data.size))
			data.drop(int(skip))
			off += skip
			if data.size == 0 {
				break
			}
		}
		if off != w.end() {
			// Output between was dropped: the stored chunks go (the
			// trim below deletes them in this transaction).
			w.stored, w.total = w.stored[:0], 0
		}
		var ops []clientv3.Op
		sent := 0
		for k := 0; k < logChunksPerTxn && sent < data.size; k++ {
			n := min(cb, data.size-sent)
			v := binary.BigEndian.AppendUint64(make([]byte, 0, 8+n), uint64(off))
			v = data.appendTo(v, sent, sent+n)
			ops = append(ops, clientv3.OpPut(chunkKey(w.base, w.seq), string(v)))
			w.stored = append(w.stored, storedChunk{seq: w.seq, off: off, size: int64(n)})
			w.total += int64(n)
			w.seq++
			sent += n
			off += int64(n)
		}
		data.drop(sent)
		// Trim: keep the newest chunks that hold MaxBytes.
		drop := 0
		for drop < len(w.stored)-1 && w.total-w.stored[drop].size >= max {
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
			// Stored or not, unknown: forget every chunk, so that the next
			// transaction deletes them all and the log goes on after a
			// gap (shown as the truncation notice), never with a hole.
			w.stored, w.total = w.stored[:0], 0
			data.release()
			return off, err
		}
		if !ok {
			w.gone = true
		}
	}
	data.release()
	return off, nil
}

// commit runs ops if the log is still this run's; retried while etcd is
// unavailable.
func (w *logWriter) commit(ops []clientv3.Op) (bool, error) {
	resp, err := w.txn(ops)
	if err != nil {
		return false, err
	}
	return resp.Succeeded, nil
}

func (w *logWriter) txn(ops []clientv3.Op) (*clientv3.TxnResponse, error) {
	for attempt := 0; ; attempt++ {
		ctx, cancel := w.l.s.opCtx(w.ctx)
		resp, err := w.l.s.cli.Txn(ctx).If(clientv3.Compare(clientv3.Value(w.base+"m"), "=", w.run)).Then(ops...).Commit()
		cancel()
		if err == nil {
			w.l.s.wrote(resp.Header.Revision)
			return resp, nil
		}
		if !isUnavailable(err) || w.ctx.Err() != nil {
			return nil, w.l.s.wrap(err, "write log")
		}
		if backoff(w.ctx, attempt) != nil {
			return nil, w.l.s.wrap(err, "write log")
		}
	}
}

type logDone struct {
	Parts int    `json:"parts"`
	Start int64  `json:"start"`
	Enc   string `json:"enc,omitempty"` // "s2": each part is compressed (older logs: none)
}

// finish writes the finished log: its kept tail as parts of at most 1 MiB,
// then, in the transaction of the last part, d (which ends every Follow)
// and the deletion of the chunks, so that a reader sees either the chunks
// or the parts. data (from offset off) is the output not stored as chunks;
// the stored chunks still in the tail are read back, and when none is
// (a stage printing fast), the parts come straight from memory.
func (w *logWriter) finish(data *logBuf, off int64) error {
	if w.gone {
		return nil
	}
	end := off + int64(data.size)
	from := max(0, end-w.l.opts.MaxBytes) // where the kept tail starts
	head, start := []byte(nil), off
	if from < off && w.end() == off {
		i := 0
		for i < len(w.stored) && w.stored[i].off+w.stored[i].size <= from {
			i++
		}
		if i < len(w.stored) {
			resp, err := w.txn([]clientv3.Op{clientv3.OpGet(chunkKey(w.base, w.stored[i].seq), clientv3.WithRange(chunkKey(w.base, w.seq)))})
			if err != nil {
				return err
			}
			if !resp.Succeeded {
				return nil // replaced or deleted meanwhile
			}
			var chunks []logChunk
			for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
				if c, ok := parseChunk(strings.TrimPrefix(string(kv.Key), w.base), kv.Value); ok {
					chunks = append(chunks, c)
				}
			}
			head, start = contiguous(chunks)
			if start+int64(len(head)) != off {
				head, start = nil, off // not what was stored: keep the notice honest
			}
		}
	}
	if start < from {
		head, start = head[from-start:], from
	}
	size := len(head) + data.size
	if size == 0 {
		_, err := w.commit([]clientv3.Op{clientv3.OpPut(w.base+"d", "")})
		return err
	}
	n := (size + logPartBytes - 1) / logPartBytes
	v, err := json.Marshal(logDone{Parts: n, Start: start, Enc: logPartEnc})
	if err != nil {
		return err
	}
	// Compress the parts, then put them in as few transactions as hold
	// them under the request limit: one for most logs.
	var groups [][]clientv3.Op
	held := 0
	for k := range n {
		i, j := k*logPartBytes, min((k+1)*logPartBytes, size)
		part := make([]byte, 0, j-i)
		if i < len(head) {
			part = append(part, head[i:min(j, len(head))]...)
		}
		if j > len(head) {
			part = data.appendTo(part, max(i, len(head))-len(head), j-len(head))
		}
		z := s2.Encode(nil, part)
		if len(groups) == 0 || held+len(z) > logPartBytes {
			groups, held = append(groups, nil), 0
		}
		groups[len(groups)-1] = append(groups[len(groups)-1], clientv3.OpPut(fmt.Sprintf("%sp/%04d", w.base, k), string(z)))
		held += len(z)
	}
	// Every group but the last at once (a few transactions in flight),
	// then the last with d.
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		failed error
		lost   bool
		slots  = make(chan struct{}, logPartsInFlight)
	)
	for _, ops := range groups[:len(groups)-1] {
		slots <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-slots; wg.Done() }()
			ok, err := w.commit(ops)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed = err
			}
			lost = lost || !ok
		}()
	}
	wg.Wait()
	if failed != nil || lost {
		return failed
	}
	_, err = w.commit(append(groups[len(groups)-1],
		clientv3.OpDelete(w.base+"c/", clientv3.WithPrefix()),
		clientv3.OpPut(w.base+"d", string(v))))
	return err
}

// Close flushes what is pending and writes the finished log, giving up
// after a bounded time if etcd stays away.
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

// logBlockBytes is the size of the blocks output is buffered in.
const logBlockBytes = 64 << 10

// logBlocks recycles buffer blocks between writers: a stage printing fast
// fills and drops many, and fresh ones would each be zeroed.
var logBlocks = sync.Pool{New: func() any { return new([logBlockBytes]byte) }}

// logBuf is output held in memory: blocks of logBlockBytes, the first
// one's leading skip bytes dropped. Dropping old output frees whole
// blocks and never copies.
type logBuf struct {
	blocks [][]byte // each a *[logBlockBytes]byte from logBlocks, sliced to its content
	skip   int
	size   int // bytes held
}

func (b *logBuf) write(p []byte) {
	b.size += len(p)
	for len(p) > 0 {
		n := len(b.blocks)
		if n == 0 || len(b.blocks[n-1]) == logBlockBytes {
			b.blocks = append(b.blocks, logBlocks.Get().(*[logBlockBytes]byte)[:0])
			n++
		}
		k := min(len(p), logBlockBytes-len(b.blocks[n-1]))
		b.blocks[n-1] = append(b.blocks[n-1], p[:k]...)
		p = p[k:]
	}
}

// drop forgets the oldest n bytes.
func (b *logBuf) drop(n int) {
	n = min(n, b.size)
	b.size -= n
	b.skip += n
	for len(b.blocks) > 0 && b.skip >= len(b.blocks[0]) && (len(b.blocks) > 1 || b.size == 0) {
		b.skip -= len(b.blocks[0])
		logBlocks.Put((*[logBlockBytes]byte)(b.blocks[0][:logBlockBytes]))
		b.blocks[0] = nil
		b.blocks = b.blocks[1:]
	}
}

// keep drops all but the newest max bytes.
func (b *logBuf) keep(max int) {
	if b.size > max {
		b.drop(b.size - max)
	}
}

// release gives every block back.
func (b *logBuf) release() { b.drop(b.size) }

// appendTo appends bytes [i, j) of what b holds to s.
func (b *logBuf) appendTo(s []byte, i, j int) []byte {
	i += b.skip
	j += b.skip
	for _, blk := range b.blocks {
		if i < len(blk) && j > 0 {
			s = append(s, blk[max(i, 0):min(j, len(blk))]...)
		}
		i -= len(blk)
		j -= len(blk)
		if j <= 0 {
			break
		}
	}
	return s
}

// appendBuf moves o's blocks after b's. o must not have skipped bytes.
func (b *logBuf) appendBuf(o *logBuf) {
	b.blocks = append(b.blocks, o.blocks...)
	b.size += o.size
	*o = logBuf{}
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
func (s *logSnap) content() ([]byte, int64, error) {
	if s.compact != nil && len(s.parts) >= s.compact.Parts {
		parts, err := s.compact.decode(s.parts[:s.compact.Parts])
		return bytes.Join(parts, nil), s.compact.Start, err
	}
	b, start := contiguous(s.chunks)
	return b, start, nil
}

// decode returns the parts' output.
func (d *logDone) decode(parts [][]byte) ([][]byte, error) {
	switch d.Enc {
	case "":
		return parts, nil
	case logPartEnc:
		out := make([][]byte, len(parts))
		for i, p := range parts {
			var err error
			if out[i], err = s2.Decode(nil, p); err != nil {
				return nil, fmt.Errorf("etcdstore: log part %d: %w", i, err)
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("etcdstore: log parts in unknown encoding %q", d.Enc)
}

// contiguous joins the last run of chunks that follow each other without a
// gap, and gives the offset of its first byte: output lost between two
// chunks reads as a truncation (with the notice), never as a hole.
func contiguous(cs []logChunk) ([]byte, int64) {
	if len(cs) == 0 {
		return nil, 0
	}
	i, n := len(cs)-1, len(cs[len(cs)-1].data)
	for i > 0 && cs[i-1].off+int64(len(cs[i-1].data)) == cs[i].off {
		i--
		n += len(cs[i].data)
	}
	b := make([]byte, 0, n)
	for _, c := range cs[i:] {
		b = append(b, c.data...)
	}
	return b, cs[i].off
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
	data, start, err := snap.content()
	if err != nil {
		return nil, l.s.wrap(err, "read log")
	}
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
	sub, _ := l.hub.subscribe(base) // nil when the fan-out is off: poll
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
	data, start, err := snap.content()
	if err != nil {
		return l.s.wrap(err, "follow log")
	}
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
			end, reread, err := f.event(ev)
			if end || err != nil {
				return err
			}
			if !reread {
				continue
			}
		case <-lost:
			sub.close()
			sub, _ = l.hub.subscribe(base)
		case <-poll.C:
			if sub != nil {
				continue // the watch tells
			}
			sub, _ = l.hub.subscribe(base)
		}
		// Read again (the watch broke, this follower fell behind, missed
		// a part, or polls) and go on from the next chunk.
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
	// parts seen written since the follower's read, by name ("p/0000"):
	// a writer that closes writes its last output straight into parts
	parts map[string][]byte
}

// event applies one watched event: end says Follow is over, reread that
// the log must be read again to go on.
func (f *logFollower) event(ev hubEvent) (end, reread bool, err error) {
	name := strings.TrimPrefix(string(ev.kv.Key), f.base)
	switch {
	case name == "m" && ev.del:
		return true, false, fmt.Errorf("etcdstore: log deleted: %w", pipeline.ErrNotFound)
	case name == "m" && string(ev.kv.Value) != f.run:
		return true, false, f.flush() // a new run of the stage replaced it
	case name == "d" && !ev.del:
		if len(ev.kv.Value) == 0 {
			return true, false, f.flush() // finished as it stands
		}
		// Finished with parts: go on from them, or read them if some
		// were written before this follower's read.
		var d logDone
		if json.Unmarshal(ev.kv.Value, &d) != nil {
			return true, false, f.flush()
		}
		parts := make([][]byte, d.Parts)
		for i := range parts {
			p, ok := f.parts[fmt.Sprintf("p/%04d", i)]
			if !ok {
				return false, true, nil
			}
			parts[i] = p
		}
		parts, err := d.decode(parts)
		if err != nil {
			return true, false, f.l.s.wrap(err, "follow log")
		}
		off := d.Start
		for _, p := range parts {
			if err := f.chunk(logChunk{off: off, data: p}); err != nil {
				return true, false, err
			}
			off += int64(len(p))
		}
		return true, false, f.flush()
	case strings.HasPrefix(name, "p/") && !ev.del:
		if f.parts == nil {
			f.parts = map[string][]byte{}
		}
		f.parts[name] = ev.kv.Value
	case strings.HasPrefix(name, "c/") && !ev.del:
		c, ok := parseChunk(name, ev.kv.Value)
		if ok {
			return false, false, f.chunk(c)
		}
	}
	return false, false, nil
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
		data, start, err := s.content()
		if err != nil {
			return true, f.l.s.wrap(err, "follow log")
		}
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
