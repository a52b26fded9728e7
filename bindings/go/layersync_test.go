//go:build cgo

package llmlink

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// slowSync releases layers slowly and checks, before releasing layer i,
// that layer i-1 (tensor i-1: one tensor per layer) is in place on every
// peer and that layers >= i are still untouched there.
type slowSync struct {
	peers    []*peer
	seed     uint64
	from, to []uint64
	layers   int
	failAt   int // a layer for which it returns false (-1: none)
	panicAt  int // a layer for which it panics (-1: none)

	mu     sync.Mutex
	called []uint32
	errs   []string
}

func (s *slowSync) fail(format string, args ...any) bool {
	s.mu.Lock()
	s.errs = append(s.errs, fmt.Sprintf(format, args...))
	s.mu.Unlock()
	return false
}

func (s *slowSync) SynchronizeLayer(layer uint32, timeout time.Duration) bool {
	s.mu.Lock()
	s.called = append(s.called, layer)
	s.mu.Unlock()
	if timeout >= 0 {
		return s.fail("layer %d: timeout %v, the engine passes none (-1)", layer, timeout)
	}
	if int(layer) == s.failAt {
		return false
	}
	if int(layer) == s.panicAt {
		panic("synchronizer panics")
	}
	time.Sleep(30 * time.Millisecond) // "computing" layer `layer`
	i := int(layer)
	for _, p := range s.peers {
		if i > 0 {
			// Layer i-1 was released before: its bytes must arrive
			// (bounded) while we hold layer i back.
			ok := waitFor(5*time.Second, func() bool {
				return p.ask("verifyt B %d %s %s 0 %d", s.seed, listArg(s.from), listArg(s.to), i) == "OK"
			})
			if !ok {
				return s.fail("layer %d: layers < %d not on peer %d", i, i, p.id)
			}
		}
		if r := p.ask("verifyt B 0 - - %d %d", i, s.layers-i); r != "OK" {
			return s.fail("layer %d: peer %d has bytes of a layer not yet released: %s", i, p.id, r)
		}
	}
	return true
}

// Layer-wise push to two peers with a synchronizer that releases layers
// slowly: layer i's bytes are on the peer before layer i+1 is released,
// every byte arrives, and Results has one SUCCESS per target.
func TestTransferCacheAsyncLayerByLayer(t *testing.T) {
	p1, p2 := startPeer(t, 301), startPeer(t, 302)
	d := newDecoder(t, 1301, map[string]string{"llm.SyncKvCacheWaitTime": "20000"})
	linkAll(t, d, p1, p2)
	src, err := d.AllocateBlocksCache(blocksDesc(testBlocks), nil)
	if err != nil {
		t.Fatal(err)
	}
	const seed = 8080
	fillTensors(allTensors(src), src.Desc, seed)
	from, to := []uint64{0, 5, 11}, []uint64{2, 3, 15}
	s := &slowSync{peers: []*peer{p1, p2}, seed: seed, from: from, to: to, layers: 4, failAt: -1, panicAt: -1}
	tr, err := d.TransferCacheAsync(src.ID, s, []TransferTarget{
		AllLayers(NewBlocksCacheKey(p1.id, 1)), AllLayers(NewBlocksCacheKey(p2.id, 1)),
	}, from, to, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := tr.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.errs) > 0 {
		t.Fatal(s.errs)
	}
	if fmt.Sprint(s.called) != "[0 1 2 3]" {
		t.Fatalf("synchronizer called for layers %v", s.called)
	}
	if r := tr.Results(); len(r) != 2 || r[0] != StatusSuccess || r[1] != StatusSuccess {
		t.Fatalf("results %v", r)
	}
	for _, p := range s.peers {
		if r := p.ask("verify B %d %s %s", seed, listArg(from), listArg(to)); r != "OK" {
			t.Fatalf("peer %d: %s", p.id, r)
		}
	}
}

// Per-target results: a target whose cache does not exist fails alone; a
// synchronizer that returns false or panics ends the transfer with
// StatusFailed for the targets not finished; a nil synchronizer is
// refused.
func TestTransferCacheAsyncResults(t *testing.T) {
	p := startPeer(t, 311)
	d := newDecoder(t, 1311, nil)
	linkAll(t, d, p)
	src, err := d.AllocateBlocksCache(blocksDesc(testBlocks), nil)
	if err != nil {
		t.Fatal(err)
	}
	fillTensors(allTensors(src), src.Desc, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	yes := LayerSyncFunc(func(uint32, time.Duration) bool { return true })

	tr, err := d.TransferCacheAsync(src.ID, yes, []TransferTarget{
		AllLayers(NewBlocksCacheKey(p.id, 1)), AllLayers(NewBlocksCacheKey(p.id, 42)),
	}, []uint64{1}, []uint64{1}, 0)
	if err != nil {
		t.Fatal(err)
	}
	err = tr.Wait(ctx)
	if !errors.Is(err, ErrKVCacheNotExist) {
		t.Fatalf("wait: %v", err)
	}
	if r := tr.Results(); len(r) != 2 || r[0] != StatusSuccess || r[1] != StatusKVCacheNotExist {
		t.Fatalf("results %v", r)
	}
	tr.Close()

	for _, c := range []struct {
		what            string
		failAt, panicAt int
	}{{"false at layer 2", 2, -1}, {"panic at layer 1", -1, 1}} {
		s := &slowSync{peers: nil, layers: 4, failAt: c.failAt, panicAt: c.panicAt}
		tr, err := d.TransferCacheAsync(src.ID, s, []TransferTarget{AllLayers(NewBlocksCacheKey(p.id, 1))},
			[]uint64{2}, []uint64{2}, 1)
		if err != nil {
			t.Fatal(err)
		}
		err = tr.Wait(ctx)
		if !errors.Is(err, ErrFailed) {
			t.Fatalf("%s: %v", c.what, err)
		}
		if r := tr.Results(); len(r) != 1 || r[0] != StatusFailed {
			t.Fatalf("%s: results %v", c.what, r)
		}
		tr.Close()
		if tr.st.sync != 0 {
			t.Fatalf("%s: synchronizer handle kept after Close", c.what)
		}
	}

	if _, err := d.TransferCacheAsync(src.ID, nil, []TransferTarget{AllLayers(NewBlocksCacheKey(p.id, 1))}, []uint64{1}, []uint64{1}, 0); !errors.Is(err, ErrParamInvalid) {
		t.Fatalf("nil synchronizer: %v", err)
	}
	_, err = d.TransferCacheAsync(src.ID, yes, nil, []uint64{1}, []uint64{1}, 0)
	wantErr(t, "no targets", err, StatusParamInvalid, "TransferCacheAsync")
}
