"""llm_datadist's error classes: TypeError for a wrong type, ValueError for
a value out of range, RuntimeError before init, LLMException from the engine."""
import numpy as np
import pytest

from llmlink import (BlocksCacheKey, CacheDesc, CacheKey, CacheKeyByIdAndIndex, DataType,
                     LLMClusterInfo, LLMConfig, LLMDataDist, LLMException, LLMRole,
                     LLMStatusCode, Placement)


def a_cluster(port=26000):
    c = LLMClusterInfo()
    c.remote_cluster_id = 1
    c.append_local_ip_info("127.0.0.1", port)
    c.append_remote_ip_info("127.0.0.1", port)
    return c


@pytest.fixture
def decoder(make_decoder):
    return make_decoder()


@pytest.fixture
def blocks_cache(decoder):
    keep = np.zeros(64, np.uint8)
    cache = decoder.cache_manager.register_blocks_cache(
        CacheDesc(1, [4, 16], DataType.DT_UINT8), [keep.ctypes.data])
    yield cache
    del keep


TYPE_ERRORS = {
    "role as str": lambda: LLMDataDist("DECODER", 0),
    "role as int": lambda: LLMDataDist(2, 0),
    "cluster_id as str": lambda: LLMDataDist(LLMRole.DECODER, "0"),
    "cluster_id as float": lambda: LLMDataDist(LLMRole.DECODER, 1.0),
    "remote_cluster_id as str": lambda: setattr(LLMClusterInfo(), "remote_cluster_id", "1"),
    "remote_role_type as int": lambda: setattr(LLMClusterInfo(), "remote_role_type", 1),
    "ip as float": lambda: LLMClusterInfo().append_local_ip_info(1.5, 1),
    "ip as bytes": lambda: LLMClusterInfo().append_remote_ip_info(b"127.0.0.1", 1),
    "port as str": lambda: LLMClusterInfo().append_local_ip_info("127.0.0.1", "80"),
    "port as bool": lambda: LLMClusterInfo().append_local_ip_info("127.0.0.1", True),
    "data_type as str": lambda: CacheDesc(1, [1], "DT_FLOAT16"),
    "placement as int": lambda: CacheDesc(1, [1], DataType.DT_FLOAT16, 0),
    "shape as int": lambda: CacheDesc(1, 4, DataType.DT_FLOAT16),
    "req_id as str": lambda: CacheKey(1, "2"),
    "model_id as float": lambda: BlocksCacheKey(1, 0.0),
    "config timeout as str": lambda: setattr(LLMConfig(), "sync_kv_timeout", "1000"),
    "config flag as int": lambda: setattr(LLMConfig(), "enable_cache_manager", 1),
    "ge_options value as int": lambda: setattr(LLMConfig(), "ge_options", {"k": 1}),
}

VALUE_ERRORS = {
    "negative cluster_id": lambda: LLMDataDist(LLMRole.DECODER, -1),
    "cluster_id over 2**64": lambda: LLMDataDist(LLMRole.DECODER, 2**64),
    "negative remote_cluster_id": lambda: setattr(LLMClusterInfo(), "remote_cluster_id", -3),
    "remote role DECODER": lambda: setattr(LLMClusterInfo(), "remote_role_type", LLMRole.DECODER),
    "port > 65535": lambda: LLMClusterInfo().append_local_ip_info("127.0.0.1", 65536),
    "negative port": lambda: LLMClusterInfo().append_remote_ip_info("127.0.0.1", -1),
    "bad ip": lambda: LLMClusterInfo().append_local_ip_info("300.1.1.1", 1),
    "ip not an address": lambda: LLMClusterInfo().append_local_ip_info("localhost", 1),
    "int ip over uint32": lambda: LLMClusterInfo().append_local_ip_info(2**32, 1),
    "zero tensors": lambda: CacheDesc(0, [1], DataType.DT_FLOAT16),
    "zero dimension": lambda: CacheDesc(1, [4, 0], DataType.DT_FLOAT16),
    "empty shape": lambda: CacheDesc(1, [], DataType.DT_FLOAT16),
    "negative req_id": lambda: CacheKey(1, -1),
    "negative batch_index": lambda: CacheKeyByIdAndIndex(1, 1, -1),
    "cache_id 0": lambda: CacheKeyByIdAndIndex(1, 0),
    "config timeout 0": lambda: setattr(LLMConfig(), "sync_kv_timeout", 0),
    "config retry count 101": lambda: setattr(LLMConfig(), "link_retry_count", 101),
    "negative device id": lambda: setattr(LLMConfig(), "device_id", -1),
}


@pytest.mark.parametrize("case", sorted(TYPE_ERRORS))
def test_wrong_type_raises_type_error(case):
    with pytest.raises(TypeError):
        TYPE_ERRORS[case]()


@pytest.mark.parametrize("case", sorted(VALUE_ERRORS))
def test_out_of_range_raises_value_error(case):
    with pytest.raises(ValueError):
        VALUE_ERRORS[case]()


def test_link_arguments(decoder):
    with pytest.raises(TypeError):
        decoder.link_clusters(a_cluster())                 # not a list
    with pytest.raises(TypeError):
        decoder.link_clusters([a_cluster(), "x"])
    with pytest.raises(TypeError):
        decoder.link_clusters([a_cluster()], "3000")
    with pytest.raises(TypeError):
        decoder.link_clusters([a_cluster()], 3000.0)
    for timeout in (0, -5):
        with pytest.raises(ValueError):
            decoder.link_clusters([a_cluster()], timeout)
    with pytest.raises(ValueError):
        decoder.link_clusters([a_cluster()], 2**31)
    with pytest.raises(ValueError):
        decoder.link_clusters([LLMClusterInfo()])          # remote_cluster_id unset
    with pytest.raises(TypeError):
        decoder.unlink_clusters([a_cluster()], 3000, force=1)
    with pytest.raises(ValueError):
        decoder.unlink_clusters([a_cluster()], timeout=0)
    with pytest.raises(TypeError):
        decoder.check_link_status("1")
    with pytest.raises(ValueError):
        decoder.check_link_status(-1)


def test_init_arguments():
    engine = LLMDataDist(LLMRole.DECODER, 3)
    with pytest.raises(TypeError):
        engine.init([("llm.SyncKvCacheWaitTime", "10")])
    with pytest.raises(TypeError):
        engine.init({"llm.SyncKvCacheWaitTime": 10})


def test_cache_arguments(decoder, blocks_cache):
    cm = decoder.cache_manager
    desc = CacheDesc(1, [4, 16], DataType.DT_UINT8)
    with pytest.raises(TypeError):
        cm.register_blocks_cache("desc", [1])
    with pytest.raises(TypeError):
        cm.register_blocks_cache(desc, 1234)
    with pytest.raises(TypeError):
        cm.register_blocks_cache(desc, [1.0])
    with pytest.raises(ValueError):
        cm.register_blocks_cache(desc, [0])
    with pytest.raises(ValueError):
        cm.register_blocks_cache(desc, [-8])
    with pytest.raises(TypeError):
        cm.register_cache(desc, [4096], [BlocksCacheKey(1)])
    with pytest.raises(TypeError):
        cm.pull_blocks(CacheKey(1, 1), "cache", None, [0])
    with pytest.raises(TypeError):
        cm.pull_blocks(BlocksCacheKey(1), blocks_cache, [0], "0")
    with pytest.raises(ValueError):
        cm.pull_blocks(BlocksCacheKey(1), blocks_cache, [-1], [0])
    with pytest.raises(TypeError):
        cm.pull_cache(BlocksCacheKey(1), blocks_cache)
    with pytest.raises(ValueError):
        cm.pull_cache(CacheKey(1, 1), blocks_cache, batch_index=-1)
    with pytest.raises(ValueError):
        cm.pull_cache(CacheKey(1, 1), blocks_cache, size=0)
    with pytest.raises(TypeError):
        cm.pull_cache(CacheKey(1, 1), blocks_cache, src_layer_range=(0, 1))
    with pytest.raises(ValueError):
        cm.pull_cache(CacheKey(1, 1), blocks_cache, src_layer_range=range(0, 4, 2))
    with pytest.raises(ValueError):
        cm.pull_cache(CacheKey(1, 1), blocks_cache, tensor_num_per_layer=0)
    with pytest.raises(TypeError):
        cm.push_blocks(CacheKey(1, 1), blocks_cache, [0], [0])
    with pytest.raises(ValueError):
        cm.unregister_cache(-1)
    with pytest.raises(TypeError):
        cm.remove_cache_key(CacheKeyByIdAndIndex(1, 1))
    with pytest.raises(ValueError):
        blocks_cache.tensor_buffer(1)


def test_upstream_and_older_argument_names(decoder):
    """llm_datadist's names, and llmlink's earlier ones as keyword aliases."""
    assert CacheKey(cluster_id=5, req_id=6).cluster_id == 5
    assert CacheKey(prompt_cluster_id=5, req_id=6).prompt_cluster_id == 5
    assert BlocksCacheKey(cluster_id=5, model_id=1).cluster_id == 5
    assert BlocksCacheKey(prompt_cluster_id=5).model_id == 0
    assert "cluster_id=5" in repr(BlocksCacheKey(5))
    # prefix_id: llm_datadist's default 2**64-1 is llmlink's -1, no prefix.
    assert CacheKey(1, 2).prefix_id == -1
    assert CacheKey(1, 2, prefix_id=2**64 - 1).prefix_id == -1
    assert CacheKey(1, 2, 0, np.uint64(2**64 - 1)).prefix_id == -1
    assert CacheKey(1, 2, prefix_id=2**63 - 1).prefix_id == 2**63 - 1
    for bad in (2**63, 2**64 - 2, 2**64, -2):
        with pytest.raises(ValueError):
            CacheKey(1, 2, prefix_id=bad)
    with pytest.raises(TypeError):
        CacheKey(1, 2, prefix_id=True)
    # Both names at once: a TypeError that names both.
    both = [lambda: CacheKey(1, 2, prompt_cluster_id=1),
            lambda: CacheKey(cluster_id=1, prompt_cluster_id=1, req_id=2),
            lambda: BlocksCacheKey(1, prompt_cluster_id=1)]
    for call in both:
        with pytest.raises(TypeError, match="cluster_id.*prompt_cluster_id"):
            call()
    cm = decoder.cache_manager
    desc = CacheDesc(1, [4, 16], DataType.DT_UINT8)
    keep = np.zeros(64, np.uint8)
    for call in (lambda k: cm.register_blocks_cache(desc, [keep.ctypes.data], k, blocks_key=k),
                 lambda k: cm.register_blocks_cache(desc, [keep.ctypes.data],
                                                    blocks_cache_key=None, blocks_key=k),
                 lambda k: cm.allocate_blocks_cache(desc, blocks_cache_key=k, blocks_key=k)):
        with pytest.raises(TypeError, match="blocks_cache_key.*blocks_key"):
            call(BlocksCacheKey(decoder.cluster_id))
    # Missing required arguments, and wrong types under either name.
    for call in (lambda: CacheKey(), lambda: CacheKey(1), lambda: CacheKey(req_id=1),
                 lambda: BlocksCacheKey(), lambda: BlocksCacheKey(model_id=0),
                 lambda: CacheKey(prompt_cluster_id="1", req_id=1),
                 lambda: cm.allocate_blocks_cache(desc, blocks_key=CacheKey(1, 1)),
                 lambda: cm.allocate_blocks_cache(desc, blocks_cache_key=CacheKey(1, 1)),
                 lambda: cm.allocate_blocks_cache(desc, blocks_kee=None)):
        with pytest.raises(TypeError):
            call()
    # None under either name: no key.
    for kw in ("blocks_cache_key", "blocks_key"):
        cm.deallocate_blocks_cache(cm.allocate_blocks_cache(desc, **{kw: None}))
    cm.unregister_cache(cm.register_blocks_cache(desc, [keep.ctypes.data], blocks_key=None))


def test_calls_before_init_raise_runtime_error():
    engine = LLMDataDist(LLMRole.DECODER, 4)
    for call in (lambda: engine.link_clusters([a_cluster()]),
                 lambda: engine.unlink_clusters([a_cluster()]),
                 lambda: engine.check_link_status(1),
                 lambda: engine.cache_manager,
                 lambda: engine.get_listen_port()):
        with pytest.raises(RuntimeError):
            call()
        with pytest.raises(RuntimeError):   # the not-initialized check comes first
            engine.link_clusters("not even a list", "nor a timeout")
    assert engine.cluster_id == 4
    engine.finalize()                       # harmless before init


def test_calls_after_finalize_raise_runtime_error(make_decoder):
    engine = make_decoder()
    cm = engine.cache_manager
    engine.finalize()
    with pytest.raises(RuntimeError):
        engine.check_link_status(1)
    with pytest.raises(RuntimeError):
        cm.allocate_cache(CacheDesc(1, [1, 8], DataType.DT_UINT8))


def test_engine_errors_raise_llm_exception_with_the_c_message():
    engine = LLMDataDist(LLMRole.PROMPT, 6)
    with pytest.raises(LLMException) as e:
        engine.init({"llm.NoSuchOption": "1"})
    assert e.value.status_code == LLMStatusCode.LLM_PARAM_INVALID
    assert "llm.NoSuchOption" in str(e.value)
    with pytest.raises(LLMException) as e:
        engine.init({"llm.listenIpInfo": "127.0.0.1:0", "llm.SyncKvCacheWaitTime": "0"})
    assert e.value.status_code == LLMStatusCode.LLM_PARAM_INVALID
    assert "SyncKvCacheWaitTime" in str(e.value)
    with pytest.raises(RuntimeError):       # a failed init leaves no engine
        engine.check_link_status(1)


def test_check_link_status_raises_when_not_linked(decoder):
    with pytest.raises(LLMException) as e:
        decoder.check_link_status(31337)
    assert e.value.status_code == LLMStatusCode.LLM_NOT_YET_LINK
    assert "31337" in str(e.value)


def test_more_dimensions_than_the_abi_has_raise_value_error(decoder):
    # LLMLINK_MAX_DIMS is 8: caught by the SWIG layer before the call.
    with pytest.raises(ValueError):
        decoder.cache_manager.allocate_cache(CacheDesc(1, [1] * 9, DataType.DT_UINT8))


def test_placement_host_default():
    assert CacheDesc(1, [1], DataType.DT_BF16).placement is Placement.HOST
