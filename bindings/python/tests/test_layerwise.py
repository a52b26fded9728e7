"""transfer_cache_async (llm_datadist's layer-wise push) from this process
to prompt peers in other processes: a slow LayerSynchronizer sees layer i
on the peer before it releases layer i+1, and layer i+1 not yet; results
per config in llm_datadist's shape."""
import logging
import threading
import time

import numpy as np
import pytest

from conftest import cluster_to
from kvpattern import digest, pattern
from llmlink import (BlocksCacheKey, CacheDesc, CacheKeyByIdAndIndex, CacheTask, DataType,
                     LayerSynchronizer, LLMException, LLMStatusCode, TransferConfig,
                     TransferWithCacheKeyConfig)

S = LLMStatusCode
LAYERS, BLOCKS, BLOCK = 4, 8, 4096       # K and V per layer: 8 tensors
TENSORS = 2 * LAYERS
SRC, DST = [0, 1, 2], [5, 6, 7]
SEED = 51
WAIT_S = 10.0
LONG = 30000      # each layer push's limit (the default is llm.SyncKvCacheWaitTime, 1 s)


def link(decoder, *peers):
    ret, rets = decoder.link_clusters([cluster_to(p) for p in peers], 5000)
    assert ret == S.LLM_SUCCESS, rets


def zero_peer_blocks(peer):
    return peer.request("register_blocks", num_tensors=TENSORS, shape=[BLOCKS, BLOCK],
                        dtype="DT_UINT8", key=[peer.cluster_id, 0], seed=None)["cache_id"]


def local_source(decoder):
    arrays = [pattern(BLOCKS * BLOCK, SEED, t) for t in range(TENSORS)]
    desc = CacheDesc(TENSORS, [BLOCKS, BLOCK], DataType.DT_UINT8)
    cache = decoder.cache_manager.register_blocks_cache(desc, [a.ctypes.data for a in arrays])
    return cache, arrays


def want_on_peer(arrays):
    """The peer's tensors once every layer arrived: SRC blocks at DST."""
    want = [np.zeros(BLOCKS * BLOCK, dtype=np.uint8) for _ in range(TENSORS)]
    for t in range(TENSORS):
        for s, d in zip(SRC, DST):
            want[t][d * BLOCK:(d + 1) * BLOCK] = arrays[t][s * BLOCK:(s + 1) * BLOCK]
    return want


class Recorder(LayerSynchronizer):
    """Slow: each layer 'computes' for 50 ms. Before releasing layer i it
    waits (bounded) for layer i-1's bytes on the peer, and looks whether
    layer i's are there (they must not be)."""

    def __init__(self, peer, cache_id, arrays, answer=None):
        self.peer, self.cache_id, self.arrays = peer, cache_id, arrays
        self.calls, self.before_next, self.early = [], {}, {}
        self.answer = answer or (lambda layer: True)
        self.thread_ids = set()

    def layer_on_peer(self, layer):
        """'all', 'none' or 'some': layer's blocks on the peer now."""
        seen = []
        for t in (2 * layer, 2 * layer + 1):
            for s, d in zip(SRC, DST):
                got = bytes.fromhex(self.peer.request("read", cache_id=self.cache_id, tensor=t,
                                                      offset=d * BLOCK, size=BLOCK)["hex"])
                want = self.arrays[t][s * BLOCK:(s + 1) * BLOCK].tobytes()
                seen.append("all" if got == want else "none" if not any(got) else "some")
        return seen[0] if len(set(seen)) == 1 else "some"

    def synchronize_layer(self, layer_index, timeout_in_millis):
        self.calls.append((layer_index, timeout_in_millis))
        self.thread_ids.add(threading.get_ident())
        if layer_index > 0:
            deadline = time.monotonic() + WAIT_S
            while self.layer_on_peer(layer_index - 1) != "all" and time.monotonic() < deadline:
                time.sleep(0.005)
            self.before_next[layer_index - 1] = self.layer_on_peer(layer_index - 1)
        self.early[layer_index] = self.layer_on_peer(layer_index)
        time.sleep(0.05)
        return self.answer(layer_index)


def test_layer_i_lands_before_layer_i_plus_1_is_released(make_decoder, peer):
    decoder = make_decoder()
    link(decoder, peer)
    dst_id = zero_peer_blocks(peer)
    cache, arrays = local_source(decoder)
    sync = Recorder(peer, dst_id, arrays)
    config = TransferWithCacheKeyConfig(BlocksCacheKey(1), range(0, LAYERS), range(0, LAYERS))
    task = decoder.cache_manager.transfer_cache_async(cache, sync, [config], SRC, DST,
                                                      timeout_ms=LONG)
    assert isinstance(task, CacheTask)
    assert task.synchronize() == S.LLM_SUCCESS
    assert task.get_results() == [S.LLM_SUCCESS]
    assert sync.calls == [(i, None) for i in range(LAYERS)]
    assert threading.get_ident() not in sync.thread_ids      # an engine thread called it
    assert sync.before_next == {i: "all" for i in range(LAYERS - 1)}
    assert sync.early == {i: "none" for i in range(LAYERS)}
    assert peer.request("digest", cache_id=dst_id)["digests"] == \
        [digest(w) for w in want_on_peer(arrays)]
    task.close()
    assert task.get_results() == [S.LLM_SUCCESS]                # kept after release


def test_results_per_config_with_one_bad_destination(make_decoder, start_peer):
    p1, p2 = start_peer(1), start_peer(2)
    decoder = make_decoder()
    link(decoder, p1, p2)
    id1 = zero_peer_blocks(p1)
    cache, arrays = local_source(decoder)
    configs = [
        TransferWithCacheKeyConfig(BlocksCacheKey(1), range(0, LAYERS), range(0, LAYERS)),
        TransferWithCacheKeyConfig(BlocksCacheKey(2, model_id=9), range(0, 2), range(2, 4)),
    ]
    task = decoder.cache_manager.transfer_cache_async(cache, Recorder(p1, id1, arrays), configs,
                                                      SRC, DST, timeout_ms=LONG)
    status = task.synchronize(30000)
    results = task.get_results()
    assert len(results) == 2 and results[0] == S.LLM_SUCCESS
    assert results[1] not in (S.LLM_SUCCESS, None) and status == results[1]
    assert p1.request("digest", cache_id=id1)["digests"] == \
        [digest(w) for w in want_on_peer(arrays)]
    with pytest.raises(LLMException) as e:
        task.wait()
    assert e.value.status_code == results[1]
    task.close()


def test_a_false_or_raising_synchronizer_ends_the_task(make_decoder, peer, caplog):
    decoder = make_decoder()
    link(decoder, peer)
    dst_id = zero_peer_blocks(peer)
    cache, arrays = local_source(decoder)
    config = TransferWithCacheKeyConfig(BlocksCacheKey(1), range(0, LAYERS), range(0, LAYERS))
    cm = decoder.cache_manager

    sync = Recorder(peer, dst_id, arrays, answer=lambda layer: layer < 1)
    task = cm.transfer_cache_async(cache, sync, [config], SRC, DST, timeout_ms=LONG)
    assert task.synchronize() == S.LLM_FAILED
    assert task.get_results() == [S.LLM_FAILED]
    assert "layer synchronizer returned false for layer 1" in task.message
    assert [c[0] for c in sync.calls] == [0, 1]
    task.close()

    class Raises(LayerSynchronizer):
        def synchronize_layer(self, layer_index, timeout_in_millis):
            raise KeyError("model blew up")

    caplog.set_level(logging.ERROR, logger="llmlink")
    with cm.transfer_cache_async(cache, Raises(), [config], SRC, DST, timeout_ms=LONG) as task:
        assert task.synchronize() == S.LLM_FAILED
        assert "for layer 0" in task.message
    assert any("model blew up" in r.getMessage() or "model blew up" in str(r.exc_info)
               for r in caplog.records if r.name == "llmlink")


def test_results_are_none_until_a_layer_starts(make_decoder, peer):
    decoder = make_decoder()
    link(decoder, peer)
    zero_peer_blocks(peer)
    cache, _ = local_source(decoder)
    go = threading.Event()

    class Gate(LayerSynchronizer):
        def synchronize_layer(self, layer_index, timeout_in_millis):
            return go.wait(WAIT_S)

    config = TransferWithCacheKeyConfig(BlocksCacheKey(1), range(0, LAYERS), range(0, LAYERS))
    task = decoder.cache_manager.transfer_cache_async(cache, Gate(), (config, config), SRC, DST,
                                                      timeout_ms=LONG)
    assert task.get_results(timeout_in_millis=50) == [None, None]
    assert task.synchronize(timeout_in_millis=0) == S.LLMLINK_TASK_PENDING
    go.set()
    assert task.synchronize() == S.LLM_SUCCESS
    assert task.get_results() == [S.LLM_SUCCESS, S.LLM_SUCCESS]
    task.close()


def test_cache_of_batch_entries(make_decoder, peer):
    """Batch-entry caches: entry 1 of the local cache into entry 0 of the
    peer's, layer by layer, named by CacheKeyByIdAndIndex."""
    decoder = make_decoder()
    link(decoder, peer)
    entry = 256
    dst_id = peer.request("register_cache", num_tensors=TENSORS, shape=[2, entry],
                          dtype="DT_UINT8", keys=[], seed=None)["cache_id"]
    arrays = [pattern(2 * entry, 60, t) for t in range(TENSORS)]
    desc = CacheDesc(TENSORS, [2, entry], DataType.DT_UINT8)
    cache = decoder.cache_manager.register_cache(desc, [a.ctypes.data for a in arrays])

    class Now(LayerSynchronizer):
        def synchronize_layer(self, layer_index, timeout_in_millis):
            return True

    config = TransferWithCacheKeyConfig(CacheKeyByIdAndIndex(1, dst_id, 0), range(1, 3),
                                        range(0, 2), src_batch_index=1)
    with decoder.cache_manager.transfer_cache_async(cache, Now(), [config], timeout_ms=LONG) as task:
        assert task.synchronize() == S.LLM_SUCCESS
    want = [np.zeros(2 * entry, dtype=np.uint8) for _ in range(TENSORS)]
    for layer in range(2):                    # source layers 1, 2 -> layers 0, 1
        for kv in range(2):
            want[2 * layer + kv][:entry] = arrays[2 * (layer + 1) + kv][entry:]
    assert peer.request("digest", cache_id=dst_id)["digests"] == [digest(w) for w in want]


def test_configs_and_arguments(make_decoder):
    decoder = make_decoder()
    cm = decoder.cache_manager
    cache, _ = local_source(decoder)

    class Now(LayerSynchronizer):
        def synchronize_layer(self, layer_index, timeout_in_millis):
            return True

    with pytest.raises(LLMException) as e:
        cm.transfer_cache_async(cache, Now(), [TransferConfig(1, [4096] * 8)])
    assert e.value.status_code == S.LLM_FEATURE_NOT_ENABLED
    assert "TransferWithCacheKeyConfig" in str(e.value)
    with pytest.raises(ValueError):
        TransferWithCacheKeyConfig(BlocksCacheKey(1), range(0, 2), range(0, 3))
    with pytest.raises(ValueError):
        TransferWithCacheKeyConfig(BlocksCacheKey(1), range(0, 2), range(0, 2), src_batch_index=1)
    with pytest.raises(ValueError):
        TransferWithCacheKeyConfig(BlocksCacheKey(1), range(0, 4, 2), range(0, 2))
    with pytest.raises(TypeError):
        TransferWithCacheKeyConfig("key", range(0, 2), range(0, 2))
    config = TransferWithCacheKeyConfig(BlocksCacheKey(1), range(0, 2), range(0, 2))
    with pytest.raises(TypeError):
        cm.transfer_cache_async(cache, object(), [config])
    with pytest.raises(ValueError):
        cm.transfer_cache_async(cache, Now(), [])
    with pytest.raises(TypeError):
        cm.transfer_cache_async(cache, Now(), [config], "0", [1])
    with pytest.raises(ValueError):
        cm.transfer_cache_async(cache, Now(), [config], SRC, DST, dst_block_memory_size=0)
    with pytest.raises(TypeError):
        LayerSynchronizer()                   # abstract
