//go:build cgo

package llmlink

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"testing"
	"time"
)

func TestCloseIsIdempotentAndFinal(t *testing.T) {
	p := startPeer(t, 141)
	d := newDecoder(t, 1141, nil)
	linkAll(t, d, p)
	c, err := d.AllocateBlocksCache(blocksDesc(testBlocks), nil)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); _ = d.Close() }()
	}
	wg.Wait()
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ci := []ClusterInfo{p.info()}
	key := NewBlocksCacheKey(p.id, 0)
	calls := map[string]error{}
	_, _, calls["LinkClusters"] = d.LinkClusters(ctx, ci, time.Second)
	_, _, calls["UnlinkClusters"] = d.UnlinkClusters(ctx, ci, time.Second, true)
	_, calls["CheckLinkStatus"] = d.CheckLinkStatus(p.id)
	_, calls["ListenPort"] = d.ListenPort(0)
	_, calls["Stats"] = d.Stats()
	_, calls["XferStats"] = d.XferStats()
	_, calls["LinkStats"] = d.LinkStats(p.id)
	calls["PullBlocks"] = d.PullBlocks(ctx, key, c.ID, []uint64{0}, []uint64{0}, nil)
	calls["PullCache"] = d.PullCache(ctx, key, c.ID, 0, -1, nil)
	calls["PushBlocks"] = d.PushBlocks(ctx, key, c.ID, []uint64{0}, []uint64{0}, nil)
	calls["PushCache"] = d.PushCache(ctx, key, c.ID, 0, -1, nil)
	_, calls["AllocateCache"] = d.AllocateCache(batchDesc(1), nil)
	_, calls["AllocateBlocksCache"] = d.AllocateBlocksCache(blocksDesc(1), nil)
	_, calls["RegisterCache"] = d.RegisterCache(batchDesc(1), []uintptr{1, 2, 3, 4}, nil)
	_, calls["RegisterBlocksCache"] = d.RegisterBlocksCache(blocksDesc(1), []uintptr{1, 2, 3, 4}, nil)
	calls["UnregisterCache"] = d.UnregisterCache(ctx, 1)
	calls["DeallocateCache"] = d.DeallocateCache(c)
	calls["RemoveCacheKey"] = d.RemoveCacheKey(key)
	for op, err := range calls {
		if !errors.Is(err, ErrEngineFinalized) {
			t.Errorf("%s after Close: %v", op, err)
		}
	}
	// The peer saw the link go.
	pe := newDecoder(t, 1142, nil)
	linkAll(t, pe, p)
}

func TestFinalizerClosesForgottenEngine(t *testing.T) {
	const id = 0xF1A1
	closed := make(chan uint64, 16)
	hook := func(c uint64) { closed <- c }
	finalizeHook.Store(&hook)
	defer finalizeHook.Store(nil)
	func() {
		e, err := NewEngine(RolePrompt, id, map[string]string{"llm.listenIpInfo": "127.0.0.1:0"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.ListenPort(0); err != nil {
			t.Fatal(err)
		}
	}()
	deadline := time.After(10 * time.Second)
	for {
		runtime.GC()
		select {
		case c := <-closed:
			if c == id {
				return
			}
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatal("the finalizer did not close the forgotten engine")
		}
	}
}
