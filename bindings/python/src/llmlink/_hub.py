"""One engine's tasks and its event fd, as asyncio sees them.

The engine's fd (llmlink_get_event_fd) is level-triggered: readable while a
finished task waits in llmlink_task_poll_done or a notification in
llmlink_get_notifies. A loop that awaits something watches it with
loop.add_reader, for as long as something is awaited on that loop (no
thread, no timer). Its reader collects every finished task of the engine
(awaited or not: a task nobody collects keeps the fd readable) and wakes
the futures of the awaited ones, then hands notifications to awaiting
next_notify() calls in order.

The fd is also readable while notifications wait that nobody awaits; the
reader cannot take them (they are the caller's, for get_notifies), so
when a wake-up collects nothing it stops watching and looks again after a
short pause (1 ms, doubling to 50 ms) instead of spinning."""
import asyncio
import collections
import logging
import threading
import weakref

from . import capi
from ._notify import Notification

_log = logging.getLogger("llmlink")
_POLL_BATCH = 256
_NOTIFY_BATCH = 64
_BACKOFF_MIN_S, _BACKOFF_MAX_S = 0.001, 0.05


def resolve(fut, value=None, exc=None, lost=None):
    """Completes fut from any thread (a future belongs to its loop);
    lost() runs instead when fut was already done (cancelled)."""
    loop = fut.get_loop()
    try:
        here = asyncio.get_running_loop() is loop
    except RuntimeError:
        here = False
    if here:
        _set(fut, value, exc, lost)
    elif not loop.is_closed():
        loop.call_soon_threadsafe(_set, fut, value, exc, lost)
    elif lost is not None:
        lost()


def _set(fut, value, exc, lost):
    if fut.done():
        if lost is not None:
            lost()
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(value)


class _LoopWatch:
    """The engine fd as one loop's reader, held while futures wait there."""

    def __init__(self, hub, loop, fd):
        self._hub, self._loop, self._fd = hub, loop, fd
        self._held = 0
        self._reading = False
        self._timer = None
        self._pause = 0.0

    def hold(self):
        self._held += 1
        if not self._reading and self._timer is None:
            self._start()

    def unhold(self, _fut=None):
        self._held -= 1
        if self._held == 0:
            self.stop()
            self._hub._forget(self._loop, self)

    def _start(self):
        self._loop.add_reader(self._fd, self._on_readable)
        self._reading = True

    def stop(self):
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._fd)

    def _on_readable(self):
        try:
            progressed = self._hub.drain()
        except RuntimeError:  # the engine was finalized: close_all resolved the waiters
            self.stop()
            return
        except Exception:  # noqa: BLE001 - never let a failing reader spin the loop
            _log.exception("llmlink: collecting finished tasks failed; retrying")
            progressed = False
        if progressed:
            self._pause = 0.0
            return
        # Readable for notifications nobody awaits here (or another loop
        # collected first): look again later rather than spin.
        self.stop()
        self._pause = min(max(self._pause * 2, _BACKOFF_MIN_S), _BACKOFF_MAX_S)
        self._timer = self._loop.call_later(self._pause, self._resume)

    def _resume(self):
        self._timer = None
        if self._held > 0 and not self._reading:
            self._start()


class TaskHub:
    def __init__(self, handle):
        self._handle = handle
        # Re-entrant: the garbage collector may release a task (and so
        # discard it here) at any allocation, also while this is held.
        self._lock = threading.RLock()
        self._tasks = weakref.WeakValueDictionary()  # task address -> Transfer
        self._watches = {}                            # loop -> _LoopWatch
        self._notify_waiters = collections.deque()    # futures of next_notify()
        self._spill = collections.deque()             # fetched, then their waiter went away
        self._fd = None

    # -- tasks ------------------------------------------------------------
    def add(self, task):
        with self._lock:
            self._tasks[task._addr] = task

    def discard(self, task):
        with self._lock:
            if self._tasks.get(task._addr) is task:
                del self._tasks[task._addr]

    def watch(self, task):
        """A future (of the running loop) completed once task has finished."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        with self._lock:
            if task._collected or task._final is not None:
                fut.set_result(None)
                return fut
            task._waiters.append(fut)
        self._hold(loop, fut)
        return fut

    def close_all(self):
        """The engine is closing: every task is cancelled (fenced) and
        released, and whatever awaits wakes up."""
        with self._lock:
            tasks = list(self._tasks.values())
            waiters, self._notify_waiters = list(self._notify_waiters), collections.deque()
            watches, self._watches = list(self._watches.values()), {}
        for task in tasks:
            task._engine_closing()
        gone = RuntimeError("llm datadist was finalized")
        for fut in waiters:
            resolve(fut, exc=gone)
        for watch in watches:
            _stop_watch(watch)

    # -- notifications ------------------------------------------------------
    def take_spilled(self, max_count):
        out = []
        with self._lock:
            while self._spill and len(out) < max_count:
                out.append(self._spill.popleft())
        return out

    def watch_notify(self):
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        with self._lock:
            # Calls that gave up (cancelled, timed out) leave their futures.
            self._notify_waiters = collections.deque(
                f for f in self._notify_waiters if not f.done())
            self._notify_waiters.append(fut)
        self._hold(loop, fut)
        return fut

    # -- the reader ---------------------------------------------------------
    def _hold(self, loop, fut):
        if self._fd is None:
            self._fd = self._handle.call(capi.llmlink_get_event_fd)
        with self._lock:
            watch = self._watches.get(loop)
            if watch is None:
                watch = self._watches[loop] = _LoopWatch(self, loop, self._fd)
        watch.hold()
        fut.add_done_callback(watch.unhold)

    def _forget(self, loop, watch):
        # Nothing awaited on that loop any more: drop it (loops come and go).
        with self._lock:
            if self._watches.get(loop) is watch:
                del self._watches[loop]

    def drain(self):
        """Collects every finished task and feeds awaiting next_notify()
        calls; True when it found anything."""
        progressed = False
        while True:
            addrs = self._handle.call(capi.llk_py_task_poll_done, _POLL_BATCH)
            woken = []
            with self._lock:
                for addr in addrs:
                    task = self._tasks.get(addr)
                    if task is not None:
                        task._collected = True
                        woken += task._waiters
                        task._waiters = []
            for fut in woken:
                resolve(fut)
            progressed = progressed or bool(addrs)
            if len(addrs) < _POLL_BATCH:
                break
        return self._feed_notify_waiters() or progressed

    def _feed_notify_waiters(self):
        with self._lock:
            live = sum(1 for f in self._notify_waiters if not f.done())
            spilled = len(self._spill)
        if not live:
            return False
        got = []
        if live > spilled:
            got = self._handle.call(capi.llk_py_get_notifies, min(live - spilled, _NOTIFY_BATCH))
        with self._lock:
            self._spill.extend(Notification(*item) for item in got)
            handed = []
            while self._spill and self._notify_waiters:
                fut = self._notify_waiters.popleft()
                if not fut.done():
                    handed.append((fut, self._spill.popleft()))
        for fut, note in handed:
            resolve(fut, note, lost=lambda note=note: self._respill(note))
        return bool(got or handed)

    def _respill(self, note):
        # Its waiter was cancelled before it could take it: the next one will.
        with self._lock:
            self._spill.appendleft(note)
        try:
            self._feed_notify_waiters()
        except RuntimeError:  # finalized meanwhile
            pass


def _stop_watch(watch):
    loop = watch._loop
    try:
        here = asyncio.get_running_loop() is loop
    except RuntimeError:
        here = False
    if here or not loop.is_running():
        if not loop.is_closed():
            watch.stop()
    else:
        loop.call_soon_threadsafe(watch.stop)
