"""The C engine handle and the one rule the ABI leaves to its caller:
llmlink_finalize/destroy must not race with other calls on the engine.
Calls take a use count; close() refuses new calls, cancels and releases
the engine's tasks (which wakes the calls waiting on them), waits for the
running calls (each is bounded by its own C timeout), then finalizes and
frees."""
import threading

from . import capi
from ._hub import TaskHub

# Longer than any single C call may take with sane options; a bound so
# that close() can never hang for ever on a call that never returns.
_CLOSE_WAIT_S = 600.0


class EngineHandle:
    def __init__(self, role, cluster_id, options):
        self._cond = threading.Condition()
        self._calls = 0
        self._ptr = capi.llmlink_create(role, cluster_id)
        try:
            capi.llmlink_init(self._ptr, options)
        except BaseException:
            capi.llmlink_destroy(self._ptr)
            self._ptr = None
            raise
        # The engine's tasks, its event fd and the asyncio loops watching it.
        self.hub = TaskHub(self)

    @property
    def open(self):
        return self._ptr is not None

    def enter(self):
        """Counts a call on the engine and returns its pointer, or
        RuntimeError once closed; every enter() is paired with exit()."""
        with self._cond:
            if self._ptr is None:
                raise RuntimeError("llm datadist is not initialized (or was finalized)")
            self._calls += 1
            return self._ptr

    def exit(self):
        with self._cond:
            self._calls -= 1
            if self._calls == 0:
                self._cond.notify_all()

    def call(self, fn, *args):
        """fn(engine pointer, *args), or RuntimeError once closed."""
        ptr = self.enter()
        try:
            return fn(ptr, *args)
        finally:
            self.exit()

    def close(self):
        with self._cond:
            ptr, self._ptr = self._ptr, None
            if ptr is None:
                return
        # Cancel every task first: a call blocked waiting on one returns.
        self.hub.close_all()
        with self._cond:
            if not self._cond.wait_for(lambda: self._calls == 0, timeout=_CLOSE_WAIT_S):
                # Freeing under a running call would be a use-after-free:
                # leak the engine instead, and say so.
                raise RuntimeError("finalize: engine calls still running after "
                                   f"{_CLOSE_WAIT_S:.0f} s; the engine is left allocated")
        # Tasks submitted while the first pass ran are released now (no
        # call is running any more), before the engine that owns them.
        self.hub.close_all()
        capi.llmlink_destroy(ptr)
