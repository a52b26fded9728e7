//go:build cgo

package llmlink

/*
#include "shim.h"
*/
import "C"

import (
	"context"
	"fmt"
	"runtime"
	"runtime/cgo"
	"sync"
	"time"
	"unsafe"
)

// A Transfer is one pull or push submitted without waiting (the *Async
// methods; llmlink_task_t). It ends once, with a final status, which
// Wait, Done, Status and Cancel report. Close releases it; a Transfer that
// is dropped unclosed is released by a finalizer (late: close transfers
// yourself). A Transfer keeps its engine from being finalized.
//
// Completion needs no goroutine per transfer: one dispatcher goroutine
// per engine waits on the engine's event descriptor through Go's
// netpoller and closes the Done channel of every transfer that finished
// (dispatch.go).
type Transfer struct {
	e  *Engine // keeps the engine alive while the caller holds the transfer
	st *taskState
}

// taskState is what the engine's task table and its dispatcher hold: not
// the *Transfer itself, so that an unreachable Transfer can be finalized.
type taskState struct {
	core    *asyncCore
	op      string
	targets int // results to read: 1, or the targets of TransferCacheAsync

	// hmu guards h: C calls on the handle hold it for reading (cancel may
	// take up to a transport's fence time), release holds it for writing.
	hmu  sync.RWMutex
	h    *C.llmlink_task_t // nil once released
	sync cgo.Handle        // the LayerSynchronizer of TransferCacheAsync, or 0

	done chan struct{} // closed once the final status is known
	fmu  sync.Mutex
	// Set once, before done is closed.
	final   bool
	status  Status
	msg     string
	results []Status
}

// TaskOption is an option of the *Async methods.
type TaskOption func(*taskOptions)

type taskOptions struct {
	timeoutMs int32
	notify    []byte
}

// WithTaskTimeout is the transfer's own limit from submission (0, the
// default: the engine's llm.SyncKvCacheWaitTime, as the blocking calls).
// A transfer past it ends with StatusWaitProcessTimeout. Part of a
// millisecond rounds up.
func WithTaskTimeout(d time.Duration) TaskOption {
	return func(o *taskOptions) {
		ms, _ := timeoutMs(context.Background(), d)
		if d == 0 {
			ms = 0
		}
		o.timeoutMs = ms
	}
}

// WithNotify attaches a notification (at most MaxNotifyBytes, copied at
// submission) that the link's peer receives once every byte of the
// transfer is in place on both sides, never before. If the bytes moved but
// the peer refused the notification, the transfer ends with that status
// (StatusNotifyQueueFull, StatusNotYetLink, ...) and a message that says
// the bytes moved.
func WithNotify(data []byte) TaskOption {
	return func(o *taskOptions) { o.notify = data }
}

func taskOpts(opts []TaskOption) taskOptions {
	var o taskOptions
	for _, f := range opts {
		if f != nil {
			f(&o)
		}
	}
	return o
}

// notifyPtr is the C view of an attached notification: Go memory without
// pointers, read by the C call only while it runs (it copies it).
func notifyPtr(b []byte) (unsafe.Pointer, C.size_t) {
	if len(b) == 0 {
		return nil, 0
	}
	return unsafe.Pointer(&b[0]), C.size_t(len(b))
}

// submit makes one *_async C call and wraps the task it returns. The
// dispatcher is started first, so that no completion can be missed.
func (e *Engine) submit(op string, targets int, syncH cgo.Handle,
	call func(h *C.llmlink_t, task **C.llmlink_task_t, ce *C.gollk_err_t) C.llmlink_status_t) (*Transfer, error) {
	h, err := e.enter(op)
	if err != nil {
		return nil, err
	}
	defer e.leave()
	core := e.async
	if err := core.start(op); err != nil {
		return nil, err
	}
	var ce C.gollk_err_t
	var task *C.llmlink_task_t
	// Submit and enter the table under the table's lock, with which the
	// dispatcher polls: a task that finishes at once must not be collected
	// before it is in the table (its completion would be lost).
	core.mu.Lock()
	if call(h, &task, &ce) != C.LLMLINK_SUCCESS {
		core.mu.Unlock()
		return nil, cError(op, &ce)
	}
	st := &taskState{core: core, op: op, targets: targets, h: task, sync: syncH, done: make(chan struct{})}
	core.tasks[task] = st
	core.mu.Unlock()
	t := &Transfer{e: e, st: st}
	runtime.SetFinalizer(t, (*Transfer).Close)
	return t, nil
}

// PullBlocksAsync is PullBlocks without waiting (llmlink_pull_blocks_async):
// the same arguments and checks (a refused call moves no byte and returns
// no Transfer), then the Transfer at once.
func (e *Engine) PullBlocksAsync(srcKey CacheKey, dstCacheID int64, srcBlocks, dstBlocks []uint64, layers *LayerRange, opts ...TaskOption) (*Transfer, error) {
	return e.pullBlocksAsync("PullBlocksAsync", srcKey, dstCacheID, srcBlocks, dstBlocks, layers, opts)
}

func (e *Engine) pullBlocksAsync(op string, srcKey CacheKey, dstCacheID int64, srcBlocks, dstBlocks []uint64, layers *LayerRange, opts []TaskOption) (*Transfer, error) {
	key, src, dst, lr, o := srcKey.toC(), cBlocks(srcBlocks), cBlocks(dstBlocks), layers.toC(), taskOpts(opts)
	nd, nl := notifyPtr(o.notify)
	t, err := e.submit(op, 1, 0, func(h *C.llmlink_t, task **C.llmlink_task_t, ce *C.gollk_err_t) C.llmlink_status_t {
		return C.gollk_pull_blocks_async(h, &key, C.int64_t(dstCacheID), u64Ptr(src), C.size_t(len(src)),
			u64Ptr(dst), C.size_t(len(dst)), lr, C.int32_t(o.timeoutMs), nd, nl, task, ce)
	})
	runtime.KeepAlive(src)
	runtime.KeepAlive(dst)
	runtime.KeepAlive(o.notify)
	return t, err
}

// PullCacheAsync is PullCache without waiting (llmlink_pull_cache_async).
func (e *Engine) PullCacheAsync(srcKey CacheKey, dstCacheID int64, batchIndex uint32, size int64, layers *LayerRange, opts ...TaskOption) (*Transfer, error) {
	return e.pullCacheAsync("PullCacheAsync", srcKey, dstCacheID, batchIndex, size, layers, opts)
}

func (e *Engine) pullCacheAsync(op string, srcKey CacheKey, dstCacheID int64, batchIndex uint32, size int64, layers *LayerRange, opts []TaskOption) (*Transfer, error) {
	key, lr, o := srcKey.toC(), layers.toC(), taskOpts(opts)
	nd, nl := notifyPtr(o.notify)
	t, err := e.submit(op, 1, 0, func(h *C.llmlink_t, task **C.llmlink_task_t, ce *C.gollk_err_t) C.llmlink_status_t {
		return C.gollk_pull_cache_async(h, &key, C.int64_t(dstCacheID), C.uint32_t(batchIndex), C.int64_t(size),
			lr, C.int32_t(o.timeoutMs), nd, nl, task, ce)
	})
	runtime.KeepAlive(o.notify)
	return t, err
}

// PushBlocksAsync is PushBlocks without waiting (llmlink_push_blocks_async).
func (e *Engine) PushBlocksAsync(dstKey CacheKey, srcCacheID int64, srcBlocks, dstBlocks []uint64, layers *LayerRange, opts ...TaskOption) (*Transfer, error) {
	return e.pushBlocksAsync("PushBlocksAsync", dstKey, srcCacheID, srcBlocks, dstBlocks, layers, opts)
}

func (e *Engine) pushBlocksAsync(op string, dstKey CacheKey, srcCacheID int64, srcBlocks, dstBlocks []uint64, layers *LayerRange, opts []TaskOption) (*Transfer, error) {
	key, src, dst, lr, o := dstKey.toC(), cBlocks(srcBlocks), cBlocks(dstBlocks), layers.toC(), taskOpts(opts)
	nd, nl := notifyPtr(o.notify)
	t, err := e.submit(op, 1, 0, func(h *C.llmlink_t, task **C.llmlink_task_t, ce *C.gollk_err_t) C.llmlink_status_t {
		return C.gollk_push_blocks_async(h, &key, C.int64_t(srcCacheID), u64Ptr(src), C.size_t(len(src)),
			u64Ptr(dst), C.size_t(len(dst)), lr, C.int32_t(o.timeoutMs), nd, nl, task, ce)
	})
	runtime.KeepAlive(src)
	runtime.KeepAlive(dst)
	runtime.KeepAlive(o.notify)
	return t, err
}

// PushCacheAsync is PushCache without waiting (llmlink_push_cache_async).
func (e *Engine) PushCacheAsync(dstKey CacheKey, srcCacheID int64, srcBatchIndex uint32, size int64, layers *LayerRange, opts ...TaskOption) (*Transfer, error) {
	return e.pushCacheAsync("PushCacheAsync", dstKey, srcCacheID, srcBatchIndex, size, layers, opts)
}

func (e *Engine) pushCacheAsync(op string, dstKey CacheKey, srcCacheID int64, srcBatchIndex uint32, size int64, layers *LayerRange, opts []TaskOption) (*Transfer, error) {
	key, lr, o := dstKey.toC(), layers.toC(), taskOpts(opts)
	nd, nl := notifyPtr(o.notify)
	t, err := e.submit(op, 1, 0, func(h *C.llmlink_t, task **C.llmlink_task_t, ce *C.gollk_err_t) C.llmlink_status_t {
		return C.gollk_push_cache_async(h, &key, C.int64_t(srcCacheID), C.uint32_t(srcBatchIndex), C.int64_t(size),
			lr, C.int32_t(o.timeoutMs), nd, nl, task, ce)
	})
	runtime.KeepAlive(o.notify)
	return t, err
}

// Done is closed once the transfer's status is final.
func (t *Transfer) Done() <-chan struct{} { return t.st.done }

// Status is the final status, or StatusTaskPending while the transfer
// runs (llmlink_task_status; it does not block).
func (t *Transfer) Status() Status {
	st := t.st
	if s, ok := st.finalStatus(); ok {
		return s
	}
	st.hmu.RLock()
	defer st.hmu.RUnlock()
	if st.h != nil {
		if s := Status(C.llmlink_task_status(st.h)); s != StatusTaskPending {
			st.finishFrom(st.h, s)
		}
	}
	s, ok := st.finalStatus()
	if !ok {
		return StatusTaskPending
	}
	return s
}

// Err is nil after success, the transfer's *Error after a failure (its
// status and the C side's message), or ErrTaskPending while it runs.
func (t *Transfer) Err() error {
	if t.Status() == StatusTaskPending {
		return newError(t.st.op, StatusTaskPending, "the transfer has not finished")
	}
	return t.st.err()
}

// Wait waits for the transfer to end and returns nil when every byte is
// in place, or its *Error. When ctx ends first, Wait cancels the transfer
// (llmlink_task_cancel, on the calling goroutine: no goroutine is left
// behind) and returns once the cancel is fenced: no byte of the transfer
// lands in either side's memory afterwards. The error then matches both
// ctx's error (errors.Is(err, context.Canceled) or DeadlineExceeded) and
// the transfer's final status (errors.Is(err, ErrCancelled), or
// ErrCancelledLinkClosed when the transport had to close the link, or the
// failure that came first; errors.As gives the *Error). A transfer that
// finished successfully before the cancel took hold returns nil: its bytes
// are all in place.
func (t *Transfer) Wait(ctx context.Context) error {
	st := t.st
	defer runtime.KeepAlive(t) // the finalizer must not release it meanwhile
	if ctx == nil {
		return newError(st.op, StatusParamInvalid, "nil context")
	}
	select {
	case <-st.done:
		return st.err()
	default:
	}
	select {
	case <-st.done:
		return st.err()
	case <-ctx.Done():
	}
	st.cancel()
	err := st.err()
	if err == nil {
		return nil
	}
	return &CancelError{Ctx: ctx.Err(), Err: err.(*Error)}
}

// Cancel cancels the transfer and returns once that is fenced
// (llmlink_task_cancel): no byte of it lands in either side's memory
// afterwards. The result is the final status as an error: ErrCancelled
// (the link stays usable), ErrCancelledLinkClosed (the transport could not
// stop alone and closed the link: link again), the failure it had already
// ended with, or nil when it had already succeeded. Bounded by the
// transport's fence time (tcp push: 1 s).
func (t *Transfer) Cancel() error {
	t.st.cancel()
	runtime.KeepAlive(t)
	return t.st.err()
}

// Results are the per-target statuses of a TransferCacheAsync transfer, in
// the order of its targets: each target's final status, or
// StatusTaskPending for a target none of whose layers has been sent yet
// (llm_datadist's None). Any other transfer has one result, its status.
func (t *Transfer) Results() []Status {
	st := t.st
	defer runtime.KeepAlive(t)
	st.fmu.Lock()
	if st.final {
		r := append([]Status(nil), st.results...)
		st.fmu.Unlock()
		return r
	}
	st.fmu.Unlock()
	st.hmu.RLock()
	defer st.hmu.RUnlock()
	if st.h == nil {
		st.fmu.Lock()
		defer st.fmu.Unlock()
		return append([]Status(nil), st.results...)
	}
	return readResults(st.h, st.targets)
}

// Close releases the transfer (llmlink_task_release); one still running
// is cancelled first, fenced as by Cancel, so its memory may be reused at
// once. Idempotent; Wait, Status and Done keep reporting the final status
// afterwards.
func (t *Transfer) Close() error {
	runtime.SetFinalizer(t, nil)
	t.st.release()
	return nil
}

// CancelError is what Wait returns when its context ended first: the
// context's error and the transfer's final status after the fenced cancel.
// errors.Is matches either (context.Canceled, ErrCancelled, ...);
// errors.As(err, &e) with an *Error gives the status and message.
type CancelError struct {
	Ctx error  // ctx.Err()
	Err *Error // the transfer's final status and message
}

func (e *CancelError) Error() string {
	return fmt.Sprintf("%v (%v)", e.Err, e.Ctx)
}

// Is matches the context's error; Unwrap gives the *Error for the rest.
func (e *CancelError) Is(target error) bool { return target == e.Ctx }

func (e *CancelError) Unwrap() error { return e.Err }

// finalStatus is the recorded final status, if known.
func (st *taskState) finalStatus() (Status, bool) {
	st.fmu.Lock()
	defer st.fmu.Unlock()
	return st.status, st.final
}

// err is the recorded outcome: nil, or an *Error. Only after done.
func (st *taskState) err() error {
	st.fmu.Lock()
	defer st.fmu.Unlock()
	if !st.final {
		return newError(st.op, StatusTaskPending, "the transfer has not finished")
	}
	if st.status == StatusSuccess {
		return nil
	}
	return &Error{Status: st.status, Msg: st.msg, Op: st.op}
}

// finishFrom records the final status s of handle h with its message and
// results, and closes done, once (the first caller wins; a task ends once,
// so every caller reads the same). The caller keeps h valid.
func (st *taskState) finishFrom(h *C.llmlink_task_t, s Status) {
	st.fmu.Lock()
	defer st.fmu.Unlock()
	if st.final {
		return
	}
	var ce C.gollk_err_t
	C.gollk_task_msg(h, C.llmlink_status_t(s), &ce)
	st.status, st.msg, st.results = s, C.GoString(&ce.msg[0]), readResults(h, st.targets)
	st.final = true
	close(st.done)
}

func readResults(h *C.llmlink_task_t, n int) []Status {
	if n < 1 {
		n = 1
	}
	buf := make([]C.llmlink_status_t, n)
	if C.llmlink_task_results(h, &buf[0], C.size_t(n)) != C.LLMLINK_SUCCESS {
		// Not a result list (a C side without per-target results): the
		// task's own status for every entry.
		s := C.llmlink_task_status(h)
		for i := range buf {
			buf[i] = s
		}
	}
	out := make([]Status, n)
	for i, v := range buf {
		out[i] = Status(v)
	}
	return out
}

// cancel is llmlink_task_cancel (fenced) and records the final status it
// returns; a released task already has its final status.
func (st *taskState) cancel() {
	st.hmu.RLock()
	defer st.hmu.RUnlock()
	if st.h == nil {
		return
	}
	s := Status(C.llmlink_task_cancel(st.h))
	st.finishFrom(st.h, s)
}

// release cancels the task if it still runs (fenced), records its final
// status, and frees the handle, once. The handle leaves the engine's table
// under the table's lock, with which the dispatcher polls, so the
// dispatcher never sees a freed handle (or another task that reused its
// address). The synchronizer handle goes last: no call of it can follow
// llmlink_task_release.
func (st *taskState) release() {
	st.hmu.Lock()
	defer st.hmu.Unlock()
	if st.h == nil {
		return
	}
	s := Status(C.llmlink_task_cancel(st.h))
	st.finishFrom(st.h, s)
	st.core.remove(st, func() { C.llmlink_task_release(st.h) })
	st.h = nil
	if st.sync != 0 {
		st.sync.Delete()
		st.sync = 0
	}
}
