//go:build cgo

package llmlink

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

func TestPullBlocksBytes(t *testing.T) {
	for _, transport := range []string{"auto", "tcp"} {
		t.Run(transport, func(t *testing.T) {
			p := startPeer(t, 71, "llmlink.Transport="+transport)
			d := newDecoder(t, 1071, map[string]string{"llmlink.Transport": transport})
			linkAll(t, d, p)
			dst, err := d.AllocateBlocksCache(blocksDesc(testBlocks), nil)
			if err != nil {
				t.Fatal(err)
			}
			src, to := []uint64{3, 4, 9}, []uint64{0, 1, 2}
			if err := d.PullBlocks(context.Background(), NewBlocksCacheKey(p.id, 0), dst.ID, src, to, nil); err != nil {
				t.Fatal(err)
			}
			if bad := checkUnits(allTensors(dst), dst.Desc, peerBlocksSeed(p.id), src, to, 0); bad != "" {
				t.Fatal(bad)
			}
			// Layer 1 only (tensors 2 and 3) of two more blocks.
			src2, to2 := []uint64{15}, []uint64{7}
			lr := &LayerRange{SrcStart: 1, SrcEnd: 2, DstStart: 1, DstEnd: 2, TensorsPerLayer: 2}
			if err := d.PullBlocks(context.Background(), NewBlocksCacheKey(p.id, 0), dst.ID, src2, to2, lr); err != nil {
				t.Fatal(err)
			}
			// Tensors 0 and 1 (layer 0) as before; 2 and 3 also have block 7.
			tensors := allTensors(dst)
			if bad := checkUnits(tensors[:2], dst.Desc, peerBlocksSeed(p.id), src, to, 0); bad != "" {
				t.Fatal(bad)
			}
			if bad := checkUnits(tensors[2:], dst.Desc, peerBlocksSeed(p.id), append(src, src2...), append(to, to2...), 2); bad != "" {
				t.Fatal(bad)
			}
			xs, err := d.XferStats()
			if err != nil || xs.Transfers != 2 {
				t.Fatalf("xfer stats: %+v %v", xs, err)
			}
			if transport == "tcp" && xs.TCPRequests == 0 {
				t.Fatalf("tcp forced, none sent over tcp: %+v", xs)
			}
		})
	}
}

// Memory Go does not manage (an anonymous mmap here), registered by its
// raw addresses.
func TestRegisteredMemoryPull(t *testing.T) {
	p := startPeer(t, 81)
	d := newDecoder(t, 1081, nil)
	linkAll(t, d, p)
	desc := blocksDesc(testBlocks)
	size := int(desc.TensorBytes())
	mem, err := syscall.Mmap(-1, 0, size*int(desc.NumTensors), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Munmap(mem)
	var addrs []uintptr
	var tensors [][]byte
	for i := 0; i < int(desc.NumTensors); i++ {
		addrs = append(addrs, uintptr(unsafe.Pointer(&mem[i*size])))
		tensors = append(tensors, mem[i*size:(i+1)*size])
	}
	c, err := d.RegisterBlocksCache(desc, addrs, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Allocated() || c.Tensor(0) != nil {
		t.Fatal("a registered cache is the caller's memory: no tensor slices")
	}
	src, to := []uint64{0, 15, 8}, []uint64{15, 0, 3}
	if err := d.PullBlocks(context.Background(), NewBlocksCacheKey(p.id, 0), c.ID, src, to, nil); err != nil {
		t.Fatal(err)
	}
	if bad := checkUnits(tensors, desc, peerBlocksSeed(p.id), src, to, 0); bad != "" {
		t.Fatal(bad)
	}
	if err := d.UnregisterCache(context.Background(), c.ID); err != nil {
		t.Fatal(err)
	}
	err = d.PullBlocks(context.Background(), NewBlocksCacheKey(p.id, 0), c.ID, src, to, nil)
	if !errors.Is(err, ErrKVCacheNotExist) && !errors.Is(err, ErrParamInvalid) {
		t.Fatalf("pull into an unregistered cache: %v", err)
	}
	// RegisterCache (batch entries) by raw addresses too.
	bc, err := d.RegisterCache(batchDesc(2), addrs, []CacheKey{NewCacheKey(d.ClusterID(), 1, 0)})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.UnregisterCache(context.Background(), bc.ID); err != nil {
		t.Fatal(err)
	}
}

func TestPullCacheBytes(t *testing.T) {
	p := startPeer(t, 91)
	d := newDecoder(t, 1091, nil)
	linkAll(t, d, p)
	dst, err := d.AllocateCache(batchDesc(2), nil)
	if err != nil {
		t.Fatal(err)
	}
	key := NewCacheKey(p.id, 8, 0) // the peer's entry 1
	if err := d.PullCache(context.Background(), key, dst.ID, 0, -1, nil); err != nil {
		t.Fatal(err)
	}
	if bad := checkUnits(allTensors(dst), dst.Desc, peerBatchSeed(p.id), []uint64{1}, []uint64{0}, 0); bad != "" {
		t.Fatal(bad)
	}
	// The peer allocated that cache: a pulled CacheKey is dropped.
	if err := d.PullCache(context.Background(), key, dst.ID, 1, -1, nil); !errors.Is(err, ErrKVCacheNotExist) {
		t.Fatalf("second pull of a dropped key: %v", err)
	}
	// By id and index: entry 0 of the peer's cache C into entry 1.
	if err := d.PullCache(context.Background(), NewCacheKeyByIDAndIndex(p.id, p.c, 0), dst.ID, 1, -1, nil); err != nil {
		t.Fatal(err)
	}
	if bad := checkUnits(allTensors(dst), dst.Desc, peerBatchSeed(p.id), []uint64{1, 0}, []uint64{0, 1}, 0); bad != "" {
		t.Fatal(bad)
	}
}

func TestPushBytes(t *testing.T) {
	p := startPeer(t, 101)
	d := newDecoder(t, 1101, nil)
	linkAll(t, d, p)
	src, err := d.AllocateBlocksCache(blocksDesc(testBlocks), nil)
	if err != nil {
		t.Fatal(err)
	}
	// Written through the []byte views: the library sees the same bytes.
	const seed = 555
	fillTensors(allTensors(src), src.Desc, seed)
	from, to := []uint64{1, 2, 14}, []uint64{5, 6, 0}
	if err := d.PushBlocks(context.Background(), NewBlocksCacheKey(p.id, 1), src.ID, from, to, nil); err != nil {
		t.Fatal(err)
	}
	if r := p.ask("verify B %d %s %s", seed, listArg(from), listArg(to)); r != "OK" {
		t.Fatalf("peer: %s", r)
	}
	// push_cache: batch entry 1 of a local cache into the peer's entry 0.
	bsrc, err := d.AllocateCache(batchDesc(2), nil)
	if err != nil {
		t.Fatal(err)
	}
	fillTensors(allTensors(bsrc), bsrc.Desc, seed+1)
	if err := d.PushCache(context.Background(), NewCacheKeyByIDAndIndex(p.id, p.c, 0), bsrc.ID, 1, -1, nil); err != nil {
		t.Fatal(err)
	}
	// Entry 0 now holds our entry 1; entry 1 still the peer's own pattern,
	// which verify cannot express with one seed: check entry 0 only by
	// pulling it back.
	back, err := d.AllocateCache(batchDesc(2), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.PullCache(context.Background(), NewCacheKeyByIDAndIndex(p.id, p.c, 0), back.ID, 0, -1, nil); err != nil {
		t.Fatal(err)
	}
	if bad := checkUnits(allTensors(back), back.Desc, seed+1, []uint64{1}, []uint64{0}, 0); bad != "" {
		t.Fatal(bad)
	}
}

// processStopped reads the state of pid from /proc: every thread stopped.
func processStopped(pid int) bool {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil || len(tasks) == 0 {
		return false
	}
	for _, task := range tasks {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, task.Name()))
		if err != nil {
			return false
		}
		// "pid (comm) S ...": the state follows the last ')'.
		i := strings.LastIndexByte(string(stat), ')')
		if i < 0 || i+2 >= len(stat) || (stat[i+2] != 'T' && stat[i+2] != 't') {
			return false
		}
	}
	return true
}

// wantErr checks err is an *Error of status want from op, with a message.
func wantErr(t *testing.T, what string, err error, want Status, op string) *Error {
	t.Helper()
	var le *Error
	if !errors.As(err, &le) {
		t.Fatalf("%s: %v is no *Error", what, err)
	}
	if le.Status != want || !errors.Is(err, sentinel(want)) || le.Op != op {
		t.Fatalf("%s: got %v (op %s), want %v (op %s)", what, err, le.Op, want, op)
	}
	if le.Msg == "" {
		t.Fatalf("%s: no message from the C side", what)
	}
	return le
}

func TestCacheAndTransferErrors(t *testing.T) {
	p := startPeer(t, 111)
	d := newDecoder(t, 1111, nil)
	linkAll(t, d, p)
	ctx := context.Background()
	dst, err := d.AllocateBlocksCache(blocksDesc(testBlocks), nil)
	if err != nil {
		t.Fatal(err)
	}

	err = d.PullBlocks(ctx, NewBlocksCacheKey(p.id, 42), dst.ID, []uint64{0}, []uint64{0}, nil)
	wantErr(t, "unknown remote key", err, StatusKVCacheNotExist, "PullBlocks")
	err = d.PullBlocks(ctx, NewBlocksCacheKey(999, 0), dst.ID, []uint64{0}, []uint64{0}, nil)
	wantErr(t, "no link with that cluster", err, StatusNotYetLink, "PullBlocks")
	err = d.PullBlocks(ctx, NewBlocksCacheKey(p.id, 0), dst.ID, []uint64{0, 1}, []uint64{0}, nil)
	wantErr(t, "block lists of different lengths", err, StatusParamInvalid, "PullBlocks")
	err = d.PullBlocks(ctx, NewBlocksCacheKey(p.id, 0), dst.ID, []uint64{testBlocks}, []uint64{0}, nil)
	wantErr(t, "remote block past the end", err, StatusParamInvalid, "PullBlocks")
	err = d.PullBlocks(ctx, NewBlocksCacheKey(p.id, 0), dst.ID, []uint64{0, 1}, []uint64{3, 3}, nil)
	wantErr(t, "a destination block twice", err, StatusParamInvalid, "PullBlocks")
	err = d.PullBlocks(ctx, NewBlocksCacheKey(p.id, 0), dst.ID, nil, nil, nil)
	wantErr(t, "no blocks", err, StatusParamInvalid, "PullBlocks")
	err = d.PullBlocks(ctx, NewBlocksCacheKey(p.id, 0), dst.ID, []uint64{0}, []uint64{0}, &LayerRange{SrcStart: 0, SrcEnd: 5, DstStart: 0, DstEnd: 5})
	wantErr(t, "layer range past the end", err, StatusParamInvalid, "PullBlocks")
	err = d.PullCache(ctx, NewBlocksCacheKey(p.id, 0), dst.ID, 0, -1, nil)
	wantErr(t, "pull_cache with a blocks key", err, StatusParamInvalid, "PullCache")
	err = d.PushBlocks(ctx, NewBlocksCacheKey(p.id, 42), dst.ID, []uint64{0}, []uint64{0}, nil)
	wantErr(t, "push to an unknown key", err, StatusKVCacheNotExist, "PushBlocks")
	err = d.PushCache(ctx, NewCacheKeyByIDAndIndex(p.id, 424242, 0), dst.ID, 0, -1, nil)
	if !errors.Is(err, ErrKVCacheNotExist) && !errors.Is(err, ErrParamInvalid) {
		t.Fatalf("push_cache to an unknown id: %v", err)
	}
	// Nothing of the refused pulls reached dst.
	if bad := checkUnits(allTensors(dst), dst.Desc, 0, nil, nil, 0); bad != "" {
		t.Fatalf("a refused transfer moved bytes: %s", bad)
	}

	desc := blocksDesc(testBlocks)
	_, err = d.RegisterBlocksCache(desc, []uintptr{0x1000}, nil)
	wantErr(t, "one address for four tensors", err, StatusParamInvalid, "RegisterBlocksCache")
	_, err = d.RegisterBlocksCache(desc, []uintptr{0, 0, 0, 0}, nil)
	wantErr(t, "address 0", err, StatusParamInvalid, "RegisterBlocksCache")
	long := desc
	long.Shape = []int64{1, 1, 1, 1, 1, 1, 1, 1, 1}
	_, err = d.AllocateBlocksCache(long, nil)
	wantErr(t, "nine dimensions", err, StatusParamInvalid, "AllocateBlocksCache")
	dev := desc
	dev.Placement = PlacementDevice
	_, err = d.AllocateBlocksCache(dev, nil)
	if !errors.Is(err, ErrFeatureNotEnabled) && !errors.Is(err, ErrParamInvalid) {
		t.Fatalf("device placement: %v", err)
	}
	k := NewBlocksCacheKey(d.ClusterID(), 3)
	if _, err := d.AllocateBlocksCache(desc, &k); err != nil {
		t.Fatal(err)
	}
	_, err = d.AllocateBlocksCache(desc, &k)
	wantErr(t, "a blocks key twice", err, StatusCacheKeyAlreadyExist, "AllocateBlocksCache")
	_, err = d.AllocateCache(batchDesc(2), []CacheKey{NewCacheKey(1, 1, 1), NewCacheKey(1, 1, 1)})
	wantErr(t, "a cache key twice in one call", err, StatusCacheKeyAlreadyExist, "AllocateCache")
	err = d.UnregisterCache(ctx, dst.ID)
	wantErr(t, "unregister an allocated cache", err, StatusParamInvalid, "UnregisterCache")
	err = d.UnregisterCache(ctx, 777777)
	wantErr(t, "unregister an unknown id", err, StatusKVCacheNotExist, "UnregisterCache")
	err = d.RemoveCacheKey(NewBlocksCacheKey(d.ClusterID(), 99))
	wantErr(t, "remove an unknown key", err, StatusKVCacheNotExist, "RemoveCacheKey")
	if err := d.RemoveCacheKey(k); err != nil {
		t.Fatal(err)
	}
	if err := d.DeallocateCache(dst); err != nil {
		t.Fatal(err)
	}
	if dst.Tensor(0) != nil {
		t.Fatal("Tensor after DeallocateCache")
	}
	err = d.DeallocateCache(dst)
	wantErr(t, "deallocate twice", err, StatusKVCacheNotExist, "DeallocateCache")
	if err := d.DeallocateCache(nil); !errors.Is(err, ErrParamInvalid) {
		t.Fatalf("nil cache: %v", err)
	}
	if err := d.PullBlocks(nil, NewBlocksCacheKey(p.id, 0), 1, []uint64{0}, []uint64{0}, nil); !errors.Is(err, ErrParamInvalid) {
		t.Fatalf("nil context: %v", err)
	}
}

// A transfer the peer cannot answer (frozen, over tcp): cancel and deadline
// cancel it for real (fenced, within the transport's fence time, far less
// than the transfer timeout); nothing is left running, so Close does not
// wait.
func TestTransferContextCancelAndClose(t *testing.T) {
	p := startPeer(t, 121, "llmlink.Transport=tcp")
	d, err := NewEngine(RoleDecoder, 1121, map[string]string{
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

	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(150*time.Millisecond, cancel)
	start := time.Now()
	err = d.PullBlocks(ctx, NewBlocksCacheKey(p.id, 0), dst.ID, []uint64{1}, []uint64{1}, nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancel: %v", err)
	}
	// A tcp pull drains the rest of its request into scratch before it
	// returns (bounded by the C side: at most the task's deadline plus 2 s;
	// ~3 s against a frozen peer): well under the 20 s transfer timeout.
	if took := time.Since(start); took > 8*time.Second {
		t.Fatalf("cancel took %v, the transfer timeout is 20 s", took)
	}
	if !errors.Is(err, ErrCancelled) && !errors.Is(err, ErrCancelledLinkClosed) {
		t.Fatalf("cancel: no final status of a cancel in %v", err)
	}
	if n := d.running(); n != 0 {
		t.Fatalf("%d calls running after a cancelled transfer", n)
	}
	linkAgain := func() {
		if st, _ := d.CheckLinkStatus(p.id); st != StatusSuccess {
			_ = p.cmd.Process.Signal(syscall.SIGCONT)
			linkAll(t, d, p)
			_ = p.cmd.Process.Signal(syscall.SIGSTOP)
			waitFor(5*time.Second, func() bool { return processStopped(p.cmd.Process.Pid) })
		}
	}
	linkAgain()
	dctx, dcancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer dcancel()
	start = time.Now()
	err = d.PushBlocks(dctx, NewBlocksCacheKey(p.id, 1), dst.ID, []uint64{1}, []uint64{1}, nil)
	if !errors.Is(err, context.DeadlineExceeded) || (!errors.Is(err, ErrCancelled) && !errors.Is(err, ErrCancelledLinkClosed)) {
		t.Fatalf("deadline: %v", err)
	}
	if took := time.Since(start); took > 8*time.Second {
		t.Fatalf("deadline cancel took %v", took)
	}
	if n := d.running(); n != 0 {
		t.Fatalf("%d calls running after a deadline", n)
	}
	start = time.Now()
	d.Close()
	if took := time.Since(start); took > time.Second {
		t.Fatalf("Close took %v with nothing running", took)
	}
}
