"""LLMDataDist.link_stats(cluster_id): the counters of one link as each end
sees it (what the peer's requests did to this engine's memory), between a
prompt and a decoder engine of this process linked over loopback."""
import numpy as np
import pytest

from conftest import cluster_to
from kvpattern import pattern
from llmlink import (BlocksCacheKey, CacheDesc, DataType, LLMConfig, LLMDataDist, LLMException,
                     LLMRole, LLMStatusCode, RdmaProtection, capi)

S = LLMStatusCode
BLOCKS, BLOCK_ELEMS = 8, 64            # per tensor: 8 blocks of 64 fp16 = 128 bytes
BLOCK_BYTES = BLOCK_ELEMS * 2
TENSORS = 4
PROMPT_ID, DECODER_ID = 301, 302

# No RDMA on these links: the rail fields (link stats version 2) are 0 and
# the per-rail lists empty.
NO_RAILS = {"rdma_rails": 0, "rdma_rails_up": 0, "rdma_rail_failovers": 0,
            "rdma_rail_repairs": 0, "rdma_rail_bytes": [], "rdma_rail_mtu": []}
ZERO = {"rdma_protection": RdmaProtection.NONE, "peer_write_bytes": 0, "peer_read_bytes": 0,
        "requests_fenced": 0, **NO_RAILS}


@pytest.fixture
def make_prompt():
    engines = []

    def make(transport="auto"):
        config = LLMConfig()
        config.listen_ip_info = "127.0.0.1:0"
        config.ge_options = {"llmlink.Transport": transport}
        engine = LLMDataDist(LLMRole.PROMPT, PROMPT_ID)
        engine.init(config.generate_options())
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.finalize()


@pytest.fixture
def pair(make_prompt, make_decoder):
    """pair(transport) -> (prompt, decoder), linked, both forcing transport."""
    def make(transport="auto"):
        prompt = make_prompt(transport)
        decoder = make_decoder(cluster_id=DECODER_ID, transport=transport)
        ret, rets = decoder.link_clusters([cluster_to(prompt.get_listen_port(), PROMPT_ID)], 5000)
        assert ret == S.LLM_SUCCESS, rets
        return prompt, decoder
    return make


def blocks_cache(engine, key, seed):
    """A blocks cache over numpy arrays filled with kvpattern(seed)."""
    desc = CacheDesc(TENSORS, [BLOCKS, BLOCK_ELEMS], DataType.DT_FLOAT16)
    arrays = [pattern(desc.size, seed, t) for t in range(TENSORS)]
    # a cache a peer reaches by key is registered remotely accessible
    cache = engine.cache_manager.register_blocks_cache(desc, [a.ctypes.data for a in arrays], key,
                                                       remote_accessible=key is not None)
    return cache, arrays


def test_a_new_link_counts_nothing_at_either_end(pair):
    prompt, decoder = pair()
    for engine, peer_id in ((prompt, DECODER_ID), (decoder, PROMPT_ID)):
        stats = engine.link_stats(peer_id)
        assert stats == ZERO
        assert isinstance(stats["rdma_protection"], RdmaProtection)
        assert engine._handle.call(capi.llmlink_get_link_stats, peer_id) == \
            {**ZERO, "rdma_protection": capi.LLMLINK_RDMA_PROTECTION_NONE}
    assert capi.LLMLINK_LINK_STATS_VERSION == 2
    assert capi.LLMLINK_MAX_RDMA_RAILS == 4
    # Without a cluster id: the engine's counters, as before.
    assert decoder.link_stats()["outbound_links"] == 1
    assert prompt.link_stats()["inbound_links"] == 1


def test_no_link_is_not_yet_link(pair):
    prompt, decoder = pair()
    with pytest.raises(LLMException) as e:
        prompt.link_stats(77)
    assert e.value.status_code == S.LLM_NOT_YET_LINK
    assert "77" in str(e.value)
    with pytest.raises(LLMException) as e:
        decoder.link_stats(DECODER_ID)  # its own id is no link
    assert e.value.status_code == S.LLM_NOT_YET_LINK
    # The counters go with the link.
    ret, rets = decoder.unlink_clusters([cluster_to(prompt.get_listen_port(), PROMPT_ID)], 5000)
    assert ret == S.LLM_SUCCESS, rets
    with pytest.raises(LLMException) as e:
        decoder.link_stats(PROMPT_ID)
    assert e.value.status_code == S.LLM_NOT_YET_LINK


def test_cluster_id_is_checked_and_needs_init(pair):
    prompt, _ = pair()
    with pytest.raises(TypeError):
        prompt.link_stats("302")
    with pytest.raises(ValueError):
        prompt.link_stats(-1)
    with pytest.raises(ValueError):
        prompt.link_stats(2**64)
    prompt.finalize()
    with pytest.raises(RuntimeError):
        prompt.link_stats(DECODER_ID)


def test_rdma_protection_is_the_c_enum():
    assert [(p.name, int(p)) for p in RdmaProtection] == \
        [("NONE", 0), ("WINDOW", 1), ("LINK_PD", 2), ("REGION", 3)]


@pytest.mark.parametrize("transport", ["tcp", "shm"])
def test_counters_are_the_bytes_the_peer_moved(pair, transport):
    """A pull reads the prompt engine's memory and a push writes it: the
    prompt's link counts exactly those bytes; the decoder's link, whose
    memory the peer never touched, stays at zero. Neither link has RDMA
    rails: their fields stay 0 / [] through the transfers (ZERO has
    them)."""
    prompt, decoder = pair(transport)
    key = BlocksCacheKey(PROMPT_ID, 0)
    _held, held_arrays = blocks_cache(prompt, key, seed=7)
    local, local_arrays = blocks_cache(decoder, None, seed=8)
    unit = BLOCK_BYTES * TENSORS  # one block of every tensor

    decoder.cache_manager.pull_blocks(key, local, [3, 4, 7], [0, 1, 2])
    assert np.array_equal(local_arrays[1].view(np.uint8)[:BLOCK_BYTES],
                          held_arrays[1].view(np.uint8)[3 * BLOCK_BYTES:4 * BLOCK_BYTES])
    assert prompt.link_stats(DECODER_ID) == {**ZERO, "peer_read_bytes": 3 * unit}
    assert decoder.link_stats(PROMPT_ID) == ZERO

    decoder.cache_manager.push_blocks(key, local, [0, 1], [6, 5])
    assert np.array_equal(held_arrays[2].view(np.uint8)[6 * BLOCK_BYTES:7 * BLOCK_BYTES],
                          local_arrays[2].view(np.uint8)[:BLOCK_BYTES])
    moved = {**ZERO, "peer_read_bytes": 3 * unit, "peer_write_bytes": 2 * unit}
    assert prompt.link_stats(DECODER_ID) == moved
    assert decoder.link_stats(PROMPT_ID) == ZERO

    # A refused push (block 8 of 8) moves and counts nothing.
    with pytest.raises(LLMException) as e:
        decoder.cache_manager.push_blocks(key, local, [0], [BLOCKS])
    assert e.value.status_code == S.LLM_PARAM_INVALID
    assert prompt.link_stats(DECODER_ID) == moved
