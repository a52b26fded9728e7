//go:build cgo

package llmlink

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync/atomic"
	"time"
)

// Most C calls block (a link waits for handshakes, a notification for the
// peer's answer) and cannot be interrupted. To honour a context, such a call
// runs on a goroutine of its own and the caller waits for it or for ctx,
// whichever comes first. When ctx wins, the caller gets ctx's error at once
// and the C call finishes in the background within its own timeout (the
// call's timeout for links, llm.SyncKvCacheWaitTime otherwise); the engine
// counts it as running, so Close waits for it. Transfers are the exception:
// they can be cancelled for real (task.go), so under a ctx that can end they
// run as tasks and a cancelled ctx cancels them, fenced.

const (
	stateRunning int32 = iota
	stateFinished
	stateAbandoned
)

// blockingCall describes one C call run under a context.
type blockingCall struct {
	// call makes the C call. It runs exactly once.
	call func()
	// abandoned, if set, runs after call when the caller stopped waiting
	// (on the same goroutine, before final).
	abandoned func()
	// final always runs last, on the goroutine that ran call: it frees the
	// call's C memory and ends the engine's count of running calls.
	final func()
	// waitOnDeadline: the C timeout was cut to ctx's deadline, so when
	// that deadline passes the call is about to return with its own
	// TIMEOUT statuses; wait for them rather than abandon it.
	waitOnDeadline bool
}

// run returns nil when the call finished, or ctx's error when the caller
// stopped waiting for it.
func (b blockingCall) run(ctx context.Context) error {
	if ctx.Done() == nil { // context.Background(): nothing to watch
		b.call()
		b.final()
		return nil
	}
	var state atomic.Int32
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer b.final()
		b.call()
		if !state.CompareAndSwap(stateRunning, stateFinished) && b.abandoned != nil {
			b.abandoned()
		}
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	if b.waitOnDeadline && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		<-done
		return nil
	}
	if !state.CompareAndSwap(stateRunning, stateAbandoned) {
		<-done // it finished at the same moment: take its result
		return nil
	}
	return ctx.Err()
}

// ctxError is what a call returns when its context ended first.
func ctxError(op string, err error) error {
	return fmt.Errorf("llmlink: %s: %w", op, err)
}

// timeoutMs turns a call's timeout into the C milliseconds, cut to ctx's
// deadline when that comes first (clamped reports the cut). A timeout <= 0
// is passed on as is so that the C side refuses it with PARAM_INVALID and
// its own message; part of a millisecond rounds up.
func timeoutMs(ctx context.Context, timeout time.Duration) (ms int32, clamped bool) {
	if timeout > 0 {
		if dl, ok := ctx.Deadline(); ok {
			if left := time.Until(dl); left < timeout {
				timeout, clamped = left, true
				if timeout <= 0 {
					timeout = time.Millisecond
				}
			}
		}
	}
	if timeout <= 0 {
		m := timeout.Milliseconds()
		if m < math.MinInt32 {
			m = math.MinInt32
		}
		return int32(m), false
	}
	m := timeout / time.Millisecond
	if timeout%time.Millisecond != 0 {
		m++
	}
	if m > math.MaxInt32 {
		m = math.MaxInt32
	}
	return int32(m), clamped
}
