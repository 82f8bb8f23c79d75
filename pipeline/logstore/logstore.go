// Package logstore keeps stage logs as files under the data dir. It
// implements pipeline.LogStore.
//
// Layout: <dir>/<pipeline key, "/" escaped as %2F>/<build>/<stage>.log.
// Each stage's output is kept in two segments, <stage>.log (being written)
// and <stage>.log.1 (the one before): when the current segment grows past
// the cap it becomes the previous one, dropping the older previous one.
// Readers see the last MaxBytes bytes of the two, cut at a line start, under
// a first line saying the log was truncated. A <stage>.done file marks a
// finished log, so a Follow started after a restart of the process ends too.
//
// Follow wakes on in-process notifications from the writer and also polls
// the files, so it works when the writer is another process.
package logstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kontinuous/kontinuous/pipeline"
)

// DefaultMaxBytes is the per-stage cap when Options.MaxBytes is not set.
const DefaultMaxBytes = 4 << 20

// maxLine is the longest line Follow hands to fn; longer ones are split.
const maxLine = 64 << 10

// Options configures Files.
type Options struct {
	// MaxBytes is how much of each stage's output is kept (the tail);
	// default DefaultMaxBytes.
	MaxBytes int64
	// PollInterval is how often Follow looks at the files for changes made
	// by another process; default 250ms.
	PollInterval time.Duration
}

// Files is a pipeline.LogStore on the local file system.
type Files struct {
	dir  string
	max  int64
	poll time.Duration

	mu   sync.Mutex
	logs map[string]*entry // by base path, while a writer or reader uses it
}

var _ pipeline.LogStore = (*Files)(nil)

// entry coordinates the writer and readers of one log in this process.
type entry struct {
	users int // guarded by Files.mu

	// rot is held for writing while the writer swaps segments and for
	// reading while a reader opens them, so readers see a consistent pair.
	rot sync.RWMutex

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every change
	writing bool
}

// New returns a store keeping logs under dir, creating it if needed.
func New(dir string, opts Options) (*Files, error) {
	if dir == "" {
		return nil, pipeline.Invalid("dir", "log directory is empty")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("logstore: %w", err)
	}
	if err := os.MkdirAll(abs, 0o750); err != nil {
		return nil, fmt.Errorf("logstore: create %s: %w", abs, err)
	}
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = DefaultMaxBytes
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = 250 * time.Millisecond
	}
	return &Files{dir: abs, max: opts.MaxBytes, poll: opts.PollInterval, logs: map[string]*entry{}}, nil
}

// Notice is the first line of a log whose older output was dropped.
func (f *Files) Notice() string {
	return fmt.Sprintf("[kontinuous] log truncated: only the last %d bytes of this stage's output are kept", f.max)
}

var namePart = regexp.MustCompile(`^[A-Za-z0-9._-]{1,100}$`)

// pipelineDir returns the directory of a pipeline key ("owner/repo").
func (f *Files) pipelineDir(key string) (string, error) {
	owner, repo, ok := strings.Cut(key, "/")
	for _, p := range []string{owner, repo} {
		if !ok || !namePart.MatchString(p) || p == "." || p == ".." {
			return "", pipeline.Invalid("pipeline", "%q is not an owner/repo key", key)
		}
	}
	return filepath.Join(f.dir, url.PathEscape(key)), nil
}

func (f *Files) buildDir(key string, build int) (string, error) {
	dir, err := f.pipelineDir(key)
	if err != nil {
		return "", err
	}
	if build < 1 {
		return "", pipeline.Invalid("build", "build number %d is not positive", build)
	}
	return filepath.Join(dir, strconv.Itoa(build)), nil
}

// base returns the path of ref's files without their extension.
func (f *Files) base(ref pipeline.LogRef) (string, error) {
	dir, err := f.buildDir(ref.Pipeline, ref.Build)
	if err != nil {
		return "", err
	}
	if ref.Stage < 0 {
		return "", pipeline.Invalid("stage", "stage index %d is negative", ref.Stage)
	}
	return filepath.Join(dir, strconv.Itoa(ref.Stage)), nil
}

func (f *Files) acquire(base string) *entry {
	f.mu.Lock()
	defer f.mu.Unlock()
	e := f.logs[base]
	if e == nil {
		e = &entry{changed: make(chan struct{})}
		f.logs[base] = e
	}
	e.users++
	return e
}

func (f *Files) release(base string, e *entry) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if e.users--; e.users == 0 {
		delete(f.logs, base)
	}
}

// notifyUnder wakes the readers of every log under dir.
func (f *Files) notifyUnder(dir string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for base, e := range f.logs {
		if strings.HasPrefix(base, dir+string(filepath.Separator)) {
			e.notify()
		}
	}
}

func (e *entry) changes() <-chan struct{} {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.changed
}

func (e *entry) notify() {
	e.mu.Lock()
	defer e.mu.Unlock()
	close(e.changed)
	e.changed = make(chan struct{})
}

// Create opens ref's log for writing, removing an older log of the same
// stage. Only one writer per log may be open in a process (ErrConflict).
func (f *Files) Create(ctx context.Context, ref pipeline.LogRef) (io.WriteCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	base, err := f.base(ref)
	if err != nil {
		return nil, err
	}
	e := f.acquire(base)
	e.mu.Lock()
	busy := e.writing
	e.writing = true
	e.mu.Unlock()
	if busy {
		f.release(base, e)
		return nil, fmt.Errorf("logstore: log of %s build %d stage %d is being written: %w", ref.Pipeline, ref.Build, ref.Stage, pipeline.ErrConflict)
	}
	e.rot.Lock() // readers see the old log or the new one, never neither
	file, err := f.createFiles(base)
	e.rot.Unlock()
	if err != nil {
		e.mu.Lock()
		e.writing = false
		e.mu.Unlock()
		f.release(base, e)
		return nil, err
	}
	e.notify()
	return &writer{f: f, base: base, e: e, file: file}, nil
}

func (f *Files) createFiles(base string) (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(base), 0o750); err != nil {
		return nil, fmt.Errorf("logstore: %w", err)
	}
	// Remove rather than truncate, so a reader of the old log sees a new
	// file and not a shrunken one.
	for _, p := range []string{base + ".done", base + ".log.1", base + ".log"} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("logstore: %w", err)
		}
	}
	file, err := os.OpenFile(base+".log", os.O_CREATE|os.O_EXCL|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("logstore: %w", err)
	}
	return file, nil
}

// writer appends to one log, swapping segments past the cap.
type writer struct {
	f    *Files
	base string
	e    *entry

	mu     sync.Mutex
	file   *os.File
	size   int64
	closed bool
}

func (w *writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return 0, errors.New("logstore: write to a closed log")
	}
	n := len(p)
	if limit := w.f.max + 1; int64(len(p)) > limit {
		// Only the tail can be kept; writing more than cap+1 bytes would
		// be dropped by the next swap anyway.
		p = p[int64(len(p))-limit:]
	}
	m, err := w.file.Write(p)
	w.size += int64(m)
	if m > 0 {
		w.e.notify()
	}
	if err != nil {
		return 0, fmt.Errorf("logstore: %w", err)
	}
	if w.size > w.f.max {
		if err := w.swap(); err != nil {
			return 0, err
		}
	}
	return n, nil
}

// swap makes the current segment the previous one and starts a new one.
func (w *writer) swap() error {
	w.e.rot.Lock()
	defer w.e.rot.Unlock()
	if err := w.file.Close(); err != nil {
		return fmt.Errorf("logstore: %w", err)
	}
	if err := os.Rename(w.base+".log", w.base+".log.1"); err != nil {
		return fmt.Errorf("logstore: %w", err)
	}
	file, err := os.OpenFile(w.base+".log", os.O_CREATE|os.O_TRUNC|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("logstore: %w", err)
	}
	w.file, w.size = file, 0
	return nil
}

// Close marks the log finished, which ends every Follow of it.
func (w *writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil
	}
	w.closed = true
	err := w.file.Close()
	// The build may have been deleted while it ran: nothing to mark then.
	if derr := os.WriteFile(w.base+".done", nil, 0o640); derr != nil && !errors.Is(derr, fs.ErrNotExist) && err == nil {
		err = derr
	}
	w.e.mu.Lock()
	w.e.writing = false
	w.e.mu.Unlock()
	w.e.notify()
	w.f.release(w.base, w.e)
	if err != nil {
		return fmt.Errorf("logstore: %w", err)
	}
	return nil
}

// Finish marks ref's log finished without writing to it, so that Follow
// ends. The engine calls it for a stage whose writer died with a previous
// process. A missing log is not an error.
func (f *Files) Finish(ctx context.Context, ref pipeline.LogRef) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	base, err := f.base(ref)
	if err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Dir(base)); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err := os.WriteFile(base+".done", nil, 0o640); err != nil {
		return fmt.Errorf("logstore: %w", err)
	}
	f.notifyUnder(filepath.Dir(base))
	return nil
}

// open returns the current and previous segments of a log, either nil when
// missing, and ErrNotFound when both are.
func (f *Files) open(e *entry, base string, ref pipeline.LogRef) (cur, prev *os.File, err error) {
	e.rot.RLock()
	defer e.rot.RUnlock()
	// Current first: if another process swaps in between, the previous
	// segment opened next is the current one just read (caught below).
	cur, err = os.Open(base + ".log")
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, nil, fmt.Errorf("logstore: %w", err)
	}
	prev, err = os.Open(base + ".log.1")
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		closeFile(cur)
		return nil, nil, fmt.Errorf("logstore: %w", err)
	}
	if cur == nil && prev == nil {
		return nil, nil, fmt.Errorf("logstore: log of %s build %d stage %d: %w", ref.Pipeline, ref.Build, ref.Stage, pipeline.ErrNotFound)
	}
	if cur != nil && prev != nil && sameFile(cur, prev) {
		closeFile(prev)
		prev = nil
	}
	return cur, prev, nil
}

func closeFile(f *os.File) {
	if f != nil {
		// Read-only: closing cannot lose data.
		_ = f.Close()
	}
}

func sameFile(a, b *os.File) bool {
	sa, err := a.Stat()
	if err != nil {
		return false
	}
	sb, err := b.Stat()
	return err == nil && os.SameFile(sa, sb)
}

func readRest(f *os.File) ([]byte, error) {
	if f == nil {
		return nil, nil
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return nil, fmt.Errorf("logstore: %w", err)
	}
	return b, nil
}

// tail returns the last max bytes of data from a line start, and whether
// anything was dropped.
func tail(data []byte, max int64) ([]byte, bool) {
	if int64(len(data)) <= max {
		return data, false
	}
	cut := int64(len(data)) - max
	if data[cut-1] != '\n' {
		if i := bytes.IndexByte(data[cut:], '\n'); i >= 0 && cut+int64(i)+1 < int64(len(data)) {
			cut += int64(i) + 1
		}
	}
	return data[cut:], true
}

// Read returns the stored log: the last MaxBytes bytes, under the notice
// line when older output was dropped.
func (f *Files) Read(ctx context.Context, ref pipeline.LogRef) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	base, err := f.base(ref)
	if err != nil {
		return nil, err
	}
	e := f.acquire(base)
	defer f.release(base, e)
	cur, prev, err := f.open(e, base, ref)
	if err != nil {
		return nil, err
	}
	defer closeFile(cur)
	defer closeFile(prev)
	older, err := readRest(prev)
	if err != nil {
		return nil, err
	}
	newer, err := readRest(cur)
	if err != nil {
		return nil, err
	}
	data, cut := tail(append(older, newer...), f.max)
	if !cut {
		return data, nil
	}
	return append([]byte(f.Notice()+"\n"), data...), nil
}

// Follow calls fn with each line of the log (the same lines Read returns),
// then with each new line as it is written, until the log is finished, ctx
// ends, fn fails or the log is deleted (ErrNotFound). A log that does not
// exist yet is ErrNotFound. A reader that falls more than MaxBytes behind
// the writer gets the notice line where output was skipped.
func (f *Files) Follow(ctx context.Context, ref pipeline.LogRef, fn func(line []byte) error) error {
	base, err := f.base(ref)
	if err != nil {
		return err
	}
	e := f.acquire(base)
	defer f.release(base, e)

	changed := e.changes()
	finished := exists(base + ".done")
	cur, prev, err := f.open(e, base, ref)
	if err != nil {
		return err
	}
	fl := &follower{f: f, e: e, base: base, fn: fn, cur: cur}
	defer func() { closeFile(fl.cur) }()
	older, err := readRest(prev)
	closeFile(prev)
	if err != nil {
		return err
	}
	newer, err := readRest(cur)
	if err != nil {
		return err
	}
	data, cut := tail(append(older, newer...), f.max)
	if cut {
		if err := fn([]byte(f.Notice())); err != nil {
			return err
		}
	}
	if err := fl.feed(data); err != nil {
		return err
	}

	ticker := time.NewTicker(f.poll)
	defer ticker.Stop()
	for {
		ended, err := fl.drain()
		if err != nil {
			return err
		}
		if finished || ended {
			return fl.flush()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		case <-ticker.C:
		}
		// Look at the marker before reading, so that everything written
		// before Close is read after it is seen.
		changed = e.changes()
		finished = exists(base + ".done")
	}
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// follower tracks one Follow's position in the current segment.
type follower struct {
	f    *Files
	e    *entry
	base string
	fn   func([]byte) error
	cur  *os.File // nil until a current segment exists
	line []byte   // partial line
}

// feed hands complete lines of data to fn and keeps a partial last line.
func (fl *follower) feed(data []byte) error {
	fl.line = append(fl.line, data...)
	for {
		i := bytes.IndexByte(fl.line, '\n')
		if i < 0 {
			if len(fl.line) < maxLine {
				return nil
			}
			i = maxLine
		}
		if err := fl.fn(fl.line[:i]); err != nil {
			return err
		}
		if i < len(fl.line) && fl.line[i] == '\n' {
			i++
		}
		fl.line = fl.line[i:]
	}
}

// flush hands a last line without newline to fn.
func (fl *follower) flush() error {
	if len(fl.line) == 0 {
		return nil
	}
	line := fl.line
	fl.line = nil
	return fl.fn(line)
}

// drain reads what was appended and follows segment swaps. ended is true
// when the log was replaced by a new run of the stage.
func (fl *follower) drain() (ended bool, err error) {
	for {
		b, err := readRest(fl.cur)
		if err != nil {
			return false, err
		}
		if err := fl.feed(b); err != nil {
			return false, err
		}
		next, skipped, ended, err := fl.next()
		if err != nil || ended || next == nil {
			return ended, err
		}
		// Everything written to the old segment was written before the
		// swap: read its rest before moving on.
		b, err = readRest(fl.cur)
		closeFile(fl.cur)
		fl.cur = next
		if err != nil {
			return false, err
		}
		if err := fl.feed(b); err != nil {
			return false, err
		}
		if skipped {
			if err := fl.flush(); err != nil {
				return false, err
			}
			if err := fl.fn([]byte(fl.f.Notice())); err != nil {
				return false, err
			}
		}
	}
}

// next opens the current segment if it is not the one being read. skipped
// says whether a whole segment was swapped out unread; ended whether the
// log was replaced by a new one.
func (fl *follower) next() (next *os.File, skipped, ended bool, err error) {
	fl.e.rot.RLock()
	defer fl.e.rot.RUnlock()
	st, err := os.Stat(fl.base + ".log")
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if !exists(filepath.Dir(fl.base)) {
			return nil, false, false, fmt.Errorf("logstore: log deleted: %w", pipeline.ErrNotFound)
		}
		return nil, false, false, nil // another process is swapping segments
	case err != nil:
		return nil, false, false, fmt.Errorf("logstore: %w", err)
	}
	var mine os.FileInfo
	if fl.cur != nil {
		if mine, err = fl.cur.Stat(); err != nil {
			return nil, false, false, fmt.Errorf("logstore: %w", err)
		}
		if os.SameFile(st, mine) {
			return nil, false, false, nil
		}
		prev, err := os.Stat(fl.base + ".log.1")
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return nil, false, true, nil // a new run of the stage removed it
		case err != nil:
			return nil, false, false, fmt.Errorf("logstore: %w", err)
		}
		skipped = !os.SameFile(prev, mine)
	}
	next, err = os.Open(fl.base + ".log")
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, false, nil
	}
	if err != nil {
		return nil, false, false, fmt.Errorf("logstore: %w", err)
	}
	return next, skipped, false, nil
}

// DeleteBuild removes the logs of one build. A missing build is not an
// error.
func (f *Files) DeleteBuild(ctx context.Context, key string, build int) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	dir, err := f.buildDir(key, build)
	if err != nil {
		return err
	}
	return f.remove(dir)
}

// DeletePipeline removes the logs of every build of a pipeline.
func (f *Files) DeletePipeline(ctx context.Context, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	dir, err := f.pipelineDir(key)
	if err != nil {
		return err
	}
	return f.remove(dir)
}

func (f *Files) remove(dir string) error {
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("logstore: %w", err)
	}
	f.notifyUnder(dir)
	return nil
}
