//go:build cgo

package llmlink

/*
#include "shim.h"
*/
import "C"

import (
	"context"
	"runtime"
)

// LayerRange selects the layers a transfer moves (llm_datadist's
// src_layer_range, dst_layer_range, tensor_num_per_layer): a layer is
// TensorsPerLayer consecutive tensors (0 means 2, K and V); ranges are
// [start, end) in layers, -1/-1 meaning every layer of that cache. A nil
// *LayerRange moves every tensor.
type LayerRange struct {
	SrcStart, SrcEnd int32
	DstStart, DstEnd int32
	TensorsPerLayer  uint32
}

func (l *LayerRange) toC() *C.llmlink_layer_range_t {
	if l == nil {
		return nil
	}
	return &C.llmlink_layer_range_t{
		src_start: C.int32_t(l.SrcStart), src_end: C.int32_t(l.SrcEnd),
		dst_start: C.int32_t(l.DstStart), dst_end: C.int32_t(l.DstEnd),
		tensors_per_layer: C.uint32_t(l.TensorsPerLayer),
	}
}

func cBlocks(b []uint64) []C.uint64_t {
	out := make([]C.uint64_t, len(b))
	for i, v := range b {
		out[i] = C.uint64_t(v)
	}
	return out
}

// Transfers block until the bytes have moved, within the engine's
// llm.SyncKvCacheWaitTime, and every byte is in place when they return nil.
// With a ctx that can end (cancel or deadline), the call is a task
// (the *Async call) and a Wait on it: when ctx ends first, the transfer is
// cancelled and the call returns once that is fenced, so no byte of it
// lands in either side's memory afterwards; the error matches ctx's error
// and carries the transfer's final status (see Transfer.Wait). With
// context.Background() (a ctx that never ends) the C call blocks on the
// calling goroutine, no task and no dispatcher involved. A failed
// transfer's *Error carries the C side's status and message, with the
// remote holder's reason when it refused (StatusKVCacheNotExist,
// StatusParamInvalid, ...).

// transfer runs one transfer under ctx: call (blocking) when ctx cannot
// end, else submit + Wait + Close.
func (e *Engine) transfer(ctx context.Context, op string, call func(h *C.llmlink_t, ce *C.gollk_err_t) C.llmlink_status_t,
	submit func() (*Transfer, error)) error {
	if ctx == nil {
		return newError(op, StatusParamInvalid, "nil context")
	}
	if ctx.Done() != nil {
		if err := ctx.Err(); err != nil {
			return ctxError(op, err)
		}
		tr, err := submit()
		if err != nil {
			return err
		}
		defer tr.Close()
		return tr.Wait(ctx)
	}
	var ce C.gollk_err_t
	var st C.llmlink_status_t
	var a cArena
	err := e.blocking(ctx, op, &a, blockingCall{call: func() {
		st = call(e.handle(), &ce)
	}})
	if err != nil {
		return err
	}
	if st != C.LLMLINK_SUCCESS {
		return cError(op, &ce)
	}
	return nil
}

// PullBlocks pulls blocks of the remote cache srcKey names into the local
// blocks cache dstCacheID: srcBlocks[i] into dstBlocks[i]
// (llmlink_pull_blocks). With a KeyCache or KeyIDAndIndex srcKey, srcBlocks
// is empty and that batch entry fills dstBlocks in order.
func (e *Engine) PullBlocks(ctx context.Context, srcKey CacheKey, dstCacheID int64, srcBlocks, dstBlocks []uint64, layers *LayerRange) error {
	const op = "PullBlocks"
	key, src, dst, lr := srcKey.toC(), cBlocks(srcBlocks), cBlocks(dstBlocks), layers.toC()
	return e.transfer(ctx, op, func(h *C.llmlink_t, ce *C.gollk_err_t) C.llmlink_status_t {
		st := C.gollk_pull_blocks(h, &key, C.int64_t(dstCacheID), u64Ptr(src), C.size_t(len(src)),
			u64Ptr(dst), C.size_t(len(dst)), lr, ce)
		runtime.KeepAlive(src)
		runtime.KeepAlive(dst)
		return st
	}, func() (*Transfer, error) {
		return e.pullBlocksAsync(op, srcKey, dstCacheID, srcBlocks, dstBlocks, layers, nil)
	})
}

// PullCache pulls the remote batch entry srcKey names (KeyCache or
// KeyIDAndIndex) into batch entry batchIndex of the local cache dstCacheID
// (llmlink_pull_cache); size is the bytes per tensor, -1 for the whole
// entry. A CacheKey of an allocated cache is dropped by its holder after a
// successful pull.
func (e *Engine) PullCache(ctx context.Context, srcKey CacheKey, dstCacheID int64, batchIndex uint32, size int64, layers *LayerRange) error {
	const op = "PullCache"
	key, lr := srcKey.toC(), layers.toC()
	return e.transfer(ctx, op, func(h *C.llmlink_t, ce *C.gollk_err_t) C.llmlink_status_t {
		return C.gollk_pull_cache(h, &key, C.int64_t(dstCacheID), C.uint32_t(batchIndex), C.int64_t(size), lr, ce)
	}, func() (*Transfer, error) {
		return e.pullCacheAsync(op, srcKey, dstCacheID, batchIndex, size, layers, nil)
	})
}

// PushBlocks writes blocks of the local blocks cache srcCacheID into the
// remote blocks cache dstKey names: srcBlocks[i] into dstBlocks[i]
// (llmlink_push_blocks).
func (e *Engine) PushBlocks(ctx context.Context, dstKey CacheKey, srcCacheID int64, srcBlocks, dstBlocks []uint64, layers *LayerRange) error {
	const op = "PushBlocks"
	key, src, dst, lr := dstKey.toC(), cBlocks(srcBlocks), cBlocks(dstBlocks), layers.toC()
	return e.transfer(ctx, op, func(h *C.llmlink_t, ce *C.gollk_err_t) C.llmlink_status_t {
		st := C.gollk_push_blocks(h, &key, C.int64_t(srcCacheID), u64Ptr(src), C.size_t(len(src)),
			u64Ptr(dst), C.size_t(len(dst)), lr, ce)
		runtime.KeepAlive(src)
		runtime.KeepAlive(dst)
		return st
	}, func() (*Transfer, error) {
		return e.pushBlocksAsync(op, dstKey, srcCacheID, srcBlocks, dstBlocks, layers, nil)
	})
}

// PushCache writes batch entry srcBatchIndex of the local cache srcCacheID
// into the remote entry dstKey names (KeyIDAndIndex or KeyCache)
// (llmlink_push_cache); size is the bytes per tensor, -1 for the whole
// entry.
func (e *Engine) PushCache(ctx context.Context, dstKey CacheKey, srcCacheID int64, srcBatchIndex uint32, size int64, layers *LayerRange) error {
	const op = "PushCache"
	key, lr := dstKey.toC(), layers.toC()
	return e.transfer(ctx, op, func(h *C.llmlink_t, ce *C.gollk_err_t) C.llmlink_status_t {
		return C.gollk_push_cache(h, &key, C.int64_t(srcCacheID), C.uint32_t(srcBatchIndex), C.int64_t(size), lr, ce)
	}, func() (*Transfer, error) {
		return e.pushCacheAsync(op, dstKey, srcCacheID, srcBatchIndex, size, layers, nil)
	})
}
