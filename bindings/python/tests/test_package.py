"""The package itself: its public names, type hints, version and log."""
import ast
import logging
import os
import re

import pytest

import llmlink
from conftest import cluster_to
from llmlink import LLMConfig, LLMDataDist, LLMException, LLMRole, LLMStatusCode, capi

FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)
HEADER = os.path.join(os.path.dirname(__file__), "..", "..", "..", "ffi", "llmlink.h")

LLM_DATADIST_NAMES = [
    "LLMDataDist", "LLMRole", "LLMStatusCode", "LLMException", "LLMClusterInfo", "LLMConfig",
    "CacheDesc", "CacheKey", "CacheKeyByIdAndIndex", "BlocksCacheKey", "Cache", "DataType",
    "Placement", "CacheManager",
]


def test_the_llm_datadist_names_are_exported():
    for name in LLM_DATADIST_NAMES:
        assert name in llmlink.__all__ and hasattr(llmlink, name), name


def test_type_hints_cover_every_public_name():
    stub = os.path.join(os.path.dirname(llmlink.__file__), "__init__.pyi")
    tree = ast.parse(open(stub, encoding="utf-8").read())
    defined = {n.name for n in tree.body if isinstance(n, (ast.ClassDef, ast.FunctionDef))}
    assert set(llmlink.__all__) <= defined, set(llmlink.__all__) - defined
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    hinted = {f.name for f in classes["CacheManager"].body if isinstance(f, FUNCTIONS)}
    public = {m for m in vars(llmlink.CacheManager) if not m.startswith("_")}
    assert public <= hinted, public - hinted
    hinted = {f.name for f in classes["LLMDataDist"].body if isinstance(f, FUNCTIONS)}
    public = {m for m in vars(LLMDataDist) if not m.startswith("_")}
    assert public <= hinted, public - hinted


def test_version_is_the_headers():
    text = open(HEADER, encoding="utf-8").read()
    want = re.search(r'LLMLINK_VERSION_STRING "([^"]+)"', text).group(1)
    assert llmlink.__version__ == want == capi.LLMLINK_VERSION_STRING


def test_last_error_status_is_an_answer_not_an_exception():
    engine = LLMDataDist(LLMRole.DECODER, 8)
    with pytest.raises(LLMException) as e:
        engine.init({"llm.LinkRetryCount": "0"})
    # Read on the thread that failed, after the failure: still there.
    assert capi.llmlink_last_error_status() == e.value.status_code == LLMStatusCode.LLM_PARAM_INVALID
    assert "LinkRetryCount" in capi.llmlink_last_error()


def test_library_log_reaches_python_logging(caplog, make_decoder):
    caplog.set_level(logging.DEBUG, logger="llmlink")
    llmlink.set_log_level(logging.INFO)
    try:
        config = LLMConfig()
        config.listen_ip_info = "127.0.0.1:0"
        prompt = LLMDataDist(LLMRole.PROMPT, 61)
        prompt.init(config.generate_options())
        decoder = make_decoder(cluster_id=62)
        assert decoder.link_clusters([cluster_to(prompt.get_listen_port(), 61)])[0] == 0
        prompt.finalize()
    finally:
        llmlink.set_log_level(None)
    messages = [r.getMessage() for r in caplog.records if r.name == "llmlink"]
    assert any("listening on 127.0.0.1" in m for m in messages), messages
    assert any("linked to cluster 61" in m for m in messages), messages
    count = len(caplog.records)
    LLMDataDist(LLMRole.PROMPT, 63).init({"llm.listenIpInfo": "127.0.0.1:0"})
    assert len(caplog.records) == count  # off again


def test_extension_exports_only_its_init():
    # Its copy of the library stays private: no clash with a libllmlink.so
    # loaded by something else in the process.
    import subprocess

    from llmlink import _capi
    out = subprocess.run(["nm", "-D", "--defined-only", _capi.__file__], capture_output=True,
                         text=True, check=True).stdout
    symbols = {line.split()[-1] for line in out.splitlines() if line.strip()}
    assert symbols == {"PyInit__capi"}, symbols
