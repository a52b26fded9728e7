"""LLMStatusCode and LLMException against the C side."""
import os
import re

from llmlink import LLMException, LLMStatusCode, capi

HEADER = os.path.join(os.path.dirname(__file__), "..", "..", "..", "ffi", "llmlink.h")


def header_status_codes():
    """Every LLMLINK_* status #define of the public header: name -> value."""
    text = open(HEADER, encoding="utf-8").read()
    codes = dict(re.findall(r"#define\s+(LLMLINK_\w+)\s+(0x[0-9A-Fa-f]{8})u", text))
    assert len(codes) > 30, "the header's status list was not found"
    return {name: int(value, 16) for name, value in codes.items()}


def test_every_member_has_the_c_name_of_its_value():
    for member in LLMStatusCode:
        assert capi.llmlink_status_name(member.value) == member.name


def test_every_c_status_is_a_member():
    for macro, value in header_status_codes().items():
        member = LLMStatusCode(value)
        assert member.name == capi.llmlink_status_name(value), macro


# llm_datadist's LLMStatusCode, as its documentation lists it.
LLM_DATADIST = {
    "LLM_SUCCESS": 0x0, "LLM_FAILED": 0xFFFFFFFF, "LLM_WAIT_PROCESS_TIMEOUT": 0x5010B001,
    "LLM_KV_CACHE_NOT_EXIST": 0x5010B002, "LLM_REPEAT_REQUEST": 0x5010B003,
    "LLM_REQUEST_ALREADY_COMPLETED": 0x5010B004, "LLM_PARAM_INVALID": 0x5010B005,
    "LLM_ENGINE_FINALIZED": 0x5010B006, "LLM_NOT_YET_LINK": 0x5010B007,
    "LLM_ALREADY_LINK": 0x5010B008, "LLM_LINK_FAILED": 0x5010B009,
    "LLM_UNLINK_FAILED": 0x5010B00A, "LLM_NOTIFY_PROMPT_UNLINK_FAILED": 0x5010B00B,
    "LLM_CLUSTER_NUM_EXCEED_LIMIT": 0x5010B00C, "LLM_PROCESSING_LINK": 0x5010B00D,
    "LLM_DEVICE_OUT_OF_MEMORY": 0x5010B00E, "LLM_PREFIX_ALREADY_EXIST": 0x5010B00F,
    "LLM_PREFIX_NOT_EXIST": 0x5010B010, "LLM_SEQ_LEN_OVER_LIMIT": 0x5010B011,
    "LLM_NO_FREE_BLOCK": 0x5010B012, "LLM_BLOCKS_OUT_OF_MEMORY": 0x5010B013,
    "LLM_EXIST_LINK": 0x5010B018, "LLM_FEATURE_NOT_ENABLED": 0x5010B019,
    "LLM_TIMEOUT": 0x5010B01A, "LLM_LINK_BUSY": 0x5010B01B, "LLM_OUT_OF_MEMORY": 0x5010B01C,
}


def test_llm_datadist_names_and_values():
    for name, value in LLM_DATADIST.items():
        assert LLMStatusCode[name] == value, name
    assert isinstance(LLMStatusCode.LLM_SUCCESS, int)
    # Only llmlink's own codes come on top, all above 0x5010B100.
    extra = {m.name for m in LLMStatusCode} - set(LLM_DATADIST)
    assert all(n.startswith("LLMLINK_") and LLMStatusCode[n] > 0x5010B100 for n in extra)


def test_type_hints_name_real_members():
    import ast
    import llmlink
    stub = os.path.join(os.path.dirname(llmlink.__file__), "__init__.pyi")
    tree = ast.parse(open(stub, encoding="utf-8").read())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "LLMStatusCode")
    hinted = {n.target.id for n in cls.body if isinstance(n, ast.AnnAssign)}
    # A code the header gains later works without a stub change; a stale
    # or missing llm_datadist name in the stub does not pass.
    assert hinted <= {m.name for m in LLMStatusCode}
    assert set(LLM_DATADIST) <= hinted


def test_unknown_code_stays_an_int():
    assert capi.llmlink_status_name(0x5010BFFF) == "LLM_UNKNOWN_STATUS"
    assert capi.llk_py_status_of(0x5010BFFF) == 0x5010BFFF


def test_exception_carries_status_and_message():
    e = LLMException("the detail", LLMStatusCode.LLM_TIMEOUT)
    assert e.status_code is LLMStatusCode.LLM_TIMEOUT
    assert "the detail" in str(e) and "LLM_TIMEOUT" in str(e)
    assert not isinstance(e, RuntimeError)
