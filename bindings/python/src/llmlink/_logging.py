"""The library's log, into Python's logging (logger "llmlink"). Off unless
set_log_level is called: the callback runs on the library's threads, under
its log lock, so it costs a GIL acquisition per line."""
import atexit
import logging

from . import capi

_LEVELS = [  # Python level -> the most verbose library level it shows
    (logging.DEBUG, capi.LLMLINK_LOG_DEBUG),
    (logging.INFO, capi.LLMLINK_LOG_INFO),
    (logging.WARNING, capi.LLMLINK_LOG_WARN),
    (logging.ERROR, capi.LLMLINK_LOG_ERROR),
]


def set_log_level(level):
    """Send library messages at level (a logging level) and above to the
    "llmlink" logger; None turns it off."""
    if level is None:
        capi.llk_py_set_log_level(capi.LLMLINK_LOG_NONE)
        return
    for py_level, c_level in _LEVELS:
        if level <= py_level:
            capi.llk_py_set_log_level(c_level)
            return
    capi.llk_py_set_log_level(capi.LLMLINK_LOG_ERROR)


# No callback into an interpreter that is shutting down.
atexit.register(capi.llk_py_set_log_level, capi.LLMLINK_LOG_NONE)
