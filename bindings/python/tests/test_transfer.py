"""KV cache transfers between this process (decoder) and a prompt peer in
another process, every byte checked through numpy views."""
import numpy as np
import pytest

from conftest import cluster_to
from kvpattern import digest, pattern
from llmlink import (BlocksCacheKey, CacheDesc, CacheKey, CacheKeyByIdAndIndex, DataType,
                     LLMException, LLMStatusCode, Placement)

S = LLMStatusCode
BLOCKS, BLOCK_ELEMS = 16, 64          # per tensor: 16 blocks of 64 fp16 = 128 bytes
BLOCK_BYTES = BLOCK_ELEMS * 2
TENSORS = 4                           # K0 V0 K1 V1


def register_dst_blocks(decoder, num_tensors=TENSORS, blocks=BLOCKS):
    """A destination blocks cache in numpy arrays of this process (zeroed)."""
    arrays = [np.zeros(blocks * BLOCK_ELEMS, dtype=np.float16) for _ in range(num_tensors)]
    desc = CacheDesc(num_tensors, [blocks, BLOCK_ELEMS], DataType.DT_FLOAT16)
    cache = decoder.cache_manager.register_blocks_cache(desc, [a.ctypes.data for a in arrays])
    return cache, arrays


def peer_blocks(peer, seed, model=0, num_tensors=TENSORS):
    return peer.request("register_blocks", num_tensors=num_tensors, shape=[BLOCKS, BLOCK_ELEMS],
                        dtype="DT_FLOAT16", key=[peer.cluster_id, model], seed=seed)["cache_id"]


def src_block(seed, tensor, block):
    whole = pattern(BLOCKS * BLOCK_BYTES, seed, tensor)
    return whole[block * BLOCK_BYTES:(block + 1) * BLOCK_BYTES]


def block_bytes(array, block):
    return array.view(np.uint8)[block * BLOCK_BYTES:(block + 1) * BLOCK_BYTES]


@pytest.mark.parametrize("transport", ["tcp", "shm"])
def test_pull_blocks_into_registered_numpy_arrays(make_decoder, peer, transport):
    decoder = make_decoder(transport=transport)
    assert decoder.link_clusters([cluster_to(peer)])[0] == S.LLM_SUCCESS
    peer_blocks(peer, seed=5)
    cache, arrays = register_dst_blocks(decoder)
    src, dst = [3, 0, 15, 7], [1, 2, 9, 15]
    decoder.cache_manager.pull_blocks(BlocksCacheKey(peer.cluster_id, 0), cache, src, dst)
    for t, array in enumerate(arrays):
        for s, d in zip(src, dst):
            assert np.array_equal(block_bytes(array, d), src_block(5, t, s))
        untouched = set(range(BLOCKS)) - set(dst)
        assert all(not block_bytes(array, b).any() for b in untouched)
    stats = decoder.transfer_stats()
    assert stats["transfers"] == 1
    assert stats[f"{transport}_requests"] >= 1
    assert stats["rdma_requests"] == 0  # no RDMA device on a test host


def test_numpy_integers_are_ints(linked):
    decoder, peer = linked
    peer_blocks(peer, seed=6)
    cache, arrays = register_dst_blocks(decoder)
    src, dst = np.arange(2, 5, dtype=np.int64), np.arange(10, 13, dtype=np.uint32)
    decoder.cache_manager.pull_blocks(BlocksCacheKey(np.uint64(peer.cluster_id)), cache,
                                      list(src), tuple(dst))
    for s, d in zip(src, dst):
        assert np.array_equal(block_bytes(arrays[3], int(d)), src_block(6, 3, int(s)))


def test_pull_blocks_with_layer_ranges(linked):
    decoder, peer = linked
    peer_blocks(peer, seed=9)
    cache, arrays = register_dst_blocks(decoder, num_tensors=2)  # one layer: K, V
    decoder.cache_manager.pull_blocks(BlocksCacheKey(peer.cluster_id), cache, [4], [0],
                                      src_layer_range=range(1, 2), dst_layer_range=range(0, 1))
    # Layer 1 of the source is tensors 2 and 3.
    assert np.array_equal(block_bytes(arrays[0], 0), src_block(9, 2, 4))
    assert np.array_equal(block_bytes(arrays[1], 0), src_block(9, 3, 4))


def test_pull_cache_into_allocated_memory_read_through_numpy(linked):
    decoder, peer = linked
    batch, entry = 2, 256                       # per tensor: 2 entries of 256 bytes
    keys = [[peer.cluster_id, 70 + b, 0] for b in range(batch)]
    peer.request("register_cache", num_tensors=TENSORS, shape=[batch, entry], dtype="DT_UINT8",
                 keys=keys, seed=3)
    desc = CacheDesc(TENSORS, [batch, entry], DataType.DT_UINT8)
    cache = decoder.cache_manager.allocate_cache(desc)
    views = [np.frombuffer(cache.tensor_buffer(t), dtype=np.uint8) for t in range(TENSORS)]
    assert all(not v.any() for v in views)       # zeroed by the library
    decoder.cache_manager.pull_cache(CacheKey(peer.cluster_id, 71), cache, batch_index=0)
    for t, view in enumerate(views):
        want = pattern(batch * entry, 3, t)[entry:2 * entry]   # source entry 1
        assert np.array_equal(view[:entry], want)
        assert not view[entry:].any()
    decoder.cache_manager.deallocate_cache(cache)


def test_tensor_buffer_is_the_memory_not_a_copy(make_decoder):
    decoder = make_decoder()
    desc = CacheDesc(2, [4, 8], DataType.DT_FLOAT)
    cache = decoder.cache_manager.allocate_cache(desc)
    a = np.frombuffer(cache.tensor_buffer(1), dtype=np.float32)
    a[:] = np.arange(32, dtype=np.float32)
    b = np.frombuffer(cache.tensor_buffer(1), dtype=np.float32)
    assert np.array_equal(b, np.arange(32, dtype=np.float32))
    assert a.ctypes.data == cache.tensor_addrs[1]
    assert cache.tensor_buffer(0).nbytes == desc.size == 4 * 8 * 4
    assert cache.per_device_tensor_addrs == [cache.tensor_addrs]
    decoder.cache_manager.deallocate_cache(cache.cache_id)


def test_pull_cache_by_id_and_index(linked):
    decoder, peer = linked
    src_id = peer.request("register_cache", num_tensors=2, shape=[3, 64], dtype="DT_INT8",
                          keys=[], seed=11)["cache_id"]
    dst = np.zeros((2, 3 * 64), dtype=np.int8)
    desc = CacheDesc(2, [3, 64], DataType.DT_INT8)
    cache = decoder.cache_manager.register_cache(desc, [dst[0].ctypes.data, dst[1].ctypes.data])
    key = CacheKeyByIdAndIndex(peer.cluster_id, src_id, batch_index=2)
    decoder.cache_manager.pull_cache(key, cache, batch_index=1, size=32)
    for t in range(2):
        row = dst[t].view(np.uint8)
        assert np.array_equal(row[64:96], pattern(3 * 64, 11, t)[128:160])
        assert not row[:64].any() and not row[96:].any()
    decoder.cache_manager.unregister_cache(cache.cache_id)


def test_push_blocks_lands_in_the_peer(linked):
    decoder, peer = linked
    dst_id = peer_blocks(peer, seed=1, model=4)
    arrays = [pattern(BLOCKS * BLOCK_BYTES, 20, t).view(np.float16) for t in range(TENSORS)]
    desc = CacheDesc(TENSORS, [BLOCKS, BLOCK_ELEMS], DataType.DT_FLOAT16)
    src = decoder.cache_manager.register_blocks_cache(desc, [a.ctypes.data for a in arrays])
    decoder.cache_manager.push_blocks(BlocksCacheKey(peer.cluster_id, 4), src, [0, 1], [14, 15])
    got = peer.request("digest", cache_id=dst_id)["digests"]
    for t in range(TENSORS):
        want = pattern(BLOCKS * BLOCK_BYTES, 1, t)
        mine = arrays[t].view(np.uint8)
        want[14 * BLOCK_BYTES:16 * BLOCK_BYTES] = mine[0:2 * BLOCK_BYTES]
        assert got[t] == digest(want)


def test_push_cache_lands_in_the_peer(linked):
    decoder, peer = linked
    dst_id = peer.request("register_cache", num_tensors=2, shape=[2, 128], dtype="DT_UINT8",
                          keys=[], seed=2)["cache_id"]
    mine = [pattern(2 * 128, 30, t) for t in range(2)]
    desc = CacheDesc(2, [2, 128], DataType.DT_UINT8)
    src = decoder.cache_manager.register_cache(desc, [m.ctypes.data for m in mine])
    decoder.cache_manager.push_cache(CacheKeyByIdAndIndex(peer.cluster_id, dst_id, 0), src,
                                     src_batch_index=1)
    got = peer.request("digest", cache_id=dst_id)["digests"]
    for t in range(2):
        want = pattern(2 * 128, 2, t)
        want[:128] = mine[t][128:]
        assert got[t] == digest(want)


# -- engine errors: LLMException with the status and the C side's message ----

def test_unknown_remote_key_raises_with_status_and_message(linked):
    decoder, peer = linked
    cache, keep_alive = register_dst_blocks(decoder)  # noqa: F841 - registered memory
    with pytest.raises(LLMException) as e:
        decoder.cache_manager.pull_blocks(BlocksCacheKey(peer.cluster_id, 99), cache, [0], [0])
    assert e.value.status_code == S.LLM_KV_CACHE_NOT_EXIST
    assert str(e.value).strip("[] ").replace("LLM_KV_CACHE_NOT_EXIST", "").strip()


def test_peer_cannot_reach_a_host_cache_registered_by_default(linked):
    """llm_datadist: host memory is not remotely accessible unless asked for.
    The peer's cache answers as if it did not exist, and nothing moves."""
    decoder, peer = linked
    src_id = peer.request("register_blocks", num_tensors=TENSORS, shape=[BLOCKS, BLOCK_ELEMS],
                          dtype="DT_FLOAT16", key=[peer.cluster_id, 3], seed=5,
                          remote_accessible="default")["cache_id"]
    cache, arrays = register_dst_blocks(decoder)
    key = BlocksCacheKey(peer.cluster_id, 3)
    with pytest.raises(LLMException) as e:
        decoder.cache_manager.pull_blocks(key, cache, [0], [0])
    assert e.value.status_code == S.LLM_KV_CACHE_NOT_EXIST
    with pytest.raises(LLMException) as e:
        decoder.cache_manager.push_blocks(key, cache, [0], [0])
    assert e.value.status_code == S.LLM_KV_CACHE_NOT_EXIST
    rows = [np.zeros(BLOCKS * BLOCK_ELEMS, dtype=np.float16) for _ in range(TENSORS)]
    desc = CacheDesc(TENSORS, [BLOCKS, BLOCK_ELEMS], DataType.DT_FLOAT16)
    dst = decoder.cache_manager.register_cache(desc, [a.ctypes.data for a in rows])
    with pytest.raises(LLMException) as e:
        decoder.cache_manager.pull_cache(CacheKeyByIdAndIndex(peer.cluster_id, src_id, 0), dst)
    assert e.value.status_code == S.LLM_KV_CACHE_NOT_EXIST
    assert all(not a.any() for a in arrays + rows)
    got = peer.request("digest", cache_id=src_id)["digests"]
    assert got == [digest(pattern(BLOCKS * BLOCK_BYTES, 5, t)) for t in range(TENSORS)]


def test_peer_cannot_pull_by_cache_key_from_a_host_cache_registered_by_default(linked):
    """register_cache with keys, not remotely accessible: the peer's pull by
    CacheKey answers KV_CACHE_NOT_EXIST (as for a key nobody registered),
    nothing moves, and a cache registered accessible beside it is pulled."""
    decoder, peer = linked
    entry = 64
    hidden = peer.request("register_cache", num_tensors=2, shape=[1, entry], dtype="DT_UINT8",
                          keys=[[peer.cluster_id, 80, 0]], seed=8,
                          remote_accessible="default")["cache_id"]
    peer.request("register_cache", num_tensors=2, shape=[1, entry], dtype="DT_UINT8",
                 keys=[[peer.cluster_id, 81, 0]], seed=9, remote_accessible=True)
    rows = [np.zeros(entry, dtype=np.uint8) for _ in range(2)]
    desc = CacheDesc(2, [1, entry], DataType.DT_UINT8)
    dst = decoder.cache_manager.register_cache(desc, [a.ctypes.data for a in rows])
    with pytest.raises(LLMException) as e:
        decoder.cache_manager.pull_cache(CacheKey(peer.cluster_id, 80), dst)
    assert e.value.status_code == S.LLM_KV_CACHE_NOT_EXIST
    assert all(not a.any() for a in rows)
    got = peer.request("digest", cache_id=hidden)["digests"]
    assert got == [digest(pattern(entry, 8, t)) for t in range(2)]
    decoder.cache_manager.pull_cache(CacheKey(peer.cluster_id, 81), dst)
    assert all(np.array_equal(rows[t], pattern(entry, 9, t)) for t in range(2))


def test_remote_accessible_default_follows_placement(make_decoder):
    from llmlink._cache_manager import _access
    from llmlink import capi
    host = CacheDesc(1, [1, 16], DataType.DT_UINT8)
    device = CacheDesc(1, [1, 16], DataType.DT_UINT8, Placement.DEVICE)
    assert _access(host, None) == capi.LLMLINK_ACCESS_NONE
    assert _access(device, None) == capi.LLMLINK_ACCESS_READ_WRITE
    assert _access(host, True) == capi.LLMLINK_ACCESS_READ_WRITE
    assert _access(device, False) == capi.LLMLINK_ACCESS_NONE
    decoder = make_decoder()
    keep = np.zeros(16, np.uint8)
    with pytest.raises(TypeError):
        decoder.cache_manager.register_cache(host, [keep.ctypes.data], remote_accessible=1)


def test_read_only_cache_refuses_a_push_with_access_denied(linked):
    decoder, peer = linked
    src_id = peer.request("register_blocks", num_tensors=TENSORS, shape=[BLOCKS, BLOCK_ELEMS],
                          dtype="DT_FLOAT16", key=[peer.cluster_id, 4], seed=6,
                          access="READ")["cache_id"]
    cache, arrays = register_dst_blocks(decoder)
    for a in arrays:
        a[:] = 1
    with pytest.raises(LLMException) as e:
        decoder.cache_manager.push_blocks(BlocksCacheKey(peer.cluster_id, 4), cache, [0], [0])
    assert e.value.status_code == S.LLMLINK_ACCESS_DENIED
    assert S.LLMLINK_ACCESS_DENIED == 0x5010B10B
    assert S.LLMLINK_ACCESS_DENIED.name == "LLMLINK_ACCESS_DENIED"
    assert "write" in str(e.value)
    got = peer.request("digest", cache_id=src_id)["digests"]
    assert got == [digest(pattern(BLOCKS * BLOCK_BYTES, 6, t)) for t in range(TENSORS)]
    decoder.cache_manager.pull_blocks(BlocksCacheKey(peer.cluster_id, 4), cache, [2], [0])
    assert np.array_equal(block_bytes(arrays[1], 0), src_block(6, 1, 2))


def test_block_past_the_end_is_refused_by_the_holder(linked):
    decoder, peer = linked
    peer_blocks(peer, seed=0)
    cache, arrays = register_dst_blocks(decoder)
    with pytest.raises(LLMException) as e:
        decoder.cache_manager.pull_blocks(BlocksCacheKey(peer.cluster_id), cache, [BLOCKS], [0])
    assert e.value.status_code == S.LLM_PARAM_INVALID
    assert all(not a.any() for a in arrays)    # a refused request moves no byte


def test_pull_without_link_raises_not_yet_link(make_decoder):
    decoder = make_decoder()
    cache, keep_alive = register_dst_blocks(decoder)  # noqa: F841 - registered memory
    with pytest.raises(LLMException) as e:
        decoder.cache_manager.pull_blocks(BlocksCacheKey(12345), cache, [0], [0])
    assert e.value.status_code == S.LLM_NOT_YET_LINK
    assert "12345" in str(e.value)


def test_key_registered_twice_raises(make_decoder):
    decoder = make_decoder()
    desc = CacheDesc(1, [1, 16], DataType.DT_UINT8)
    keep = [np.zeros(16, np.uint8) for _ in range(2)]
    decoder.cache_manager.register_cache(desc, [keep[0].ctypes.data], [CacheKey(100, 1)])
    with pytest.raises(LLMException) as e:
        decoder.cache_manager.register_cache(desc, [keep[1].ctypes.data], [CacheKey(100, 1)])
    assert e.value.status_code == S.LLMLINK_CACHE_KEY_ALREADY_EXIST


def test_device_placement_is_not_enabled(make_decoder):
    decoder = make_decoder()
    desc = CacheDesc(1, [1, 16], DataType.DT_UINT8, Placement.DEVICE)
    with pytest.raises(LLMException) as e:
        decoder.cache_manager.allocate_cache(desc)
    assert e.value.status_code == S.LLM_FEATURE_NOT_ENABLED


def test_removed_key_and_pulled_allocated_key_are_gone(linked):
    decoder, peer = linked
    peer.request("allocate_cache", num_tensors=2, shape=[2, 64], dtype="DT_UINT8",
                 keys=[[peer.cluster_id, 1, 0], [peer.cluster_id, 2, 0]], seed=4)
    cache = decoder.cache_manager.allocate_cache(CacheDesc(2, [2, 64], DataType.DT_UINT8))
    decoder.cache_manager.pull_cache(CacheKey(peer.cluster_id, 1), cache, 0)
    assert np.array_equal(np.frombuffer(cache.tensor_buffer(1), np.uint8)[:64],
                          pattern(128, 4, 1)[:64])
    # llm_datadist: the holder drops an allocated cache's key once pulled.
    with pytest.raises(LLMException) as e:
        decoder.cache_manager.pull_cache(CacheKey(peer.cluster_id, 1), cache, 0)
    assert e.value.status_code == S.LLM_KV_CACHE_NOT_EXIST
    # remove_cache_key on this side: its own key is gone.
    local = decoder.cache_manager.allocate_cache(CacheDesc(1, [1, 8], DataType.DT_UINT8),
                                                 [CacheKey(decoder.cluster_id, 5)])
    decoder.cache_manager.remove_cache_key(CacheKey(decoder.cluster_id, 5))
    with pytest.raises(LLMException) as e:
        decoder.cache_manager.remove_cache_key(CacheKey(decoder.cluster_id, 5))
    assert e.value.status_code == S.LLM_KV_CACHE_NOT_EXIST
    decoder.cache_manager.deallocate_cache(local)


def test_unregistered_cache_is_gone(make_decoder):
    decoder = make_decoder()
    cache, keep_alive = register_dst_blocks(decoder)  # noqa: F841 - registered memory
    decoder.cache_manager.unregister_cache(cache.cache_id)
    with pytest.raises(LLMException) as e:
        decoder.cache_manager.unregister_cache(cache.cache_id)
    assert e.value.status_code == S.LLM_KV_CACHE_NOT_EXIST


# -- llm_datadist's argument names, and llmlink's earlier ones as aliases ----

UNGIVEN = object()


@pytest.mark.parametrize("names", ["llm_datadist", "llmlink"])
def test_keyword_names_of_keys_and_blocks_caches(linked, names):
    """A script that passes keys by keyword, with llm_datadist's names
    (cluster_id, blocks_cache_key) or llmlink's earlier ones
    (prompt_cluster_id, blocks_key), on both sides of a link."""
    decoder, peer = linked
    cluster, key_arg = (("cluster_id", "blocks_cache_key") if names == "llm_datadist"
                        else ("prompt_cluster_id", "blocks_key"))
    peer.request("register_blocks", num_tensors=TENSORS, shape=[BLOCKS, BLOCK_ELEMS],
                 dtype="DT_FLOAT16", key={cluster: peer.cluster_id, "model_id": 3}, seed=8,
                 key_arg=key_arg)
    cache, arrays = register_dst_blocks(decoder)
    key = BlocksCacheKey(**{cluster: peer.cluster_id}, model_id=3)
    assert key.cluster_id == key.prompt_cluster_id == peer.cluster_id
    decoder.cache_manager.pull_blocks(src_cache_key=key, dst_cache=cache, src_blocks=[2],
                                      dst_blocks=[5])
    assert np.array_equal(block_bytes(arrays[1], 5), src_block(8, 1, 2))
    # Blocks caches of the decoder keyed by keyword: the key is taken (a
    # second cache under it is refused).
    desc = CacheDesc(1, [2, 8], DataType.DT_UINT8)
    own_key = BlocksCacheKey(**{cluster: decoder.cluster_id})
    allocated = decoder.cache_manager.allocate_blocks_cache(desc, **{key_arg: own_key})
    keep = np.zeros(16, np.uint8)
    with pytest.raises(LLMException) as e:
        decoder.cache_manager.register_blocks_cache(desc, [keep.ctypes.data],
                                                    **{key_arg: own_key})
    assert e.value.status_code == S.LLMLINK_CACHE_KEY_ALREADY_EXIST
    decoder.cache_manager.remove_cache_key(own_key)
    decoder.cache_manager.deallocate_blocks_cache(allocated)
    # CacheKey by keyword, pulled whole into blocks with src_blocks left out,
    # (): llm_datadist's default, and None: llmlink's earlier one.
    entry = 2 * BLOCK_BYTES
    peer.request("register_cache", num_tensors=TENSORS, shape=[1, entry], dtype="DT_UINT8",
                 keys=[{cluster: peer.cluster_id, "req_id": 40, "model_id": 3}], seed=12)
    ckey = CacheKey(**{cluster: peer.cluster_id}, req_id=40, model_id=3)
    for src_blocks, dst in (((), [0, 1]), (None, [2, 3]), (UNGIVEN, [4, 5])):
        kwargs = {} if src_blocks is UNGIVEN else {"src_blocks": src_blocks}
        decoder.cache_manager.pull_blocks(ckey, cache, dst_blocks=dst, **kwargs)
        for t, array in enumerate(arrays):
            got = array.view(np.uint8)[dst[0] * BLOCK_BYTES:(dst[1] + 1) * BLOCK_BYTES]
            assert np.array_equal(got, pattern(entry, 12, t))


@pytest.mark.parametrize("peer_prefix, my_prefix", [(2**64 - 1, None), (None, 2**64 - 1),
                                                    (2**64 - 1, -1), (7, 7)])
def test_prefix_id_sentinel_of_llm_datadist_is_no_prefix(linked, peer_prefix, my_prefix):
    """llm_datadist's CacheKey defaults prefix_id to 2**64-1; llmlink's
    "no prefix" is -1: the two name the same key across the link."""
    decoder, peer = linked
    fields = {"cluster_id": peer.cluster_id, "req_id": 9}
    peer_key = dict(fields, **({} if peer_prefix is None else {"prefix_id": peer_prefix}))
    peer.request("register_cache", num_tensors=2, shape=[1, 64], dtype="DT_UINT8",
                 keys=[peer_key], seed=13)
    key = CacheKey(**fields) if my_prefix is None else CacheKey(**fields, prefix_id=my_prefix)
    cache = decoder.cache_manager.allocate_cache(CacheDesc(2, [1, 64], DataType.DT_UINT8))
    decoder.cache_manager.pull_cache(key, cache)
    assert np.array_equal(np.frombuffer(cache.tensor_buffer(1), np.uint8), pattern(64, 13, 1))
    if peer_prefix == 7:  # a real prefix is not "no prefix"
        with pytest.raises(LLMException) as e:
            decoder.cache_manager.pull_cache(CacheKey(**fields), cache)
        assert e.value.status_code == S.LLM_KV_CACHE_NOT_EXIST
    decoder.cache_manager.deallocate_cache(cache)
