//go:build cgo

package llmlink

/*
#include "shim.h"
*/
import "C"

import (
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// One dispatcher goroutine per engine learns of finished transfers and
// received notifications, without a goroutine per transfer and without a
// polling thread: it sleeps on the engine's event descriptor
// (llmlink_get_event_fd) in Go's netpoller, through a duplicate of it
// wrapped in an *os.File and its RawConn.Read (whose callback says "not
// yet" until there is something to collect). On each wake it collects
// every finished task (llmlink_task_poll_done), records its final status
// and closes its Done channel, then moves the received notifications
// (llmlink_get_notifies) into the engine's Notifications channel.
//
// The engine fd is level-triggered (readable while anything waits to be
// collected) but the C side writes it only when it goes from "nothing" to
// "something", and Go's netpoller is edge-triggered: it wakes on those
// writes. So the dispatcher always collects everything before it sleeps
// again, which brings the descriptor back to "nothing" and makes the next
// completion a new edge. The one case where it cannot is a full
// Notifications channel: the notifications it cannot hand over stay in the
// C queue (which bounds them: senders then get StatusNotifyQueueFull),
// the descriptor stays readable, and no edge would announce the next
// finished task. While that lasts, the dispatcher looks every
// heldPollInterval instead of sleeping on the descriptor, until the
// application reads the channel again.
//
// The dispatcher starts with the engine's first asynchronous transfer or
// Notifications call and stops in Close, after every transfer was
// released; it refers to the C engine and the task table, not to the
// *Engine, so an unclosed engine can still be finalized.

const (
	pollBatch        = 64 // tasks per llmlink_task_poll_done call
	notifyBatch      = 16 // notifications per llmlink_get_notifies call (4 KiB each)
	heldPollInterval = time.Millisecond
)

// MaxNotifyBytes is the most bytes one notification carries.
const MaxNotifyBytes = C.LLMLINK_MAX_NOTIFY_BYTES

// Notification is one message a linked peer sent with Notify (or attached
// to a transfer).
type Notification struct {
	ClusterID uint64 // the sender
	Data      []byte
}

// asyncCore is the engine's asynchronous side: the task table and the
// dispatcher.
type asyncCore struct {
	h *C.llmlink_t // the C engine; destroyed only after the dispatcher stopped

	// mu orders llmlink_task_poll_done and the table lookups that follow it
	// with llmlink_task_release (see taskState.release).
	mu    sync.Mutex
	tasks map[*C.llmlink_task_t]*taskState

	notes chan Notification // capacity: llmlink.NotifyQueueDepth

	startMu  sync.Mutex // start vs stop
	started  bool
	stopped  bool
	f        *os.File
	stopping chan struct{}
	exited   chan struct{}

	// Scratch of the dispatcher goroutine only.
	polled [pollBatch]*C.llmlink_task_t
	nbuf   *C.llmlink_notification_t // notifyBatch entries, C memory
	// heldPolls counts the dispatcher's timed looks, wakes its collections
	// (tests).
	heldPolls, wakes atomic.Uint64
}

func newAsyncCore(h *C.llmlink_t, notifyDepth int) *asyncCore {
	return &asyncCore{
		h: h, tasks: map[*C.llmlink_task_t]*taskState{},
		notes: make(chan Notification, notifyDepth),
	}
}

// start starts the dispatcher once (the caller has entered the engine, so
// Close has not begun).
func (c *asyncCore) start(op string) error {
	c.startMu.Lock()
	defer c.startMu.Unlock()
	if c.started {
		return nil
	}
	if c.stopped {
		return newError(op, StatusEngineFinalized, "the engine is closed")
	}
	var ce C.gollk_err_t
	fd := C.gollk_dup_event_fd(c.h, &ce)
	if fd < 0 {
		return cError(op, &ce)
	}
	f := os.NewFile(uintptr(fd), "llmlink-event-fd")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return newError(op, StatusFailed, "engine fd: %v", err)
	}
	c.nbuf = (*C.llmlink_notification_t)(C.calloc(notifyBatch, C.size_t(unsafe.Sizeof(C.llmlink_notification_t{}))))
	if c.nbuf == nil {
		f.Close()
		return newError(op, StatusOutOfMemory, "notification buffer")
	}
	c.f, c.stopping, c.exited = f, make(chan struct{}), make(chan struct{})
	c.started = true
	go c.run(rc)
	return nil
}

// stop ends the dispatcher (if it ran) and closes the Notifications
// channel. Close calls it once every transfer was released.
func (c *asyncCore) stop() {
	c.startMu.Lock()
	defer c.startMu.Unlock()
	if c.stopped {
		return
	}
	c.stopped = true
	if c.started {
		close(c.stopping)
		c.f.Close() // wakes the netpoller wait: Read returns os.ErrClosed
		<-c.exited
		C.free(unsafe.Pointer(c.nbuf))
		c.nbuf = nil
	}
	close(c.notes)
}

func (c *asyncCore) run(rc syscall.RawConn) {
	defer close(c.exited)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		held := false
		err := rc.Read(func(fd uintptr) bool {
			select {
			case <-c.stopping:
				return true
			default:
			}
			c.wakes.Add(1)
			held = c.collect(int(fd))
			return held // false: sleep until the next edge
		})
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			return // closed by stop (nothing else fails on an eventfd)
		}
		if !held {
			continue
		}
		c.heldPolls.Add(1)
		timer.Reset(heldPollInterval)
		select {
		case <-c.stopping:
			timer.Stop()
			return
		case <-timer.C:
		}
	}
}

// collect takes every finished task and as many notifications as the
// channel has room for; held reports that the descriptor is still
// readable afterwards (notifications left in the C queue).
func (c *asyncCore) collect(fd int) (held bool) {
	for c.pollTasks() == pollBatch {
	}
	if c.pollNotifies(fd) {
		return true
	}
	// Everything was collected, so the descriptor should read empty now
	// and the next event be a new edge. If it is still readable (a task
	// finished meanwhile, or the C side kept its bit set), sleeping on it
	// could miss that: look again shortly instead.
	return readable(fd)
}

// pollTasks records the final status of up to pollBatch finished tasks
// and closes their Done channels; it returns how many the C side gave.
func (c *asyncCore) pollTasks() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	var n C.size_t
	if C.llmlink_task_poll_done(c.h, &c.polled[0], pollBatch, &n) != C.LLMLINK_SUCCESS {
		return 0
	}
	for _, h := range c.polled[:int(n)] {
		// Under c.mu no handle in the table is released, so h is valid.
		if st := c.tasks[h]; st != nil {
			st.finishFrom(h, Status(C.llmlink_task_status(h)))
		}
	}
	return int(n)
}

// pollNotifies moves received notifications into the channel while it has
// room; true when some had to stay in the C queue.
func (c *asyncCore) pollNotifies(fd int) (held bool) {
	for {
		room := cap(c.notes) - len(c.notes) // only this goroutine sends
		if room == 0 {
			return readable(fd)
		}
		if room > notifyBatch {
			room = notifyBatch
		}
		var n C.size_t
		var ce C.gollk_err_t
		if C.gollk_get_notifies(c.h, c.nbuf, C.size_t(room), &n, &ce) != C.LLMLINK_SUCCESS || n == 0 {
			return false
		}
		for _, m := range unsafe.Slice(c.nbuf, int(n)) {
			c.notes <- Notification{ClusterID: uint64(m.cluster_id), Data: C.GoBytes(unsafe.Pointer(&m.data[0]), C.int(m.len))}
		}
		if int(n) < room {
			return false
		}
	}
}

// readable: is the engine fd (our duplicate of it) readable now? With every
// finished task collected, that means notifications wait in the C queue.
func readable(fd int) bool {
	var pfd C.struct_pollfd
	pfd.fd = C.int(fd)
	pfd.events = C.POLLIN
	return C.poll(&pfd, 1, 0) == 1
}

// remove takes st out of the table and runs free (the C release) under
// the table's lock.
func (c *asyncCore) remove(st *taskState, free func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.tasks, st.h)
	free()
}

// liveTasks lists the tasks not yet released.
func (c *asyncCore) liveTasks() []*taskState {
	c.mu.Lock()
	defer c.mu.Unlock()
	all := make([]*taskState, 0, len(c.tasks))
	for _, st := range c.tasks {
		all = append(all, st)
	}
	return all
}

// releaseAll releases every task still in the table (Close): each is
// cancelled, fenced, and keeps its final status for its Transfer.
func (c *asyncCore) releaseAll() {
	for _, st := range c.liveTasks() {
		st.release()
	}
}
