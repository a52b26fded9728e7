//go:build cgo

package llmlink

import (
	"context"
	"testing"
	"time"
)

// Benchmarks of the binding's own cost (no speed is asserted; run with
// go test -run '^$' -bench Pull): one-block pulls (2 KiB x 4 tensors) from a
// peer process over loopback, blocking, and asynchronous with 64 in flight
// completed by the dispatcher.

func benchSetup(b *testing.B, id uint64) (*Engine, *peer, *Cache) {
	p := startPeer(b, id)
	d, err := NewEngine(RoleDecoder, 1000+id, map[string]string{"llm.SyncKvCacheWaitTime": "5000"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { d.Close() })
	st, _, err := d.LinkClusters(context.Background(), []ClusterInfo{p.info()}, 0x7fffffff)
	if err != nil || st != StatusSuccess {
		b.Fatal(st, err)
	}
	dst, err := d.AllocateBlocksCache(blocksDesc(testBlocks), nil)
	if err != nil {
		b.Fatal(err)
	}
	return d, p, dst
}

func BenchmarkPullBlocksBlocking(b *testing.B) {
	d, p, dst := benchSetup(b, 401)
	key := NewBlocksCacheKey(p.id, 0)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := d.PullBlocks(context.Background(), key, dst.ID, []uint64{1}, []uint64{1}, nil); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPullBlocksAsync64(b *testing.B) {
	d, p, dst := benchSetup(b, 402)
	key := NewBlocksCacheKey(p.id, 0)
	ctx := context.Background()
	const inFlight = 64
	var window []*Transfer
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if len(window) == inFlight {
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := window[0].Wait(wctx)
			cancel()
			if err != nil {
				b.Fatalf("after %d transfers: %v", i, err)
			}
			window[0].Close()
			window = window[1:]
		}
		blk := uint64(i % testBlocks)
		tr, err := d.PullBlocksAsync(key, dst.ID, []uint64{blk}, []uint64{blk}, nil)
		if err != nil {
			b.Fatal(err)
		}
		window = append(window, tr)
	}
	for _, tr := range window {
		if err := tr.Wait(ctx); err != nil {
			b.Fatal(err)
		}
		tr.Close()
	}
}
