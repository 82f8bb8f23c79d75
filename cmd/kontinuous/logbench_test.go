package main

import (
	"bytes"
	"context"
	"testing"

	"github.com/kontinuous/kontinuous/pipeline"
	"github.com/kontinuous/kontinuous/pipeline/etcdstore"
	"github.com/kontinuous/kontinuous/pipeline/logstore"
	"github.com/kontinuous/kontinuous/pipeline/secretbox"
)

// BenchmarkLogWriteThroughput: a stage printing as fast as it can (50 MiB
// of "y\n", like `yes | head -c 50M`, in 32 KiB writes) into each log
// store, then closing the log (flush and, for etcd, compaction). Both
// stores keep the last 4 MiB. MB/s are side by side in one run:
// go test -run '^$' -bench LogWriteThroughput ./cmd/kontinuous/
func BenchmarkLogWriteThroughput(b *testing.B) {
	const total = 50 << 20
	chunk := bytes.Repeat([]byte("y\n"), 16<<10)
	e, err := etcdstore.StartEmbedded(context.Background(), etcdstore.EmbeddedConfig{Dir: b.TempDir(), UnsafeNoFsync: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(e.Close)
	cli, err := etcdstore.Connect(context.Background(), etcdstore.ClientConfig{Endpoints: e.Endpoints()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = cli.Close() }) // teardown
	box, err := secretbox.New(bytes.Repeat([]byte("k"), 32))
	if err != nil {
		b.Fatal(err)
	}
	store := etcdstore.NewCached(etcdstore.New(cli, box, etcdstore.Options{}), etcdstore.CacheOptions{})
	if err := store.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(store.Close)
	files, err := logstore.New(b.TempDir(), logstore.Options{})
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name string
		logs pipeline.LogStore
	}{
		{"files", files},
		{"etcd", store.Logs(etcdstore.LogOptions{})},
		// Larger chunks: 8 per transaction are 1 MiB, under etcd's
		// 1.5 MiB request limit; half the round trips of the default.
		{"etcd-chunk128k", store.Logs(etcdstore.LogOptions{ChunkBytes: 128 << 10})},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(total)
			n := 0
			for b.Loop() {
				n++
				w, err := c.logs.Create(context.Background(), pipeline.LogRef{Pipeline: "acme/bench", Build: n, Stage: 0})
				if err != nil {
					b.Fatal(err)
				}
				for written := 0; written < total; written += len(chunk) {
					if _, err := w.Write(chunk); err != nil {
						b.Fatal(err)
					}
				}
				if err := w.Close(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
