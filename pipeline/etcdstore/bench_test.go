package etcdstore_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/etcdstore"
	"github.com/kontinuous/kontinuous/pipeline/logstore"
)

// benchRun numbers benchmark invocations: the testing package calls a
// benchmark several times, each needs a fresh key space.
var benchRun atomic.Int64

func benchStore(b *testing.B) *etcdstore.Cached {
	b.Helper()
	return newStoreWith(b, sharedClient(b), newOpts(fmt.Sprintf("%s%d/", prefixOf(b), benchRun.Add(1))))
}

// BenchmarkCreateBuild measures build creation under contention on one
// pipeline's counter (every goroutine competes for the next number).
func BenchmarkCreateBuild(b *testing.B) {
	s := benchStore(b)
	mustCreatePipeline(b, s, "acme", "bench")
	build := fullBuild()
	build.DeliveryID = ""
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.CreateBuild(b.Context(), "acme", "bench", build); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkGetBuild measures reading builds of one pipeline in parallel.
func BenchmarkGetBuild(b *testing.B) {
	s := benchStore(b)
	mustCreatePipeline(b, s, "acme", "bench")
	build := fullBuild()
	build.DeliveryID = ""
	const n = 100
	for range n {
		mustCreateBuild(b, s, "acme", "bench", build)
	}
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.GetBuild(b.Context(), "acme", "bench", 1+rand.IntN(n)); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// fsyncEtcd is an embedded etcd with fsync on (as deployed), started once
// for the write benchmarks that compare the store with etcd's own limit.
var fsyncEtcd struct {
	once sync.Once
	cli  *clientv3.Client
	err  error
}

func fsyncClient(b *testing.B) *clientv3.Client {
	b.Helper()
	fsyncEtcd.once.Do(func() {
		dir, err := os.MkdirTemp("", "etcdstore-bench-fsync-")
		if err != nil {
			fsyncEtcd.err = err
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		e, err := etcdstore.StartEmbedded(ctx, etcdstore.EmbeddedConfig{Dir: dir})
		if err != nil {
			fsyncEtcd.err = err
			return
		}
		fsyncEtcd.cli, fsyncEtcd.err = etcdstore.Connect(ctx, etcdstore.ClientConfig{Endpoints: e.Endpoints()})
		closeAtExit = append(closeAtExit, func() {
			if fsyncEtcd.cli != nil {
				_ = fsyncEtcd.cli.Close() // at exit
			}
			e.Close()
			_ = os.RemoveAll(dir) // best effort at exit
		})
	})
	if fsyncEtcd.err != nil {
		b.Fatal(fsyncEtcd.err)
	}
	return fsyncEtcd.cli
}

// BenchmarkStoreWrites: the store's write path alone, on an etcd with
// fsync on, from 16×GOMAXPROCS goroutines: new builds of one pipeline,
// each with its own delivery id (CreateBuild, group-committed), and
// updates of distinct builds (UpdateBuild) — against etcd's own limit on
// the same etcd, one create-if-absent transaction of a build-sized record
// per operation (txn). Compare the ns/op of one run.
func BenchmarkStoreWrites(b *testing.B) {
	cli := fsyncClient(b)
	build := fullBuild()
	build.Stages = build.Stages[:1]
	b.Run("txn", func(b *testing.B) {
		prefix := fmt.Sprintf("/bench/txn/%d/", benchRun.Add(1))
		value := bytes.Repeat([]byte("x"), 900)
		var seq atomic.Int64
		b.SetParallelism(16)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				key := prefix + strconv.FormatInt(seq.Add(1), 10)
				tr, err := cli.Txn(b.Context()).
					If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
					Then(clientv3.OpPut(key, string(value)), clientv3.OpPut(key+"/active", "")).
					Commit()
				if err != nil || !tr.Succeeded {
					b.Error(err)
					return
				}
			}
		})
	})
	b.Run("CreateBuild", func(b *testing.B) {
		s := newStoreWith(b, cli, newOpts(fmt.Sprintf("/bench/store/%d/", benchRun.Add(1))))
		mustCreatePipeline(b, s, "acme", "bench")
		var seq atomic.Int64
		b.SetParallelism(16)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				nb := build
				nb.DeliveryID = "d-" + strconv.FormatInt(seq.Add(1), 10)
				if _, err := s.CreateBuild(b.Context(), "acme", "bench", nb); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	b.Run("UpdateBuild", func(b *testing.B) {
		s := newStoreWith(b, cli, newOpts(fmt.Sprintf("/bench/store/%d/", benchRun.Add(1))))
		mustCreatePipeline(b, s, "acme", "bench")
		var seq atomic.Int64
		b.SetParallelism(16)
		b.RunParallel(func(pb *testing.PB) {
			nb := build
			nb.DeliveryID = ""
			mine := mustCreateBuild(b, s, "acme", "bench", nb)
			for pb.Next() {
				if _, err := s.UpdateBuild(b.Context(), "acme", "bench", mine.Number, func(b *pipeline.Build) error {
					b.Message = strconv.FormatInt(seq.Add(1), 10)
					return nil
				}); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// BenchmarkLogWrite: a stage printing 50 MiB as fast as it can in 32 KiB
// writes, then closing its log, against the file store in the same run
// (as cmd/kontinuous's BenchmarkLogWriteThroughput, which builds much
// slower). Two outputs: "y\n" (yes) and log-like lines with random hashes
// and timings (text, which compresses about 2x, not 1000x). write-ms and
// close-ms split the time between the writes (which never wait for etcd)
// and Close (the last flush and the parts).
func BenchmarkLogWrite(b *testing.B) {
	const total = 50 << 20
	rnd := rand.New(rand.NewPCG(1, 2))
	var text bytes.Buffer
	for text.Len() < 4<<20 {
		fmt.Fprintf(&text, "2026-12-06T03:%02d:%02d.%03dZ step %d: compiling pkg/%x/%x.go (sha %016x) in %d.%03dms\n",
			rnd.IntN(60), rnd.IntN(60), rnd.IntN(1000), rnd.IntN(100), rnd.Uint32(), rnd.Uint32()%4096, rnd.Uint64(), rnd.IntN(100), rnd.IntN(1000))
	}
	files, err := logstore.New(b.TempDir(), logstore.Options{})
	if err != nil {
		b.Fatal(err)
	}
	for _, out := range []struct {
		name string
		data []byte
	}{
		{"yes", bytes.Repeat([]byte("y\n"), 16<<10)},
		{"text", text.Bytes()},
	} {
		for _, c := range []struct {
			name string
			logs func() pipeline.LogStore
		}{
			{"files", func() pipeline.LogStore { return files }},
			{"etcd", func() pipeline.LogStore { return benchStore(b).Logs(etcdstore.LogOptions{}) }},
		} {
			b.Run(out.name+"/"+c.name, func(b *testing.B) {
				logs := c.logs()
				b.SetBytes(total)
				n := 0
				var writing, closing time.Duration
				for b.Loop() {
					n++
					w, err := logs.Create(b.Context(), pipeline.LogRef{Pipeline: "acme/bench", Build: n})
					if err != nil {
						b.Fatal(err)
					}
					start := time.Now()
					for written, i := 0, 0; written < total; written += 32 << 10 {
						if i+32<<10 > len(out.data) {
							i = 0
						}
						if _, err := w.Write(out.data[i : i+32<<10]); err != nil {
							b.Fatal(err)
						}
						i += 32 << 10
					}
					wrote := time.Now()
					if err := w.Close(); err != nil {
						b.Fatal(err)
					}
					writing += wrote.Sub(start)
					closing += time.Since(wrote)
				}
				b.ReportMetric(float64(writing.Milliseconds())/float64(n), "write-ms/op")
				b.ReportMetric(float64(closing.Milliseconds())/float64(n), "close-ms/op")
			})
		}
	}
}
