package logstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kontinuous/kontinuous/pipeline"
)

// wait bounds how long a test waits for something that should happen.
const wait = 10 * time.Second

func newStore(t *testing.T, dir string, max int64) *Files {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	s, err := New(dir, Options{MaxBytes: max, PollInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var ref = pipeline.LogRef{Pipeline: "acme/app", Build: 1, Stage: 0}

func create(t *testing.T, s *Files, r pipeline.LogRef) io.WriteCloser {
	t.Helper()
	w, err := s.Create(t.Context(), r)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.Close() }) // a second Close is a no-op
	return w
}

func write(t *testing.T, w io.Writer, s string) {
	t.Helper()
	if n, err := io.WriteString(w, s); err != nil || n != len(s) {
		t.Fatalf("write %q: %d, %v", s, n, err)
	}
}

func read(t *testing.T, s *Files, r pipeline.LogRef) string {
	t.Helper()
	b, err := s.Read(t.Context(), r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// following is a Follow running in the background.
type following struct {
	lines chan string
	done  chan error
}

func startFollow(t *testing.T, ctx context.Context, s *Files, r pipeline.LogRef, fn func(string)) *following {
	t.Helper()
	f := &following{lines: make(chan string, 1000), done: make(chan error, 1)}
	go func() {
		f.done <- s.Follow(ctx, r, func(line []byte) error {
			if fn != nil {
				fn(string(line))
			}
			f.lines <- string(line)
			return nil
		})
	}()
	return f
}

func (f *following) next(t *testing.T) string {
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
	case <-time.After(wait):
		t.Fatal("no line")
	}
	return ""
}

// end waits for Follow to return and gives the lines it had left.
func (f *following) end(t *testing.T) ([]string, error) {
	t.Helper()
	select {
	case err := <-f.done:
		close(f.lines)
		var rest []string
		for l := range f.lines {
			rest = append(rest, l)
		}
		return rest, err
	case <-time.After(wait):
		t.Fatal("Follow did not end")
	}
	return nil, nil
}

func TestWriteThenReadReturnsTheLog(t *testing.T) {
	s := newStore(t, "", 0)
	w := create(t, s, ref)
	write(t, w, "first\nsec")
	write(t, w, "ond\n")
	if got := read(t, s, ref); got != "first\nsecond\n" {
		t.Errorf("while writing: %q", got)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got := read(t, s, ref); got != "first\nsecond\n" {
		t.Errorf("after Close: %q", got)
	}
	if _, err := os.Stat(filepath.Join(s.dir, "acme%2Fapp", "1", "0.log")); err != nil {
		t.Errorf("log not at the documented path: %v", err)
	}
}

func TestReadOfMissingLogIsNotFound(t *testing.T) {
	s := newStore(t, "", 0)
	if _, err := s.Read(t.Context(), ref); !errors.Is(err, pipeline.ErrNotFound) {
		t.Errorf("Read = %v, want ErrNotFound", err)
	}
	if err := s.Follow(t.Context(), ref, func([]byte) error { return nil }); !errors.Is(err, pipeline.ErrNotFound) {
		t.Errorf("Follow = %v, want ErrNotFound", err)
	}
}

func TestCreateReplacesAnOlderLogOfTheStage(t *testing.T) {
	s := newStore(t, "", 0)
	w := create(t, s, ref)
	write(t, w, "old run\n")
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w = create(t, s, ref)
	write(t, w, "new run\n")
	if got := read(t, s, ref); got != "new run\n" {
		t.Errorf("got %q", got)
	}
}

func TestSecondWriterOfALogConflicts(t *testing.T) {
	s := newStore(t, "", 0)
	create(t, s, ref)
	if _, err := s.Create(t.Context(), ref); !errors.Is(err, pipeline.ErrConflict) {
		t.Errorf("second Create = %v, want ErrConflict", err)
	}
}

func TestCapKeepsTheTailAndSaysSo(t *testing.T) {
	const max = 100
	for _, tc := range []struct {
		name  string
		write func(t *testing.T, w io.Writer)
	}{
		{"many small writes", func(t *testing.T, w io.Writer) {
			for i := range 50 {
				write(t, w, fmt.Sprintf("line %02d\n", i))
			}
		}},
		{"one huge write", func(t *testing.T, w io.Writer) {
			var b strings.Builder
			for i := range 50 {
				fmt.Fprintf(&b, "line %02d\n", i)
			}
			write(t, w, b.String())
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t, "", max)
			w := create(t, s, ref)
			tc.write(t, w)
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			got := read(t, s, ref)
			notice, body, _ := strings.Cut(got, "\n")
			if want := "[kontinuous] log truncated: only the last 100 bytes of this stage's output are kept"; notice != want {
				t.Fatalf("first line %q, want %q", notice, want)
			}
			if len(body) > max {
				t.Errorf("kept %d bytes, cap %d", len(body), max)
			}
			lines := strings.Split(strings.TrimSuffix(body, "\n"), "\n")
			if len(lines) < 10 {
				t.Fatalf("kept only %d lines: %q", len(lines), body)
			}
			for i, l := range lines {
				if want := fmt.Sprintf("line %02d", 50-len(lines)+i); l != want {
					t.Fatalf("line %d = %q, want %q (the tail, whole lines, in order)", i, l, want)
				}
			}
			total := 0
			for _, p := range []string{".log", ".log.1"} {
				if st, err := os.Stat(filepath.Join(s.dir, "acme%2Fapp", "1", "0"+p)); err == nil {
					total += int(st.Size())
				}
			}
			if total > 2*max+1 {
				t.Errorf("%d bytes on disk for a cap of %d", total, max)
			}
		})
	}
}

func TestLogUnderTheCapHasNoNotice(t *testing.T) {
	s := newStore(t, "", 100)
	w := create(t, s, ref)
	write(t, w, strings.Repeat("x", 99)+"\n")
	if got := read(t, s, ref); strings.HasPrefix(got, "[kontinuous]") || len(got) != 100 {
		t.Errorf("got %q", got)
	}
}

func TestFollowSeesLiveLinesAndEndsOnClose(t *testing.T) {
	s := newStore(t, "", 0)
	w := create(t, s, ref)
	write(t, w, "before\n")
	f := startFollow(t, t.Context(), s, ref, nil)
	if got := f.next(t); got != "before" {
		t.Fatalf("got %q", got)
	}
	write(t, w, "li")
	write(t, w, "ve\n")
	if got := f.next(t); got != "live" {
		t.Fatalf("got %q", got)
	}
	write(t, w, "last without newline")
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	rest, err := f.end(t)
	if err != nil {
		t.Fatal(err)
	}
	if len(rest) != 1 || rest[0] != "last without newline" {
		t.Errorf("after Close got %q", rest)
	}
}

func TestFollowOfAFinishedLogReturnsAllAndEnds(t *testing.T) {
	dir := t.TempDir()
	s := newStore(t, dir, 0)
	w := create(t, s, ref)
	write(t, w, "a\nb\nc\n")
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	// The same store, and a new one over the same dir as after a restart.
	for name, st := range map[string]*Files{"same process": s, "after restart": newStore(t, dir, 0)} {
		t.Run(name, func(t *testing.T) {
			lines, err := startFollow(t, t.Context(), st, ref, nil).end(t)
			if err != nil || strings.Join(lines, ",") != "a,b,c" {
				t.Errorf("got %q, %v", lines, err)
			}
		})
	}
}

func TestFollowOfAnotherProcessesLogPollsUntilItIsClosed(t *testing.T) {
	dir := t.TempDir()
	writerSide, readerSide := newStore(t, dir, 64), newStore(t, dir, 64)
	w := create(t, writerSide, ref)
	f := startFollow(t, t.Context(), readerSide, ref, nil)
	for i := range 20 { // several segment swaps at a cap of 64
		want := fmt.Sprintf("line %02d", i)
		write(t, w, want+"\n")
		if got := f.next(t); got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if rest, err := f.end(t); err != nil || len(rest) != 0 {
		t.Errorf("end: %q, %v", rest, err)
	}
}

func TestFollowKeepsUpAcrossSegmentSwaps(t *testing.T) {
	s := newStore(t, "", 64)
	w := create(t, s, ref)
	f := startFollow(t, t.Context(), s, ref, nil)
	for i := range 50 {
		want := fmt.Sprintf("line %02d", i)
		write(t, w, want+"\n")
		if got := f.next(t); got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
}

func TestFollowThatFallsBehindTheCapSaysOutputWasSkipped(t *testing.T) {
	s := newStore(t, "", 64)
	w := create(t, s, ref)
	write(t, w, "first\n")
	blocked, release := make(chan struct{}), make(chan struct{})
	f := startFollow(t, t.Context(), s, ref, func(l string) {
		if l == "first" {
			close(blocked)
			<-release
		}
	})
	<-blocked
	for i := range 40 { // ~6 segments while the reader is stuck
		write(t, w, fmt.Sprintf("line %02d\n", i))
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	close(release)
	lines, err := f.end(t)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(lines, "\n")
	if !strings.Contains(got, s.Notice()) || !strings.HasSuffix(got, "line 39") {
		t.Errorf("got %q", got)
	}
	if strings.Contains(got, "line 20") {
		t.Errorf("the reader got output older than the cap: %q", got)
	}
}

func TestConcurrentFollowersEachSeeEveryLine(t *testing.T) {
	s := newStore(t, "", 0)
	w := create(t, s, ref)
	var fs []*following
	for range 5 {
		fs = append(fs, startFollow(t, t.Context(), s, ref, nil))
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range 200 {
			fmt.Fprintf(w, "line %03d\n", i)
		}
		if err := w.Close(); err != nil {
			t.Error(err)
		}
	})
	// One more reads concurrently with the writer.
	for range 20 {
		if _, err := s.Read(t.Context(), ref); err != nil {
			t.Error(err)
		}
	}
	wg.Wait()
	for _, f := range fs {
		lines, err := f.end(t)
		if err != nil {
			t.Fatal(err)
		}
		if len(lines) != 200 {
			t.Fatalf("%d lines, want 200", len(lines))
		}
		for i, l := range lines {
			if want := fmt.Sprintf("line %03d", i); l != want {
				t.Fatalf("line %d = %q, want %q", i, l, want)
			}
		}
	}
}

func TestFollowEndsWithContext(t *testing.T) {
	s := newStore(t, "", 0)
	create(t, s, ref)
	ctx, cancel := context.WithCancel(t.Context())
	f := startFollow(t, ctx, s, ref, nil)
	cancel()
	if _, err := f.end(t); !errors.Is(err, context.Canceled) {
		t.Errorf("Follow = %v, want context.Canceled", err)
	}
}

func TestFollowStopsWhenFnFails(t *testing.T) {
	s := newStore(t, "", 0)
	w := create(t, s, ref)
	write(t, w, "a\n")
	boom := errors.New("client went away")
	if err := s.Follow(t.Context(), ref, func([]byte) error { return boom }); !errors.Is(err, boom) {
		t.Errorf("Follow = %v, want fn's error", err)
	}
}

func TestFinishEndsFollowOfAnAbandonedLog(t *testing.T) {
	dir := t.TempDir()
	w := create(t, newStore(t, dir, 0), ref) // the writer of a process that died
	write(t, w, "half\n")
	s := newStore(t, dir, 0)
	f := startFollow(t, t.Context(), s, ref, nil)
	if got := f.next(t); got != "half" {
		t.Fatalf("got %q", got)
	}
	if err := s.Finish(t.Context(), ref); err != nil {
		t.Fatal(err)
	}
	if _, err := f.end(t); err != nil {
		t.Errorf("Follow = %v", err)
	}
}

func TestDeleteBuildAndPipeline(t *testing.T) {
	s := newStore(t, "", 0)
	refs := []pipeline.LogRef{
		{Pipeline: "acme/app", Build: 1, Stage: 0},
		{Pipeline: "acme/app", Build: 1, Stage: 1},
		{Pipeline: "acme/app", Build: 2, Stage: 0},
		{Pipeline: "acme/other", Build: 1, Stage: 0},
	}
	for _, r := range refs {
		w := create(t, s, r)
		write(t, w, "x\n")
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	exists := func(r pipeline.LogRef) bool {
		_, err := s.Read(t.Context(), r)
		if err != nil && !errors.Is(err, pipeline.ErrNotFound) {
			t.Fatal(err)
		}
		return err == nil
	}
	if err := s.DeleteBuild(t.Context(), "acme/app", 1); err != nil {
		t.Fatal(err)
	}
	if exists(refs[0]) || exists(refs[1]) || !exists(refs[2]) || !exists(refs[3]) {
		t.Error("DeleteBuild removed the wrong logs")
	}
	if err := s.DeletePipeline(t.Context(), "acme/app"); err != nil {
		t.Fatal(err)
	}
	if exists(refs[2]) || !exists(refs[3]) {
		t.Error("DeletePipeline removed the wrong logs")
	}
	if err := s.DeletePipeline(t.Context(), "acme/app"); err != nil {
		t.Errorf("deleting again: %v", err)
	}
}

func TestFollowEndsWhenItsBuildIsDeleted(t *testing.T) {
	s := newStore(t, "", 0)
	w := create(t, s, ref)
	write(t, w, "x\n")
	f := startFollow(t, t.Context(), s, ref, nil)
	f.next(t)
	if err := s.DeleteBuild(t.Context(), ref.Pipeline, ref.Build); err != nil {
		t.Fatal(err)
	}
	if _, err := f.end(t); !errors.Is(err, pipeline.ErrNotFound) {
		t.Errorf("Follow = %v, want ErrNotFound", err)
	}
}

func TestUnsafeRefsAreRejected(t *testing.T) {
	root := t.TempDir()
	s := newStore(t, filepath.Join(root, "logs"), 0)
	for _, r := range []pipeline.LogRef{
		{Pipeline: "../x", Build: 1},
		{Pipeline: "acme/..", Build: 1},
		{Pipeline: "./app", Build: 1},
		{Pipeline: "acme", Build: 1},
		{Pipeline: "acme/app/extra", Build: 1},
		{Pipeline: "acme/a\\b", Build: 1},
		{Pipeline: "acme/a\x00", Build: 1},
		{Pipeline: "", Build: 1},
		{Pipeline: "acme/app", Build: 0},
		{Pipeline: "acme/app", Build: -1},
		{Pipeline: "acme/app", Build: 1, Stage: -1},
	} {
		t.Run(fmt.Sprintf("%q/%d/%d", r.Pipeline, r.Build, r.Stage), func(t *testing.T) {
			if _, err := s.Create(t.Context(), r); !errors.Is(err, pipeline.ErrInvalid) {
				t.Errorf("Create = %v, want ErrInvalid", err)
			}
			if _, err := s.Read(t.Context(), r); !errors.Is(err, pipeline.ErrInvalid) {
				t.Errorf("Read = %v, want ErrInvalid", err)
			}
			if err := s.DeleteBuild(t.Context(), r.Pipeline, r.Build); r.Stage >= 0 && !errors.Is(err, pipeline.ErrInvalid) {
				t.Errorf("DeleteBuild = %v, want ErrInvalid", err)
			}
		})
	}
	if err := s.DeletePipeline(t.Context(), ".."); !errors.Is(err, pipeline.ErrInvalid) {
		t.Errorf("DeletePipeline(..) = %v", err)
	}
	entries, err := os.ReadDir(root)
	if err != nil || len(entries) != 1 {
		t.Errorf("something was made beside the log dir: %v %v", entries, err)
	}
}
