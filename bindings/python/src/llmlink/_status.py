"""LLMStatusCode and LLMException, as llm_datadist has them."""
from enum import IntEnum

from . import capi


def _c_status_codes():
    """{name: value} of every status the C library names: the header's
    LLMLINK_* constants (as SWIG exports them), named by llmlink_status_name().
    Other constants (roles, limits, ...) have no status name and drop out."""
    codes = {}
    for attr, value in vars(capi).items():
        if not attr.startswith("LLMLINK_") or not isinstance(value, int) or \
                not 0 <= value <= 0xFFFFFFFF or value in codes.values():
            continue
        name = capi.llmlink_status_name(value)
        if name != "LLM_UNKNOWN_STATUS":
            codes[name] = value
    return codes


# llm_datadist's LLMStatusCode: its names and values (LLM_SUCCESS = 0,
# LLM_PARAM_INVALID = 0x5010B005, ...), then llmlink's own codes, named
# LLMLINK_*. Built from the C side, so a code the header gains is here too.
LLMStatusCode = IntEnum("LLMStatusCode", _c_status_codes(), module=__name__)
LLMStatusCode.__doc__ = "Status of an llmlink call (values of llm_datadist's LLMStatusCode)."


class LLMException(Exception):
    """An engine call failed: status_code says how, the message why (the
    C side's llmlink_last_error() of that call)."""

    def __init__(self, message: str = "", status_code=LLMStatusCode.LLM_FAILED):
        super().__init__(message)
        self._status_code = status_code

    @property
    def status_code(self):
        return self._status_code

    def __str__(self):
        name = getattr(self._status_code, "name", str(self._status_code))
        text = super().__str__()
        return f"[{name}] {text}" if text else f"[{name}]"


def status_of(code: int):
    """LLMStatusCode for code; a code this version does not know stays an int
    (the C side may add codes; they must not turn into a crash here)."""
    try:
        return LLMStatusCode(code)
    except ValueError:
        return code


def exception_of(code: int, message: str) -> LLMException:
    # Called by the SWIG layer (llk_py_raise) for every failed call.
    return LLMException(message, status_of(code))
