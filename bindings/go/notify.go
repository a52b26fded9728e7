//go:build cgo

package llmlink

/*
#include "shim.h"
*/
import "C"

import (
	"context"
	"time"
	"unsafe"
)

// Notify sends data (1..MaxNotifyBytes bytes) to the linked engine of
// clusterID (llmlink_notify) and waits for that engine to queue it. Per
// link, notifications arrive in the order sent. nil: queued. Errors:
// ErrNotifyQueueFull (the peer's queue, llmlink.NotifyQueueDepth, is full
// because its application does not read its notifications: nothing was
// queued, try later), ErrNotYetLink (no usable link, or it died before the
// answer), ErrTimeout, ErrParamInvalid (size). The wait is ctx's deadline,
// or the engine's llm.SyncKvCacheWaitTime without one; a cancelled ctx
// returns ctx's error at once and the notification may still be
// delivered (the C call is not interruptible; it ends within its limit).
func (e *Engine) Notify(ctx context.Context, clusterID uint64, data []byte) error {
	const op = "Notify"
	if ctx == nil {
		return newError(op, StatusParamInvalid, "nil context")
	}
	limit := time.Duration(e.waitMs) * time.Millisecond
	ms, clamped := timeoutMs(ctx, limit)
	// C memory: an abandoned call still reads it after Notify returned and
	// the caller may reuse data.
	var a cArena
	var p unsafe.Pointer
	if len(data) > 0 {
		p = a.alloc(uintptr(len(data)))
		copy(unsafe.Slice((*byte)(p), len(data)), data)
	}
	var ce C.gollk_err_t
	var st C.llmlink_status_t
	err := e.blocking(ctx, op, &a, blockingCall{
		call: func() {
			st = C.gollk_notify(e.handle(), C.uint64_t(clusterID), p, C.size_t(len(data)), C.int32_t(ms), &ce)
		},
		waitOnDeadline: clamped,
	})
	if err != nil {
		return err
	}
	if st != C.LLMLINK_SUCCESS {
		return cError(op, &ce)
	}
	return nil
}

// Notifications is the channel of the notifications linked peers sent to
// this engine, oldest first (per link in the order sent), fed by the
// engine's dispatcher; the same channel on every call, closed by Close.
//
// It is bounded: it holds up to llmlink.NotifyQueueDepth notifications
// (default 1024). When the application does not read it and it is full,
// the dispatcher stops fetching, so further notifications wait in the C
// queue (of the same depth); once that is full too, senders get
// ErrNotifyQueueFull and nothing is lost or dropped. Transfers still
// complete meanwhile, detected every millisecond instead of at once
// (the engine fd stays readable for the waiting notifications, and Go's
// netpoller only wakes when it becomes readable). Reading the channel
// again ends both.
func (e *Engine) Notifications() <-chan Notification {
	const op = "Notifications"
	if _, err := e.enter(op); err == nil {
		_ = e.async.start(op) // a failure leaves the channel quiet; Close closes it
		e.leave()
	}
	return e.async.notes
}
