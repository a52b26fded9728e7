//go:build cgo

package llmlink

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// goroutinesBack waits (bounded) for the goroutine count to come back to
// at most base and fails the test otherwise.
func goroutinesBack(t *testing.T, base int, what string) {
	t.Helper()
	if !waitFor(5*time.Second, func() bool { return runtime.NumGoroutine() <= base }) {
		buf := make([]byte, 1<<16)
		n := runtime.Stack(buf, true)
		t.Fatalf("%s: %d goroutines, baseline %d:\n%s", what, runtime.NumGoroutine(), base, buf[:n])
	}
}

// goroutinesIn counts the goroutines with a frame of fn on their stack
// (fn as the traceback prints it, e.g. "TestX.func1(").
func goroutinesIn(fn string) int {
	buf := make([]byte, 1<<20)
	n := runtime.Stack(buf, true)
	count := 0
	for _, g := range strings.Split(string(buf[:n]), "\n\n") {
		if strings.Contains(g, fn) {
			count++
		}
	}
	return count
}

// Hundreds of transfers in flight on two links from several goroutines:
// each ends once, its Done channel closes, every byte is where it should
// be, the dispatcher needs no goroutine per transfer, and the task table
// empties as transfers are closed.
func TestAsyncManyInFlight(t *testing.T) {
	const submitters, perSubmitter = 4, 64 // 256 transfers
	p1, p2 := startPeer(t, 201), startPeer(t, 202)
	d := newDecoder(t, 1201, nil)
	linkAll(t, d, p1, p2)
	peers := []*peer{p1, p2}
	dsts := make([]*Cache, 2)
	for i := range dsts {
		c, err := d.AllocateBlocksCache(blocksDesc(submitters*perSubmitter), nil)
		if err != nil {
			t.Fatal(err)
		}
		dsts[i] = c
	}
	base := runtime.NumGoroutine()

	type sub struct {
		tr       *Transfer
		peer     int
		src, dst uint64
	}
	all := make([][]sub, submitters)
	var wg sync.WaitGroup
	errs := make(chan error, submitters)
	for g := 0; g < submitters; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < perSubmitter; i++ {
				n := g*perSubmitter + i
				pi := n % 2
				s := sub{peer: pi, src: uint64(n % testBlocks), dst: uint64(n)}
				tr, err := d.PullBlocksAsync(NewBlocksCacheKey(peers[pi].id, 0), dsts[pi].ID,
					[]uint64{s.src}, []uint64{s.dst}, nil)
				if err != nil {
					errs <- fmt.Errorf("submit %d: %v", n, err)
					return
				}
				s.tr = tr
				all[g] = append(all[g], s)
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// A submitter is still counted between its wg.Done and its return:
	// wait (bounded) until none is left before counting, or a straggler
	// reads as a goroutine of ours.
	if !waitFor(5*time.Second, func() bool { return goroutinesIn("TestAsyncManyInFlight.func1(") == 0 }) {
		t.Fatalf("%d submitters still running after wg.Wait", goroutinesIn("TestAsyncManyInFlight.func1("))
	}
	// While they run: one dispatcher at most, no goroutine per transfer.
	if n := runtime.NumGoroutine(); n > base+1 {
		t.Fatalf("%d goroutines with %d transfers submitted, baseline %d", n, submitters*perSubmitter, base)
	}
	// Wait in reverse order of submission: completions come in any order.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srcs, tos := [2][]uint64{}, [2][]uint64{}
	for g := submitters - 1; g >= 0; g-- {
		for i := len(all[g]) - 1; i >= 0; i-- {
			s := all[g][i]
			if err := s.tr.Wait(ctx); err != nil {
				t.Fatalf("transfer to block %d: %v", s.dst, err)
			}
			select {
			case <-s.tr.Done():
			default:
				t.Fatal("Wait returned nil with Done still open")
			}
			if st := s.tr.Status(); st != StatusSuccess {
				t.Fatalf("status %v after success", st)
			}
			if r := s.tr.Results(); len(r) != 1 || r[0] != StatusSuccess {
				t.Fatalf("results %v", r)
			}
			srcs[s.peer] = append(srcs[s.peer], s.src)
			tos[s.peer] = append(tos[s.peer], s.dst)
		}
	}
	for i, c := range dsts {
		if bad := checkUnits(allTensors(c), c.Desc, peerBlocksSeed(peers[i].id), srcs[i], tos[i], 0); bad != "" {
			t.Fatalf("peer %d: %s", peers[i].id, bad)
		}
	}
	if n := len(d.async.liveTasks()); n != submitters*perSubmitter {
		t.Fatalf("%d tasks in the table before Close, want all %d", n, submitters*perSubmitter)
	}
	for _, l := range all {
		for _, s := range l {
			if err := s.tr.Close(); err != nil {
				t.Fatal(err)
			}
			_ = s.tr.Close() // idempotent
			if s.tr.Status() != StatusSuccess || s.tr.Wait(ctx) != nil {
				t.Fatal("a closed transfer forgot its final status")
			}
		}
	}
	if n := len(d.async.liveTasks()); n != 0 {
		t.Fatalf("%d tasks left in the table after Close", n)
	}
	xs, err := d.XferStats()
	if err != nil || xs.Transfers != submitters*perSubmitter {
		t.Fatalf("xfer stats %+v %v", xs, err)
	}
	goroutinesBack(t, base+1, "after the transfers") // the dispatcher stays until Close
}

// The asynchronous calls refuse what the blocking calls refuse, with the
// same statuses and a message, and return no Transfer.
func TestAsyncSubmitErrors(t *testing.T) {
	p := startPeer(t, 211)
	d := newDecoder(t, 1211, nil)
	linkAll(t, d, p)
	dst, err := d.AllocateBlocksCache(blocksDesc(testBlocks), nil)
	if err != nil {
		t.Fatal(err)
	}
	check := func(what string, tr *Transfer, err error, want Status, op string) {
		t.Helper()
		if tr != nil {
			t.Fatalf("%s: a Transfer with the error", what)
		}
		wantErr(t, what, err, want, op)
	}
	tr, err := d.PullBlocksAsync(NewBlocksCacheKey(p.id, 0), dst.ID, []uint64{0, 1}, []uint64{0}, nil)
	check("block lists of different lengths", tr, err, StatusParamInvalid, "PullBlocksAsync")
	tr, err = d.PullBlocksAsync(NewBlocksCacheKey(999, 0), dst.ID, []uint64{0}, []uint64{0}, nil)
	check("no link", tr, err, StatusNotYetLink, "PullBlocksAsync")
	tr, err = d.PullCacheAsync(NewBlocksCacheKey(p.id, 0), dst.ID, 0, -1, nil)
	check("pull_cache with a blocks key", tr, err, StatusParamInvalid, "PullCacheAsync")
	tr, err = d.PushBlocksAsync(NewBlocksCacheKey(p.id, 1), 424242, []uint64{0}, []uint64{0}, nil)
	check("unknown local cache", tr, err, StatusKVCacheNotExist, "PushBlocksAsync")
	big := make([]byte, MaxNotifyBytes+1)
	tr, err = d.PushBlocksAsync(NewBlocksCacheKey(p.id, 1), dst.ID, []uint64{0}, []uint64{0}, nil, WithNotify(big))
	check("attached notification too big", tr, err, StatusParamInvalid, "PushBlocksAsync")
	tr, err = d.PushCacheAsync(NewCacheKeyByIDAndIndex(p.id, p.c, 0), dst.ID, 0, -1, nil, WithTaskTimeout(-time.Second))
	check("negative timeout", tr, err, StatusParamInvalid, "PushCacheAsync")

	// A remote refusal ends the transfer (it was accepted locally).
	tr, err = d.PullBlocksAsync(NewBlocksCacheKey(p.id, 42), dst.ID, []uint64{0}, []uint64{0}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	err = tr.Wait(context.Background())
	wantErr(t, "unknown remote key", err, StatusKVCacheNotExist, "PullBlocksAsync")
	if !errors.Is(tr.Err(), ErrKVCacheNotExist) || tr.Status() != StatusKVCacheNotExist {
		t.Fatalf("Err %v Status %v", tr.Err(), tr.Status())
	}
	var ce *CancelError
	if errors.As(err, &ce) {
		t.Fatal("a failure without a context is no CancelError")
	}
	if err := tr.Wait(nil); !errors.Is(err, ErrParamInvalid) { //nolint:staticcheck // nil ctx on purpose
		t.Fatalf("nil context: %v", err)
	}
}

// All four asynchronous calls move the right bytes, an attached
// notification reaches the peer only once the bytes are in place, and
// Cancel after success changes nothing.
func TestAsyncKindsAndAttachedNotify(t *testing.T) {
	p := startPeer(t, 221)
	d := newDecoder(t, 1221, nil)
	linkAll(t, d, p)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	dst, err := d.AllocateBlocksCache(blocksDesc(testBlocks), nil)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := d.PullBlocksAsync(NewBlocksCacheKey(p.id, 0), dst.ID, []uint64{5, 6}, []uint64{1, 2}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if err := tr.Cancel(); err != nil || tr.Status() != StatusSuccess {
		t.Fatalf("cancel after success: %v %v", err, tr.Status())
	}
	tr.Close()
	if bad := checkUnits(allTensors(dst), dst.Desc, peerBlocksSeed(p.id), []uint64{5, 6}, []uint64{1, 2}, 0); bad != "" {
		t.Fatal(bad)
	}

	bdst, err := d.AllocateCache(batchDesc(2), nil)
	if err != nil {
		t.Fatal(err)
	}
	tr, err = d.PullCacheAsync(NewCacheKeyByIDAndIndex(p.id, p.c, 1), bdst.ID, 0, -1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	tr.Close()
	if bad := checkUnits(allTensors(bdst), bdst.Desc, peerBatchSeed(p.id), []uint64{1}, []uint64{0}, 0); bad != "" {
		t.Fatal(bad)
	}

	// A push with an attached notification: the peer waits for the
	// notification and checks cache B the moment it arrives.
	src, err := d.AllocateBlocksCache(blocksDesc(testBlocks), nil)
	if err != nil {
		t.Fatal(err)
	}
	const seed = 777
	fillTensors(allTensors(src), src.Desc, seed)
	from, to := []uint64{0, 3, 9, 15}, []uint64{4, 5, 6, 7}
	if _, err := fmt.Fprintf(p.stdin, "noteverify %d %s %s 10000\n", seed, listArg(from), listArg(to)); err != nil {
		t.Fatal(err)
	}
	tr, err = d.PushBlocksAsync(NewBlocksCacheKey(p.id, 1), src.ID, from, to, nil, WithNotify([]byte("req-42 read")))
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	tr.Close()
	if r := p.reply(); r != "NOTE req-42 read OK" {
		t.Fatalf("peer: %s", r)
	}

	bsrc, err := d.AllocateCache(batchDesc(2), nil)
	if err != nil {
		t.Fatal(err)
	}
	fillTensors(allTensors(bsrc), bsrc.Desc, seed+1)
	tr, err = d.PushCacheAsync(NewCacheKeyByIDAndIndex(p.id, p.c, 0), bsrc.ID, 1, -1, nil, WithTaskTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	tr.Close()
	back, err := d.AllocateCache(batchDesc(2), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.PullCache(ctx, NewCacheKeyByIDAndIndex(p.id, p.c, 0), back.ID, 0, -1, nil); err != nil {
		t.Fatal(err)
	}
	if bad := checkUnits(allTensors(back), back.Desc, seed+1, []uint64{1}, []uint64{0}, 0); bad != "" {
		t.Fatal(bad)
	}
}

// A dropped Transfer is released by its finalizer: the task leaves the
// engine's table.
func TestTransferFinalizer(t *testing.T) {
	p := startPeer(t, 231)
	d := newDecoder(t, 1231, nil)
	linkAll(t, d, p)
	dst, err := d.AllocateBlocksCache(blocksDesc(testBlocks), nil)
	if err != nil {
		t.Fatal(err)
	}
	func() {
		tr, err := d.PullBlocksAsync(NewBlocksCacheKey(p.id, 0), dst.ID, []uint64{1}, []uint64{1}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := tr.Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
	}()
	if !waitFor(10*time.Second, func() bool { runtime.GC(); return len(d.async.liveTasks()) == 0 }) {
		t.Fatalf("%d tasks still in the table", len(d.async.liveTasks()))
	}
}

// The dispatcher sleeps in the netpoller: no collection while nothing
// happens, and a few per completed transfer (not a loop).
func TestDispatcherSleepsOnTheFd(t *testing.T) {
	p := startPeer(t, 205)
	d := newDecoder(t, 1205, nil)
	linkAll(t, d, p)
	dst, err := d.AllocateBlocksCache(blocksDesc(testBlocks), nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = d.Notifications() // starts the dispatcher
	time.Sleep(50 * time.Millisecond)
	before := d.async.wakes.Load()
	time.Sleep(300 * time.Millisecond)
	if w := d.async.wakes.Load(); w != before {
		t.Fatalf("%d collections in 300 ms with nothing to collect", w-before)
	}
	for i := 0; i < 10; i++ {
		tr, err := d.PullBlocksAsync(NewBlocksCacheKey(p.id, 0), dst.ID, []uint64{uint64(i)}, []uint64{uint64(i)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := tr.Wait(context.Background()); err != nil {
			t.Fatal(err)
		}
		tr.Close()
	}
	w := d.async.wakes.Load() - before
	if w < 1 || w > 30 {
		t.Fatalf("%d collections for 10 transfers", w)
	}
	// A completion racing with a collection costs one timed look at most.
	if h := d.async.heldPolls.Load(); h > 10 {
		t.Fatalf("%d timed looks for 10 transfers without held notifications", h)
	}
}
