//go:build cgo

package llmlink

/*
#include "shim.h"

extern int gollkGoLayerSync(uint32_t, int32_t, uintptr_t);

// llmlink_layer_sync_fn, calling the Go synchronizer whose cgo.Handle is
// user_data (an integer, never a Go pointer in C memory).
static bool gollk_layer_sync(uint32_t layer, int32_t timeout_ms, void *user)
{
    return gollkGoLayerSync(layer, timeout_ms, (uintptr_t)user) != 0;
}

static inline llmlink_status_t gollk_transfer_cache_async(
    llmlink_t *dd, int64_t src, uintptr_t sync_handle, const llmlink_transfer_target_t *targets,
    size_t ntargets, const uint64_t *src_blocks, size_t nsrc, const uint64_t *dst_blocks,
    size_t ndst, uint32_t tensors_per_layer, int32_t timeout_ms, const void *nd, size_t nl,
    llmlink_task_t **task, gollk_err_t *err)
{
    llmlink_task_options_t o = gollk_task_opts(timeout_ms, nd, nl);
    return gollk_done(llmlink_transfer_cache_async(dd, src, gollk_layer_sync, (void *)sync_handle,
                                                   targets, ntargets, src_blocks, nsrc, dst_blocks,
                                                   ndst, tensors_per_layer, &o, task),
                      err);
}
*/
import "C"

import (
	"runtime"
	"runtime/cgo"
	"time"
)

// LayerSynchronizer says when a layer of the source cache is computed
// (llm_datadist's LayerSynchronizer.synchronize_layer). TransferCacheAsync
// calls SynchronizeLayer once per layer in increasing order, on an engine
// thread, and pushes that layer's blocks to every target as soon as it
// returns true; returning false ends the transfer (targets not finished
// get StatusFailed). timeout is negative for "no limit" (what the engine
// passes today). A panic counts as false. The value stays reachable until
// the Transfer is released.
type LayerSynchronizer interface {
	SynchronizeLayer(layerIndex uint32, timeout time.Duration) bool
}

// LayerSyncFunc adapts a function to LayerSynchronizer.
type LayerSyncFunc func(layerIndex uint32, timeout time.Duration) bool

// SynchronizeLayer calls f.
func (f LayerSyncFunc) SynchronizeLayer(layerIndex uint32, timeout time.Duration) bool {
	return f(layerIndex, timeout)
}

// TransferTarget is one destination of TransferCacheAsync
// (llmlink_transfer_target_t; llm_datadist's TransferConfig): the remote
// cache by key (KeyBlocks, KeyIDAndIndex or KeyCache) and the layers,
// [start, end) with -1/-1 meaning every layer; both ranges cover the same
// number of layers.
type TransferTarget struct {
	DstKey                     CacheKey
	SrcLayerStart, SrcLayerEnd int32
	DstLayerStart, DstLayerEnd int32
	SrcBatchIndex              uint32 // a cache of batch entries: the entry pushed
}

// AllLayers is a TransferTarget of every layer to dstKey.
func AllLayers(dstKey CacheKey) TransferTarget {
	return TransferTarget{DstKey: dstKey, SrcLayerStart: -1, SrcLayerEnd: -1, DstLayerStart: -1, DstLayerEnd: -1}
}

// TransferCacheAsync pushes the local cache srcCacheID layer by layer to
// every target as soon as sync says the layer is computed
// (llmlink_transfer_cache_async; llm_datadist's
// CacheManager.transfer_cache_async): the pushes of layer i run while
// sync waits for layer i+1. Blocks caches: srcBlocks[i] -> dstBlocks[i] for
// every target (both empty for a cache of batch entries).
// tensorsPerLayer: 0 means 2 (K and V). The Transfer's Results has one
// status per target, in order; Wait's error is the first target failure.
func (e *Engine) TransferCacheAsync(srcCacheID int64, sync LayerSynchronizer, targets []TransferTarget,
	srcBlocks, dstBlocks []uint64, tensorsPerLayer uint32, opts ...TaskOption) (*Transfer, error) {
	const op = "TransferCacheAsync"
	if sync == nil {
		return nil, newError(op, StatusParamInvalid, "sync (the LayerSynchronizer) is nil")
	}
	ct := make([]C.llmlink_transfer_target_t, len(targets))
	for i, t := range targets {
		ct[i] = C.llmlink_transfer_target_t{
			dst_key:         t.DstKey.toC(),
			src_layer_start: C.int32_t(t.SrcLayerStart), src_layer_end: C.int32_t(t.SrcLayerEnd),
			dst_layer_start: C.int32_t(t.DstLayerStart), dst_layer_end: C.int32_t(t.DstLayerEnd),
			src_batch_index: C.uint32_t(t.SrcBatchIndex),
		}
	}
	var tp *C.llmlink_transfer_target_t
	if len(ct) > 0 {
		tp = &ct[0]
	}
	src, dst, o := cBlocks(srcBlocks), cBlocks(dstBlocks), taskOpts(opts)
	nd, nl := notifyPtr(o.notify)
	h := cgo.NewHandle(sync)
	t, err := e.submit(op, len(targets), h, func(eh *C.llmlink_t, task **C.llmlink_task_t, ce *C.gollk_err_t) C.llmlink_status_t {
		return C.gollk_transfer_cache_async(eh, C.int64_t(srcCacheID), C.uintptr_t(h), tp, C.size_t(len(ct)),
			u64Ptr(src), C.size_t(len(src)), u64Ptr(dst), C.size_t(len(dst)), C.uint32_t(tensorsPerLayer),
			C.int32_t(o.timeoutMs), nd, nl, task, ce)
	})
	runtime.KeepAlive(ct)
	runtime.KeepAlive(src)
	runtime.KeepAlive(dst)
	runtime.KeepAlive(o.notify)
	if err != nil {
		h.Delete() // no task: the C side never calls sync
		return nil, err
	}
	return t, nil
}

// layerSync runs the synchronizer of handle h for one layer; a panic is
// false (it cannot unwind into C).
func layerSync(h cgo.Handle, layer uint32, timeoutMs int32) (ok bool) {
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	s, _ := h.Value().(LayerSynchronizer)
	if s == nil {
		return false
	}
	timeout := time.Duration(timeoutMs) * time.Millisecond
	if timeoutMs < 0 {
		timeout = -1
	}
	return s.SynchronizeLayer(layer, timeout)
}
