package etcdstore_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/s2"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/etcdstore"
	"github.com/kontinuous/kontinuous/pipeline/pipelinetest"
)

// numberedOutput is n bytes of numbered lines of varying lengths, ending
// with a newline: every line is unique, so a byte out of place shows.
func numberedOutput(n int) string {
	var b strings.Builder
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "%08d %s\n", i, strings.Repeat("abcdefghij", i%13))
	}
	return b.String()[:n-1] + "\n"
}

// writeIn writes out in pieces whose sizes cycle through sizes.
func writeIn(t *testing.T, w io.Writer, out string, sizes []int) {
	t.Helper()
	for i := 0; len(out) > 0; i++ {
		n := min(sizes[i%len(sizes)], len(out))
		logWrite(t, w, out[:n])
		out = out[n:]
	}
}

// checkFollowed checks what a follower that started before the first
// write got of out: runs of lines separated by the notice, each run a
// piece of out after the previous one (a run may start and end inside a
// line: output between was dropped), the first at out's start, the last
// at its end.
func checkFollowed(t *testing.T, lines []string, notice, out string) {
	t.Helper()
	var runs [][]string
	run := []string{}
	for _, l := range lines {
		if l == notice {
			runs = append(runs, run)
			run = []string{}
			continue
		}
		run = append(run, l)
	}
	runs = append(runs, run)
	pos := 0
	for i, r := range runs {
		text := strings.Join(r, "\n")
		if i == len(runs)-1 {
			if !strings.HasSuffix(out, text+"\n") || len(out)-len(text)-1 < pos {
				t.Fatalf("the follower's last %d lines are not the end of the output", len(r))
			}
			break
		}
		at := strings.Index(out[pos:], text)
		if at < 0 || (i == 0 && at != 0) {
			t.Fatalf("run %d of %d (%d lines, from %.40q) is not the next piece of the output", i, len(runs), len(r), text)
		}
		pos += at + len(text)
	}
}

func TestEtcdLogFastWriterKeepsExactlyTheLastMaxBytes(t *testing.T) {
	for _, tc := range []struct {
		name  string
		opts  etcdstore.LogOptions
		total int
		sizes []int
	}{
		{"small lines", etcdstore.LogOptions{MaxBytes: 64 << 10, ChunkBytes: 1 << 10, FlushInterval: time.Millisecond}, 4 << 20, []int{100}},
		{"mixed writes, some over the cap", etcdstore.LogOptions{MaxBytes: 64 << 10, ChunkBytes: 1 << 10, FlushInterval: time.Millisecond}, 4 << 20, []int{1, 50000, 3, 3 * 64 << 10, 700, 64<<10 + 17}},
		{"defaults, 32 KiB writes (the benchmark)", etcdstore.LogOptions{}, 16 << 20, []int{32 << 10}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, la, _, lb := twoServers(t, false, tc.opts)
			max := 4 << 20
			if tc.opts.MaxBytes > 0 {
				max = int(tc.opts.MaxBytes)
			}
			out := numberedOutput(tc.total)
			w := logCreate(t, la, logRef)
			// A follower on another server, keeping every line it gets.
			var lines []string
			followed := make(chan error, 1)
			go func() {
				followed <- lb.Follow(t.Context(), logRef, func(l []byte) error {
					lines = append(lines, string(l))
					return nil
				})
			}()
			writeIn(t, w, out, tc.sizes)
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			// Stored: exactly the last MaxBytes, as compressed parts
			// under the request limit, and nothing else but the run id
			// and d.
			var d struct {
				Parts, Start int
				Enc          string
			}
			parts := map[string]string{}
			for k, v := range rawValues(t, sharedClient(t), prefixOf(t)+"logs/") {
				switch {
				case strings.HasSuffix(k, "/d"):
					if err := json.Unmarshal([]byte(v), &d); err != nil {
						t.Fatalf("d = %q: %v", v, err)
					}
				case strings.Contains(k, "/p/"):
					parts[k[strings.LastIndex(k, "/p/")+1:]] = v
					if len(v) > 1<<20 {
						t.Errorf("%s holds %d bytes", k, len(v))
					}
				case strings.HasSuffix(k, "/m"):
				default:
					t.Errorf("left after close: %s", k)
				}
			}
			if d.Enc != "s2" {
				t.Fatalf("parts encoded %q, want s2", d.Enc)
			}
			var stored strings.Builder
			for i := range d.Parts {
				p, err := s2.Decode(nil, []byte(parts[fmt.Sprintf("p/%04d", i)]))
				if err != nil {
					t.Fatalf("part %d: %v", i, err)
				}
				stored.Write(p)
			}
			if d.Start != len(out)-max || stored.String() != out[len(out)-max:] {
				t.Fatalf("stored %d bytes from offset %d, want the last %d bytes of %d (from %d)", stored.Len(), d.Start, max, len(out), len(out)-max)
			}
			// Read: the notice, then the tail from its first whole line.
			tail := out[len(out)-max:]
			tail = tail[strings.IndexByte(tail, '\n')+1:]
			if got := logRead(t, lb, logRef); got != la.Notice()+"\n"+tail {
				t.Fatalf("read %d bytes, want the notice and the last %d", len(got), len(tail))
			}
			select {
			case err := <-followed:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(logWait):
				t.Fatal("Follow did not end")
			}
			checkFollowed(t, lines, la.Notice(), out)
		})
	}
}

func TestEtcdLogClosedWithNoChunkInTheTailWritesItsPartsStraightFromMemory(t *testing.T) {
	for _, tc := range []struct {
		name  string
		plain bool // B is a plain store: no read cache, its followers poll
	}{
		{"follower on the watch fan-out", false},
		{"polling follower without the read cache", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Never flushed before Close (no tick within the test): the
			// parts come straight from memory. (Before, a writer flushed
			// whenever ChunkBytes were pending.)
			opts := etcdstore.LogOptions{MaxBytes: 3 << 20, ChunkBytes: 128 << 10, FlushInterval: time.Hour}
			_, la, sb, lb := twoServers(t, tc.plain, opts)
			cli := sharedClient(t)
			w := logCreate(t, la, logRef)
			resp, err := cli.Get(t.Context(), prefixOf(t)+"logs/", clientv3.WithPrefix())
			if err != nil {
				t.Fatal(err)
			}
			created := resp.Header.Revision
			f := logFollow(t, t.Context(), lb, logRef)
			if !tc.plain {
				eventually(t, logWait, "follower subscribed", func() bool { return etcdstore.Subscribers(sb) == 1 })
			}
			out := numberedOutput(5 << 19)
			writeIn(t, w, out, []int{4096})
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			// What was written: three parts (compressed, in as few
			// transactions as the request limit allows), and no chunk at
			// all.
			ctx, cancel := context.WithTimeout(t.Context(), logWait)
			defer cancel()
			revs, parts := map[int64]bool{}, 0
			for wr := range cli.Watch(ctx, prefixOf(t)+"logs/", clientv3.WithPrefix(), clientv3.WithRev(created+1)) {
				if err := wr.Err(); err != nil {
					t.Fatal(err)
				}
				done := false
				for _, ev := range wr.Events {
					k := string(ev.Kv.Key)
					revs[ev.Kv.ModRevision] = true
					switch {
					case strings.Contains(k, "/c/"):
						t.Errorf("a chunk was written: %s", k)
					case strings.Contains(k, "/p/"):
						parts++
					case strings.HasSuffix(k, "/d"):
						done = true
					}
				}
				if done {
					break
				}
			}
			if parts != 3 || len(revs) > 3 {
				t.Errorf("%d parts in %d transactions, want 3 in at most 3", parts, len(revs))
			}
			t.Logf("%d parts in %d transactions", parts, len(revs))
			if got := logRead(t, lb, logRef); got != out {
				t.Fatalf("read %d bytes, want %d", len(got), len(out))
			}
			lines, err := f.end(t)
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(lines, "\n") + "\n"; got != out {
				t.Fatalf("the follower got %d lines (%d bytes), want all %d bytes", len(lines), len(got), len(out))
			}
		})
	}
}

func TestEtcdLogSlowWriterIsFollowedLineByLineFromAnotherServer(t *testing.T) {
	_, la, sb, lb := twoServers(t, false, etcdstore.LogOptions{})
	w := logCreate(t, la, logRef)
	f := logFollow(t, t.Context(), lb, logRef)
	eventually(t, logWait, "follower subscribed", func() bool { return etcdstore.Subscribers(sb) == 1 })
	var slowest time.Duration
	for i := range 8 {
		line := fmt.Sprintf("step %d", i)
		start := time.Now()
		logWrite(t, w, line+"\n")
		// Each line reaches the other server long before the stage ends
		// (within the 250ms flush interval and a round trip; 10s allows
		// for a loaded CI machine).
		select {
		case got := <-f.lines:
			if got != line {
				t.Fatalf("got %q, want %q", got, line)
			}
		case err := <-f.done:
			t.Fatalf("Follow ended: %v", err)
		case <-time.After(10 * time.Second):
			t.Fatalf("%q not seen on the other server within 10s of its write", line)
		}
		slowest = max(slowest, time.Since(start))
	}
	t.Logf("slowest line: %s from write to follower", slowest)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if rest, err := f.end(t); err != nil || len(rest) != 0 {
		t.Fatalf("after close: %q, %v", rest, err)
	}
}

func TestEtcdLogWriterWhileEtcdIsAwayRetriesThenFailsWithoutCorruption(t *testing.T) {
	srv := pipelinetest.StartEtcdServer(t, t.TempDir())
	s := etcdstore.NewCached(etcdstore.New(srv.Client(), testBox(t), etcdstore.Options{OpTimeout: time.Second}), etcdstore.CacheOptions{})
	t.Cleanup(s.Close)
	if err := s.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	l := s.Logs(etcdstore.LogOptions{ChunkBytes: 256, FlushInterval: 10 * time.Millisecond})
	line := func(i int) string { return fmt.Sprintf("line %05d\n", i) }
	written := 0
	write := func(w io.Writer, n int) {
		for range n {
			logWrite(t, w, line(written))
			written++
		}
	}
	stored := func(r pipeline.LogRef) string {
		t.Helper()
		b, err := l.Read(t.Context(), r)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}

	// Away for a while in the middle: the writer retries, nothing lost.
	w := logCreate(t, l, logRef)
	write(w, 100)
	eventually(t, patience, "first lines stored", func() bool { return strings.HasSuffix(stored(logRef), line(99)) })
	srv.Stop()
	write(w, 100)
	srv.Start()
	write(w, 100)
	if err := w.Close(); err != nil {
		t.Fatalf("close after etcd came back: %v", err)
	}
	var want strings.Builder
	for i := range written {
		want.WriteString(line(i))
	}
	if got := stored(logRef); got != want.String() {
		t.Fatalf("after etcd came back: %d bytes stored, want all %d", len(got), want.Len())
	}

	// Away at the end: Close gives up with an error; what is stored is
	// whole lines in order, with no hole.
	r2 := pipeline.LogRef{Pipeline: "acme/app", Build: 2}
	written = 0
	w = logCreate(t, l, r2)
	write(w, 100)
	eventually(t, patience, "first lines stored", func() bool { return strings.HasSuffix(stored(r2), line(99)) })
	srv.Stop()
	write(w, 100)
	start := time.Now()
	err := w.Close()
	if err == nil {
		t.Fatal("Close succeeded while etcd was away")
	}
	if took := time.Since(start); took > time.Minute {
		t.Errorf("Close took %s to give up", took)
	}
	if strings.Contains(err.Error(), "line 0") {
		t.Errorf("the error holds output: %v", err)
	}
	srv.Start()
	var got string
	eventually(t, patience, "log readable after etcd restarts", func() bool {
		b, err := l.Read(t.Context(), r2)
		got = string(b)
		return err == nil
	})
	var prefix strings.Builder
	for i := 0; prefix.Len() < len(got); i++ {
		prefix.WriteString(line(i))
	}
	if got != prefix.String() || !strings.Contains(got, line(99)) {
		t.Fatalf("stored after the failed close: %d bytes, not the first lines written in order:\n%.200s", len(got), got)
	}
}
