package etcdstore_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/etcdstore"
)

const logWait = 60 * time.Second

var logRef = pipeline.LogRef{Pipeline: "acme/app", Build: 1, Stage: 0}

func logWrite(t *testing.T, w io.Writer, s string) {
	t.Helper()
	if _, err := io.WriteString(w, s); err != nil {
		t.Fatal(err)
	}
}

func logCreate(t *testing.T, l *etcdstore.Logs, r pipeline.LogRef) io.WriteCloser {
	t.Helper()
	w, err := l.Create(t.Context(), r)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func logRead(t *testing.T, l *etcdstore.Logs, r pipeline.LogRef) string {
	t.Helper()
	b, err := l.Read(t.Context(), r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// logFollowing is a Follow running in the background.
type logFollowing struct {
	lines chan string
	done  chan error
}

func logFollow(t *testing.T, ctx context.Context, l *etcdstore.Logs, r pipeline.LogRef) *logFollowing {
	t.Helper()
	f := &logFollowing{lines: make(chan string, 100000), done: make(chan error, 1)}
	go func() {
		f.done <- l.Follow(ctx, r, func(line []byte) error {
			f.lines <- string(line)
			return nil
		})
	}()
	return f
}

func (f *logFollowing) next(t *testing.T) string {
	t.Helper()
	select {
	case l := <-f.lines:
		return l
	case err := <-f.done:
		// A follow of a finished log sends its lines and ends at once:
		// both channels may be ready, and select picks either.
		select {
		case l := <-f.lines:
			f.done <- err // for end
			return l
		default:
		}
		t.Fatalf("Follow ended (%v) while a line was expected", err)
	case <-time.After(logWait):
		t.Fatal("no line")
	}
	return ""
}

func (f *logFollowing) end(t *testing.T) ([]string, error) {
	t.Helper()
	select {
	case err := <-f.done:
		close(f.lines)
		var rest []string
		for l := range f.lines {
			rest = append(rest, l)
		}
		return rest, err
	case <-time.After(logWait):
		t.Fatal("Follow did not end")
	}
	return nil, nil
}

// twoServers are two stores on one etcd and one prefix, as two replicas,
// each behind its read cache; with plainB the second is a plain store
// (sb is nil: its log followers poll).
func twoServers(t *testing.T, plainB bool, lo etcdstore.LogOptions) (sa *etcdstore.Cached, la *etcdstore.Logs, sb *etcdstore.Cached, lb *etcdstore.Logs) {
	t.Helper()
	sa = newStoreWith(t, sharedClient(t), newOpts(prefixOf(t)))
	if plainB {
		return sa, sa.Logs(lo), nil, newPlainWith(t, sharedClient(t), newOpts(prefixOf(t))).Logs(lo)
	}
	sb = newStoreWith(t, sharedClient(t), newOpts(prefixOf(t)))
	return sa, sa.Logs(lo), sb, sb.Logs(lo)
}

func TestEtcdLogWrittenOnOneServerIsReadOnAnother(t *testing.T) {
	_, la, _, lb := twoServers(t, false, etcdstore.LogOptions{})
	if _, err := lb.Read(t.Context(), logRef); !errors.Is(err, pipeline.ErrNotFound) {
		t.Fatalf("read before create: %v, want ErrNotFound", err)
	}
	w := logCreate(t, la, logRef)
	logWrite(t, w, "one\ntwo\n")
	logWrite(t, w, "three")
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got := logRead(t, lb, logRef); got != "one\ntwo\nthree" {
		t.Fatalf("read on B: %q", got)
	}
}

func TestEtcdLogFollowedLiveFromAnotherServerCostsNoWatch(t *testing.T) {
	for _, tc := range []struct {
		name  string
		plain bool // B is a plain store: no read cache, its followers poll
	}{
		{"watch fan-out", false},
		{"polling without the read cache", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, la, sb, lb := twoServers(t, tc.plain, etcdstore.LogOptions{})
			w := logCreate(t, la, logRef)
			logWrite(t, w, "before\n")
			eventually(t, logWait, "chunk stored", func() bool { return strings.Contains(logRead(t, lb, logRef), "before") })
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			var fs []*logFollowing
			for range 20 {
				fs = append(fs, logFollow(t, ctx, lb, logRef))
			}
			if !tc.plain {
				eventually(t, logWait, "followers subscribed", func() bool { return etcdstore.Subscribers(sb) == 20 })
			}
			for _, f := range fs {
				if got := f.next(t); got != "before" {
					t.Fatalf("first line %q", got)
				}
			}
			for i := range 50 {
				logWrite(t, w, fmt.Sprintf("live %d\n", i))
			}
			logWrite(t, w, "last without newline")
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			for _, f := range fs {
				rest, err := f.end(t)
				if err != nil {
					t.Fatal(err)
				}
				if len(rest) != 51 || rest[0] != "live 0" || rest[49] != "live 49" || rest[50] != "last without newline" {
					t.Fatalf("follower got %d lines: %q", len(rest), rest)
				}
			}
			if sb != nil {
				if n := etcdstore.Subscribers(sb); n != 0 {
					t.Errorf("%d subscriptions left after the followers ended", n)
				}
			}
		})
	}
}

func TestEtcdLogKeepsTheTailAndSaysSo(t *testing.T) {
	const max = 1000
	for _, tc := range []struct {
		name  string
		write func(t *testing.T, w io.Writer)
	}{
		{"many small writes", func(t *testing.T, w io.Writer) {
			for i := range 500 {
				logWrite(t, w, fmt.Sprintf("line %03d\n", i))
			}
		}},
		{"one huge write", func(t *testing.T, w io.Writer) {
			var b strings.Builder
			for i := range 500 {
				fmt.Fprintf(&b, "line %03d\n", i)
			}
			logWrite(t, w, b.String())
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			l := s.Logs(etcdstore.LogOptions{MaxBytes: max, ChunkBytes: 64, FlushInterval: time.Millisecond})
			follow := logFollow(t, t.Context(), l, logRef) // not there yet
			if _, err := follow.end(t); !errors.Is(err, pipeline.ErrNotFound) {
				t.Fatalf("follow before create: %v", err)
			}
			w := logCreate(t, l, logRef)
			tc.write(t, w)
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			for _, got := range []string{logRead(t, l, logRef), followAll(t, l)} {
				notice, body, _ := strings.Cut(got, "\n")
				if want := "[kontinuous] log truncated: only the last 1000 bytes of this stage's output are kept"; notice != want {
					t.Fatalf("first line %q, want %q", notice, want)
				}
				if len(body) > max {
					t.Errorf("kept %d bytes, cap %d", len(body), max)
				}
				lines := strings.Split(strings.TrimSuffix(body, "\n"), "\n")
				if len(lines) < 90 {
					t.Fatalf("kept only %d lines", len(lines))
				}
				for i, ln := range lines {
					if want := fmt.Sprintf("line %03d", 500-len(lines)+i); ln != want {
						t.Fatalf("line %d = %q, want %q (the tail, whole lines, in order)", i, ln, want)
					}
				}
			}
			// Finished and compacted: the run id, the done mark and one part.
			keys := rawValues(t, sharedClient(t), prefixOf(t)+"logs/")
			if len(keys) != 3 {
				t.Errorf("%d keys after the stage ended, want 3: %v", len(keys), mapKeys(keys))
			}
		})
	}
}

// followAll follows a finished log and joins its lines.
func followAll(t *testing.T, l *etcdstore.Logs) string {
	t.Helper()
	rest, err := logFollow(t, t.Context(), l, logRef).end(t)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(rest, "\n") + "\n"
}

func mapKeys(m map[string]string) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

func TestEtcdLogOverOneMebibyteIsCompactedIntoPartsUnderTheRequestLimit(t *testing.T) {
	s := newStore(t)
	l := s.Logs(etcdstore.LogOptions{MaxBytes: 3 << 20})
	w := logCreate(t, l, logRef)
	var want strings.Builder
	for i := 0; want.Len() < 5<<19; i++ { // 2.5 MiB
		line := fmt.Sprintf("%07d %s\n", i, strings.Repeat("x", 100))
		want.WriteString(line)
	}
	for s := want.String(); len(s) > 0; {
		n := min(len(s), 4096)
		logWrite(t, w, s[:n])
		s = s[n:]
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got := logRead(t, l, logRef); got != want.String() {
		t.Fatalf("read %d bytes, want %d", len(got), want.Len())
	}
	resp, err := sharedClient(t).Get(t.Context(), prefixOf(t)+"logs/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	parts := 0
	for _, kv := range resp.Kvs {
		if len(kv.Value) > 1<<20 {
			t.Errorf("%s holds %d bytes", kv.Key, len(kv.Value))
		}
		if strings.Contains(string(kv.Key), "/p/") {
			parts++
		}
	}
	if parts != 3 || len(resp.Kvs) != 5 {
		t.Errorf("%d parts in %d keys, want 3 in 5", parts, len(resp.Kvs))
	}
	if got := followAll(t, l); got != want.String() {
		t.Fatalf("follow of the compacted log: %d bytes, want %d", len(got), want.Len())
	}
}

func TestEtcdLogCreateReplacesAnOlderRunAndEndsItsFollowers(t *testing.T) {
	s := newStore(t)
	l := s.Logs(etcdstore.LogOptions{})
	w := logCreate(t, l, logRef)
	logWrite(t, w, "old\n")
	f := logFollow(t, t.Context(), l, logRef)
	if got := f.next(t); got != "old" {
		t.Fatalf("got %q", got)
	}
	if _, err := l.Create(t.Context(), logRef); !errors.Is(err, pipeline.ErrConflict) {
		t.Fatalf("second writer: %v, want ErrConflict", err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.end(t); err != nil {
		t.Fatal(err)
	}
	f = logFollow(t, t.Context(), l, logRef)
	if got := f.next(t); got != "old" {
		t.Fatalf("got %q", got)
	}
	if _, err := f.end(t); err != nil {
		t.Fatal(err)
	}
	w = logCreate(t, l, logRef)
	logWrite(t, w, "new\n")
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got := logRead(t, l, logRef); got != "new\n" {
		t.Fatalf("after a new run: %q", got)
	}
}

func TestEtcdLogDeletedWhileWrittenEndsFollowersAndStaysDeleted(t *testing.T) {
	s := newStore(t)
	l := s.Logs(etcdstore.LogOptions{FlushInterval: time.Millisecond})
	w := logCreate(t, l, logRef)
	other := pipeline.LogRef{Pipeline: "acme/app", Build: 2, Stage: 0}
	wo := logCreate(t, l, other)
	logWrite(t, wo, "kept\n")
	if err := wo.Close(); err != nil {
		t.Fatal(err)
	}
	logWrite(t, w, "a\n")
	f := logFollow(t, t.Context(), l, logRef)
	if got := f.next(t); got != "a" {
		t.Fatalf("got %q", got)
	}
	if err := l.DeleteBuild(t.Context(), "acme/app", 1); err != nil {
		t.Fatal(err)
	}
	if _, err := f.end(t); !errors.Is(err, pipeline.ErrNotFound) {
		t.Fatalf("follow of a deleted log ended with %v, want ErrNotFound", err)
	}
	logWrite(t, w, "after delete\n")
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Read(t.Context(), logRef); !errors.Is(err, pipeline.ErrNotFound) {
		t.Fatalf("the writer brought a deleted log back: %v", err)
	}
	if got := logRead(t, l, other); got != "kept\n" {
		t.Fatalf("another build's log: %q", got)
	}
	if err := l.DeletePipeline(t.Context(), "ACME/app"); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Read(t.Context(), other); !errors.Is(err, pipeline.ErrNotFound) {
		t.Fatalf("after DeletePipeline: %v", err)
	}
}

func TestEtcdLogFinishEndsFollowOfAnAbandonedLog(t *testing.T) {
	_, la, _, lb := twoServers(t, false, etcdstore.LogOptions{})
	w := logCreate(t, la, logRef)
	logWrite(t, w, "x\n")
	f := logFollow(t, t.Context(), lb, logRef)
	if got := f.next(t); got != "x" {
		t.Fatalf("got %q", got)
	}
	// The server that wrote it is gone (its writer never closes); another
	// server finishes the stage.
	if err := lb.Finish(t.Context(), logRef); err != nil {
		t.Fatal(err)
	}
	if _, err := f.end(t); err != nil {
		t.Fatal(err)
	}
	_ = w
}

func TestEtcdLogFollowersKeepUpWithAFastWriter(t *testing.T) {
	s := newStore(t)
	l := s.Logs(etcdstore.LogOptions{ChunkBytes: 256, FlushInterval: time.Millisecond})
	w := logCreate(t, l, logRef)
	var wg sync.WaitGroup
	errs := make(chan error, 5)
	for range 5 {
		f := logFollow(t, t.Context(), l, logRef)
		wg.Add(1)
		go func() {
			defer wg.Done()
			rest, err := f.end(t)
			if err == nil && (len(rest) != 2000 || rest[0] != "n 0" || rest[1999] != "n 1999") {
				err = fmt.Errorf("got %d lines", len(rest))
			}
			errs <- err
		}()
	}
	eventually(t, logWait, "followers subscribed", func() bool { return etcdstore.Subscribers(s) == 5 })
	for i := range 2000 {
		logWrite(t, w, fmt.Sprintf("n %d\n", i))
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

func TestEtcdLogRejectsUnsafeRefs(t *testing.T) {
	l := newStore(t).Logs(etcdstore.LogOptions{})
	for _, r := range []pipeline.LogRef{
		{Pipeline: "acme", Build: 1},
		{Pipeline: "acme/../x", Build: 1},
		{Pipeline: "acme/app", Build: 0},
		{Pipeline: "acme/app", Build: 1, Stage: -1},
	} {
		if _, err := l.Create(t.Context(), r); !errors.Is(err, pipeline.ErrInvalid) {
			t.Errorf("Create(%+v): %v, want ErrInvalid", r, err)
		}
		if _, err := l.Read(t.Context(), r); !errors.Is(err, pipeline.ErrInvalid) {
			t.Errorf("Read(%+v): %v, want ErrInvalid", r, err)
		}
	}
}
