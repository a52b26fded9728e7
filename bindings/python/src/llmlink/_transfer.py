"""Transfer and CacheTask: the handles of the *_async calls.

A task ends once, with a final status. Its C handle is released exactly
once: by close() (a running task is cancelled first, fenced), by the
garbage collector, by a with-block's end, or when the engine is
finalized. Calls on a task count as uses: the handle is released only
when the last use returns, so close() from one thread while another waits
cancels the task, the waiter returns, and then the handle goes."""
import asyncio
import threading

from . import capi
from ._checks import INT32_MAX, check_int
from ._status import LLMException, LLMStatusCode, status_of

S = LLMStatusCode
# wait() without a limit waits in slices, so that signals (Ctrl-C) are
# handled between them.
_WAIT_SLICE_MS = 200


class Transfer:
    """A pull or push in flight (CacheManager.pull_blocks_async, ...).

    wait(timeout_ms=None) -> bool, done(), cancel(), status, message,
    close(); ``await transfer`` in asyncio (driven by the engine's fd)."""

    def __init__(self, handle, ptr, keep=None):
        self._handle = handle
        self._ptr = ptr
        self._addr = int(ptr)
        self._lock = threading.Lock()
        self._uses = 0
        self._closing = False
        self._final = None      # (LLMStatusCode, message) once known
        self._keep = keep       # what the C task borrows (a layer synchronizer)
        self._waiters = []      # asyncio futures (see _hub)
        self._collected = False
        handle.hub.add(self)

    # -- uses of the C handle -------------------------------------------
    def _use(self):
        """The C handle for one call (pair with _unuse), or None when the
        task was released or the engine finalized (then _final is set)."""
        try:
            self._handle.enter()
        except RuntimeError:
            return None
        with self._lock:
            if self._ptr is not None:
                self._uses += 1
                return self._ptr
        self._handle.exit()  # released already: no use of the engine either
        return None

    def _unuse(self, engine=True):
        with self._lock:
            self._uses -= 1
            ptr = None
            if self._uses == 0 and self._closing and self._ptr is not None:
                ptr, self._ptr = self._ptr, None
        if ptr is not None:
            self._free(ptr)
        if engine:
            self._handle.exit()

    def _free(self, ptr):
        # A task ends once: its outcome is kept for calls after release.
        if self._final is None:
            self._record(ptr, capi.llmlink_task_cancel(ptr))
        self._before_release(ptr)
        capi.llmlink_task_release(ptr)
        self._handle.hub.discard(self)
        self._keep = None  # the C task no longer calls into it

    def _before_release(self, ptr):
        pass

    def _record(self, ptr, status):
        if status != S.LLMLINK_TASK_PENDING and self._final is None:
            message = "" if status == S.LLM_SUCCESS else capi.llmlink_task_error(ptr)
            self._final = (status_of(status), message)
        return status

    def _engine_closing(self):
        """The engine is being finalized: cancel (fenced) and release now,
        or when the calls running on the task return."""
        with self._lock:
            if self._ptr is None or self._closing:
                return
            self._closing = True
            self._uses += 1
            ptr = self._ptr
        if self._final is None:
            self._record(ptr, capi.llmlink_task_cancel(ptr))
        woken, self._waiters = self._waiters, []
        self._unuse(engine=False)
        from ._hub import resolve
        for fut in woken:
            resolve(fut)

    def _gone(self):
        if self._final is None:
            raise RuntimeError("llm datadist was finalized while the task ran")
        return self._final

    # -- the API ------------------------------------------------------------
    @property
    def status(self):
        """LLMLINK_TASK_PENDING while running, then the final status."""
        ptr = self._use()
        if ptr is None:
            return self._gone()[0]
        try:
            return status_of(self._record(ptr, capi.llmlink_task_status(ptr)))
        finally:
            self._unuse()

    @property
    def message(self):
        """The engine's message for a failed task ("" otherwise)."""
        self.status  # noqa: B018 - records the outcome once final
        return self._final[1] if self._final else ""

    def done(self):
        return self.status != S.LLMLINK_TASK_PENDING

    def wait(self, timeout_ms=None):
        """Waits up to timeout_ms (None: until the task ends): True once it
        finished, False when the time ran out first (it goes on);
        LLMException with the task's status when it failed, as the blocking
        call raises."""
        if timeout_ms is not None:
            check_int("timeout_ms", timeout_ms, 0, INT32_MAX)
        if self._wait_final(timeout_ms) is None:
            return False
        return self._outcome()

    def _wait_final(self, timeout_ms):
        """The final status, or None when timeout_ms ran out first."""
        ptr = self._use()
        if ptr is None:
            return self._gone()[0]
        try:
            while True:
                step = _WAIT_SLICE_MS if timeout_ms is None else timeout_ms
                st = self._record(ptr, capi.llmlink_task_wait(ptr, step))
                if st != S.LLMLINK_TASK_PENDING:
                    return status_of(st)
                if timeout_ms is not None:
                    return None
        finally:
            self._unuse()

    def _outcome(self):
        status, message = self._final
        if status != S.LLM_SUCCESS:
            raise LLMException(message, status)
        return True

    def cancel(self):
        """Cancels the task and returns its final status: when this returns,
        no byte of it lands in either side's memory any more. LLMLINK_CANCELLED
        (the link stays usable), LLMLINK_CANCELLED_LINK_CLOSED (the transport
        could not stop it alone and closed the link), or the status it had
        already ended with."""
        ptr = self._use()
        if ptr is None:
            return self._gone()[0]
        try:
            return status_of(self._record(ptr, capi.llmlink_task_cancel(ptr)))
        finally:
            self._unuse()

    def close(self):
        """Releases the task (cancelled first, fenced, if still running).
        Idempotent; also done by the garbage collector and a with-block."""
        ptr = self._use()
        if ptr is None:
            return
        with self._lock:
            self._closing = True
        try:
            if self._final is None:
                self._record(ptr, capi.llmlink_task_cancel(ptr))
        finally:
            self._unuse()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: nothing to report to
            pass

    def __await__(self):
        return self._await().__await__()

    async def _await(self):
        """None once the task succeeded; LLMException when it failed. If
        the awaiting coroutine is cancelled, the task is cancelled (fenced)
        before CancelledError goes on."""
        if not self.done():
            fut = self._handle.hub.watch(self)
            try:
                await fut
            except asyncio.CancelledError:
                self.cancel()
                raise
        self._wait_final(None)
        self._outcome()

    def __repr__(self):
        st = self._final[0] if self._final else "running"
        return f"<{type(self).__name__} {getattr(st, 'name', st)}>"


class CacheTask(Transfer):
    """transfer_cache_async's task, as llm_datadist's CacheTask:
    synchronize() and get_results(); a Transfer besides (wait, cancel,
    await, close)."""

    def __init__(self, handle, ptr, num_configs, keep):
        self._num_configs = num_configs
        self._results = None
        super().__init__(handle, ptr, keep)

    def _before_release(self, ptr):
        self._results = capi.llk_py_task_results(ptr, self._num_configs)

    def synchronize(self, timeout_in_millis=None):
        """Waits for every layer of every config (None: no limit) and returns
        the task's status: LLM_SUCCESS, the first failed config's status, or
        LLMLINK_TASK_PENDING when the time ran out first (the task goes on).
        Never raises for the transfer's outcome."""
        _check_millis(timeout_in_millis)
        st = self._wait_final(timeout_in_millis)
        return S.LLMLINK_TASK_PENDING if st is None else st

    def get_results(self, timeout_in_millis=None):
        """Waits as synchronize(), then one entry per transfer config: its
        LLMStatusCode, or None for a config none of whose layers has started
        (also the case when the time ran out first)."""
        _check_millis(timeout_in_millis)
        self._wait_final(timeout_in_millis)
        ptr = self._use()
        if ptr is None:
            results = self._results
        else:
            try:
                results = capi.llk_py_task_results(ptr, self._num_configs)
            finally:
                self._unuse()
        return [None if r == S.LLMLINK_TASK_PENDING else r for r in results]


def _check_millis(value):
    if value is not None:
        check_int("timeout_in_millis", value, 0, INT32_MAX)
