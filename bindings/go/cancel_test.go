//go:build cgo

package llmlink

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	cancelBlocks   = 1024 // blocks of the peer's caches in the cancel tests (8 MiB each)
	cancelRounds   = 12
	cancelParallel = 8   // transfers per round, each with its own ctx
	cancelSpan     = 128 // blocks per transfer (1 MiB)
	quietFor       = 200 * time.Millisecond
)

// cancelOutcome classifies what Wait returned after a ctx cancel at a
// random moment: nil (it finished first) or a CancelError carrying
// ErrCancelled / ErrCancelledLinkClosed; or, once a sibling's cancel had to
// close the link (a tcp push on the wire), ErrNotYetLink / ErrNetworkError
// (the round's check requires such a sibling). Anything else fails.
func cancelOutcome(err error) (Status, error) {
	if err == nil {
		return StatusSuccess, nil
	}
	if errors.Is(err, ErrNotYetLink) || errors.Is(err, ErrNetworkError) {
		return StatusNotYetLink, nil
	}
	var ce *CancelError
	if !errors.As(err, &ce) || !errors.Is(err, context.Canceled) {
		return 0, fmt.Errorf("not a cancelled wait: %v", err)
	}
	var le *Error
	if !errors.As(err, &le) || le.Status != ce.Err.Status {
		return 0, fmt.Errorf("no final status in %v", err)
	}
	if !errors.Is(err, ErrCancelled) && !errors.Is(err, ErrCancelledLinkClosed) {
		return 0, fmt.Errorf("final status %v after a cancel", le.Status)
	}
	return le.Status, nil
}

// runCancelled submits one transfer per span, cancels each span's ctx
// after a random delay (some at once), waits for every Wait, and returns
// their outcomes. Each Wait runs on a goroutine of the test's own; the
// cancel itself runs on that goroutine, inside Wait.
func runCancelled(t *testing.T, rng *rand.Rand, submit func(span int) (*Transfer, error)) []Status {
	t.Helper()
	out := make([]Status, cancelParallel)
	errs := make([]error, cancelParallel)
	delays := make([]time.Duration, cancelParallel)
	for i := range delays {
		if i%4 != 0 { // every fourth is cancelled before it can start
			delays[i] = time.Duration(rng.Intn(3000)) * time.Microsecond
		}
	}
	var wg sync.WaitGroup
	for i := 0; i < cancelParallel; i++ {
		tr, err := submit(i)
		if errors.Is(err, ErrNotYetLink) {
			out[i] = StatusNotYetLink // a sibling's cancel closed the link
			continue
		}
		if err != nil {
			t.Fatalf("submit %d: %v", i, err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			defer tr.Close()
			if delays[i] == 0 {
				cancel()
			} else {
				stop := time.AfterFunc(delays[i], cancel)
				defer stop.Stop()
			}
			err := tr.Wait(ctx)
			cancel()
			// Fenced: once Wait returned, the status is final.
			if s := tr.Status(); s == StatusTaskPending {
				errs[i] = fmt.Errorf("transfer %d pending after Wait returned", i)
				return
			}
			out[i], errs[i] = cancelOutcome(err)
		}(i)
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// quiet checks that sum() stays the same for quietFor (every 10 ms).
func quiet(t *testing.T, what string, sum func() string) {
	t.Helper()
	first := sum()
	end := time.Now().Add(quietFor)
	for time.Now().Before(end) {
		time.Sleep(10 * time.Millisecond)
		if s := sum(); s != first {
			t.Fatalf("%s changed after every cancel had returned: %s -> %s", what, first, s)
		}
	}
}

func relinkIfClosed(t *testing.T, d *Engine, p *peer, outcomes []Status) {
	t.Helper()
	closed, lost := false, false
	for _, s := range outcomes {
		closed = closed || s == StatusCancelledLinkClosed
		lost = lost || s == StatusNotYetLink
	}
	if lost && !closed {
		t.Fatalf("transfers lost their link but no cancel closed it: %v", outcomes)
	}
	for _, s := range outcomes {
		if s == StatusCancelledLinkClosed {
			if !waitFor(5*time.Second, func() bool {
				st, _ := d.CheckLinkStatus(p.id)
				return st != StatusSuccess
			}) {
				t.Fatal("CANCELLED_LINK_CLOSED but the link still up")
			}
			linkAll(t, d, p)
			return
		}
	}
}

// unitOK: dst unit du of every tensor of c holds unit su of seed.
func unitOK(c *Cache, seed uint64, su, du uint64) bool {
	ub := unitBytes(c.Desc)
	want := make([]byte, ub)
	for ti := 0; ti < int(c.Desc.NumTensors); ti++ {
		fillUnit(want, seed, ti, int(su))
		if !bytes.Equal(c.Tensor(ti)[int(du)*ub:int(du+1)*ub], want) {
			return false
		}
	}
	return true
}

// Context cancellation at random moments of pulls and pushes is a real,
// fenced cancel (go test -race): when Wait returns, the destination (our
// memory for a pull, the peer's for a push) never changes again (checked
// for 200 ms), transfers that finished first have every byte, the link
// keeps working for other transfers, and no goroutine is left behind.
func TestCancelIsFenced(t *testing.T) {
	for _, transport := range []string{"tcp", "auto"} {
		t.Run(transport, func(t *testing.T) {
			seed := time.Now().UnixNano()
			t.Logf("random seed %d", seed)
			rng := rand.New(rand.NewSource(seed))
			p := startPeerEnv(t, 241, []string{fmt.Sprintf("%s=%d", peerBlocksEnv, cancelBlocks)}, "llmlink.Transport="+transport)
			d := newDecoder(t, 1241, map[string]string{"llmlink.Transport": transport})
			linkAll(t, d, p)
			dst, err1 := d.AllocateBlocksCache(blocksDesc(cancelBlocks), nil)
			src, err2 := d.AllocateBlocksCache(blocksDesc(cancelBlocks), nil)
			if err1 != nil || err2 != nil {
				t.Fatal(err1, err2)
			}
			const pushSeed = 4242
			fillTensors(allTensors(src), src.Desc, pushSeed)
			base := runtime.NumGoroutine() + 1 // + the dispatcher, once started
			counts := map[Status]int{}
			span := func(i int) []uint64 {
				b := make([]uint64, cancelSpan)
				for j := range b {
					b[j] = uint64(i*cancelSpan + j)
				}
				return b
			}
			for r := 0; r < cancelRounds; r++ {
				// Pulls into dst, each span its own blocks.
				outs := runCancelled(t, rng, func(i int) (*Transfer, error) {
					return d.PullBlocksAsync(NewBlocksCacheKey(p.id, 0), dst.ID, span(i), span(i), nil)
				})
				quiet(t, "our pull destination", func() string { return fmt.Sprintf("%08x", tensorsSum(dst)) })
				for i, s := range outs {
					counts[s]++
					if s == StatusSuccess {
						for _, b := range span(i) {
							if !unitOK(dst, peerBlocksSeed(p.id), b, b) {
								t.Fatalf("round %d: pull %d succeeded but block %d differs", r, i, b)
							}
						}
					}
				}
				relinkIfClosed(t, d, p, outs)
				// Pushes into the peer's B, checksummed there.
				outs = runCancelled(t, rng, func(i int) (*Transfer, error) {
					return d.PushBlocksAsync(NewBlocksCacheKey(p.id, 1), src.ID, span(i), span(i), nil)
				})
				quiet(t, "the peer's push destination", func() string { return p.ask("sum B") })
				for _, s := range outs {
					counts[s]++
				}
				relinkIfClosed(t, d, p, outs)
				// Other transfers on the link still complete.
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				b := uint64(rng.Intn(testBlocks))
				err := d.PullBlocks(ctx, NewBlocksCacheKey(p.id, 0), dst.ID, []uint64{b}, []uint64{b}, nil)
				cancel()
				if err != nil || !unitOK(dst, peerBlocksSeed(p.id), b, b) {
					t.Fatalf("round %d: a transfer after the cancels: %v", r, err)
				}
			}
			t.Logf("%s: outcomes %v", transport, counts)
			if counts[StatusCancelled]+counts[StatusCancelledLinkClosed] == 0 {
				t.Fatal("no transfer was cancelled: the test tested nothing")
			}
			goroutinesBack(t, base, "after the cancelled waits")
			if len(d.async.liveTasks()) != 0 {
				t.Fatal("tasks left in the table")
			}
		})
	}
}

// A transfer the peer cannot answer (frozen): a ctx deadline cancels it
// within the fence time, the error is both DeadlineExceeded and the final
// status, and nothing is left running. Engine.Close cancels a transfer
// still in flight; its Wait then reports the cancel.
func TestCancelFrozenPeer(t *testing.T) {
	p := startPeer(t, 251, "llmlink.Transport=tcp")
	d, err := NewEngine(RoleDecoder, 1251, map[string]string{
		"llm.SyncKvCacheWaitTime": "20000", "llmlink.Transport": "tcp",
		"llmlink.LivenessIntervalMs": "600000",
	})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	linkAll(t, d, p)
	dst, err := d.AllocateBlocksCache(blocksDesc(testBlocks), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer p.cmd.Process.Signal(syscall.SIGCONT)
	if !waitFor(5*time.Second, func() bool { return processStopped(p.cmd.Process.Pid) }) {
		t.Fatal("the peer did not stop")
	}
	base := runtime.NumGoroutine() + 1

	tr, err := d.PullBlocksAsync(NewBlocksCacheKey(p.id, 0), dst.ID, []uint64{1}, []uint64{1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = tr.Wait(ctx)
	took := time.Since(start)
	if !errors.Is(err, context.DeadlineExceeded) || !(errors.Is(err, ErrCancelled) || errors.Is(err, ErrCancelledLinkClosed)) {
		t.Fatalf("wait: %v", err)
	}
	if !strings.Contains(err.Error(), "context deadline exceeded") {
		t.Fatalf("message %q", err)
	}
	// Bounded by the C side (a tcp pull drains the rest of its request
	// first: at most the task's deadline plus 2 s), far below the 20 s
	// transfer timeout.
	if took > 8*time.Second {
		t.Fatalf("the cancel took %v", took)
	}
	if s := tr.Status(); s != StatusCancelled && s != StatusCancelledLinkClosed {
		t.Fatalf("status %v after the cancel", s)
	}
	t.Logf("deadline: %v after %v", tr.Status(), took)
	tr.Close()
	goroutinesBack(t, base, "after a deadline")
	if st, _ := d.CheckLinkStatus(p.id); st != StatusSuccess {
		_ = p.cmd.Process.Signal(syscall.SIGCONT)
		linkAll(t, d, p)
		_ = p.cmd.Process.Signal(syscall.SIGSTOP)
		if !waitFor(5*time.Second, func() bool { return processStopped(p.cmd.Process.Pid) }) {
			t.Fatal("the peer did not stop")
		}
	}

	// Cancel() on a stuck push, then Close with one still in flight.
	tr2, err := d.PushBlocksAsync(NewBlocksCacheKey(p.id, 1), dst.ID, []uint64{2}, []uint64{2}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tr3, err := d.PullBlocksAsync(NewBlocksCacheKey(p.id, 0), dst.ID, []uint64{3}, []uint64{3}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tr3.Close()
	if err := tr2.Cancel(); !errors.Is(err, ErrCancelled) && !errors.Is(err, ErrCancelledLinkClosed) {
		t.Fatalf("Cancel: %v", err)
	}
	tr2.Close()
	start = time.Now()
	d.Close()
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("Close took %v", took)
	}
	select {
	case <-tr3.Done():
	default:
		t.Fatal("Close left a transfer unfinished")
	}
	// Cancelled by Close, or failed first when tr2's cancel closed the link.
	if err := tr3.Wait(context.Background()); !errors.Is(err, ErrCancelled) && !errors.Is(err, ErrCancelledLinkClosed) &&
		!errors.Is(err, ErrNotYetLink) && !errors.Is(err, ErrNetworkError) {
		t.Fatalf("a transfer Close cancelled: %v", err)
	}
	if _, err := d.PullBlocksAsync(NewBlocksCacheKey(p.id, 0), dst.ID, []uint64{1}, []uint64{1}, nil); !errors.Is(err, ErrEngineFinalized) {
		t.Fatalf("submit after Close: %v", err)
	}
	if _, ok := <-d.Notifications(); ok {
		t.Fatal("Notifications open after Close")
	}
}
