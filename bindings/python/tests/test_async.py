"""Transfers without waiting (the *_async calls) between this process
(decoder) and prompt peers in other processes: many in flight, every byte
checked; asyncio await driven by the engine's fd; a cancelled await is a
fenced cancel; the Transfer's own calls."""
import asyncio
import gc
import threading
import time

import numpy as np
import pytest

from conftest import cluster_to
from kvpattern import digest, pattern
from llmlink import (BlocksCacheKey, CacheDesc, CacheKey, DataType, LLMException, LLMStatusCode,
                     Transfer)

S = LLMStatusCode
TENSORS, BLOCKS, BLOCK = 2, 256, 1024     # per tensor: 256 blocks of 1 KiB
CANCELLED = (S.LLMLINK_CANCELLED, S.LLMLINK_CANCELLED_LINK_CLOSED)
# The tasks' own limit where many queue at once on a shared test host (the
# default, llm.SyncKvCacheWaitTime, is 1 s from submission).
LONG = 30000


def link(decoder, *peers):
    ret, rets = decoder.link_clusters([cluster_to(p) for p in peers], 5000)
    assert ret == S.LLM_SUCCESS, rets


def peer_blocks(peer, seed, tensors=TENSORS, blocks=BLOCKS, block=BLOCK):
    """A blocks cache on the peer (BlocksCacheKey(peer, 0)): the pattern of
    seed, or zeros for seed None."""
    return peer.request("register_blocks", num_tensors=tensors, shape=[blocks, block],
                        dtype="DT_UINT8", key=[peer.cluster_id, 0], seed=seed)["cache_id"]


def local_blocks(decoder, fill=None, seed=None, tensors=TENSORS, blocks=BLOCKS, block=BLOCK):
    """A blocks cache in numpy arrays of this process."""
    if seed is not None:
        arrays = [pattern(blocks * block, seed, t) for t in range(tensors)]
    else:
        arrays = [np.full(blocks * block, fill or 0, dtype=np.uint8) for _ in range(tensors)]
    desc = CacheDesc(tensors, [blocks, block], DataType.DT_UINT8)
    cache = decoder.cache_manager.register_blocks_cache(desc, [a.ctypes.data for a in arrays])
    return cache, arrays


def block_of(array, b, block=BLOCK):
    return array[b * block:(b + 1) * block]


def test_new_status_codes_are_exposed():
    assert S.LLMLINK_TASK_PENDING == 0x5010B10C
    assert S.LLMLINK_CANCELLED == 0x5010B10D
    assert S.LLMLINK_CANCELLED_LINK_CLOSED == 0x5010B10E
    assert S.LLMLINK_NOTIFY_QUEUE_FULL == 0x5010B10F
    assert S.LLMLINK_NOTIFY_QUEUE_FULL.name == "LLMLINK_NOTIFY_QUEUE_FULL"


def test_hundreds_in_flight_on_two_links_from_four_threads(make_decoder, start_peer):
    """Pulls from one peer and pushes to another, submitted from four
    threads before any is waited for; every byte on both sides checked."""
    src_peer, dst_peer = start_peer(1), start_peer(2)
    decoder = make_decoder()
    link(decoder, src_peer, dst_peer)
    peer_blocks(src_peer, seed=21)
    dst_id = peer_blocks(dst_peer, seed=None)
    cm = decoder.cache_manager
    into, into_arrays = local_blocks(decoder)               # pulled into
    out, out_arrays = local_blocks(decoder, seed=33)        # pushed from
    pulls = [(b, BLOCKS - 1 - b) for b in range(BLOCKS)]    # reversed order
    pushes = [(b, (b * 7) % BLOCKS) for b in range(0, BLOCKS, 2)]
    tasks, lock = [], threading.Lock()

    def submit(part):
        mine = []
        for s, d in pulls[part::4]:
            mine.append(cm.pull_blocks_async(BlocksCacheKey(1), into, [s], [d], timeout_ms=LONG))
        for s, d in pushes[part::4]:
            mine.append(cm.push_blocks_async(BlocksCacheKey(2), out, [s], [d], timeout_ms=LONG))
        with lock:
            tasks.extend(mine)

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(tasks) == len(pulls) + len(pushes)
    for task in tasks:
        assert task.wait(30000) is True
        assert task.status == S.LLM_SUCCESS and task.done() and task.message == ""
        task.close()
    for t in range(TENSORS):
        src = pattern(BLOCKS * BLOCK, 21, t)
        for s, d in pulls:
            assert np.array_equal(block_of(into_arrays[t], d), block_of(src, s)), (t, s, d)
    want = [np.zeros(BLOCKS * BLOCK, dtype=np.uint8) for _ in range(TENSORS)]
    for t in range(TENSORS):
        for s, d in pushes:
            block_of(want[t], d)[:] = block_of(out_arrays[t], s)
    assert dst_peer.request("digest", cache_id=dst_id)["digests"] == [digest(w) for w in want]
    stats = decoder.transfer_stats()
    assert stats["transfers"] >= len(tasks) and stats["transfers_failed"] == 0


def test_asyncio_gather_of_100_tasks_starts_no_thread(linked):
    decoder, peer = linked
    peer_blocks(peer, seed=8)
    cache, arrays = local_blocks(decoder)
    cm = decoder.cache_manager
    before = threading.active_count()
    hub = decoder._handle.hub
    drains = []
    real_drain = hub.drain

    def counted_drain():
        drains.append(1)
        return real_drain()

    hub.drain = counted_drain   # the reader's one job, counted: a spin would run it endlessly

    async def main():
        tasks = [cm.pull_blocks_async(BlocksCacheKey(1), cache, [(b * 3) % BLOCKS], [b],
                                      timeout_ms=LONG) for b in range(100)]
        results = await asyncio.gather(*tasks)
        assert threading.active_count() == before
        assert all(r is None for r in results)
        assert all(t.status == S.LLM_SUCCESS for t in tasks)
        # Nothing awaited any more: the loop no longer watches the fd.
        assert not decoder._handle.hub._watches
        for t in tasks:
            t.close()

    asyncio.run(main())
    assert threading.active_count() == before
    assert 1 <= len(drains) <= 100 + 20
    for t in range(TENSORS):
        src = pattern(BLOCKS * BLOCK, 8, t)
        for b in range(100):
            assert np.array_equal(block_of(arrays[t], b), block_of(src, (b * 3) % BLOCKS))
        assert not arrays[t][100 * BLOCK:].any()


def test_awaiting_a_failed_task_raises_its_status(linked):
    decoder, peer = linked
    cache, _ = local_blocks(decoder)
    cm = decoder.cache_manager

    async def main():
        # No cache under that key on the peer: the task fails there.
        task = cm.pull_blocks_async(BlocksCacheKey(1, model_id=77), cache, [0], [0])
        with pytest.raises(LLMException) as e:
            await task
        return task, e.value

    task, exc = asyncio.run(main())
    assert exc.status_code == S.LLM_KV_CACHE_NOT_EXIST == task.status
    assert task.message and task.message in str(exc)
    with pytest.raises(LLMException) as e:
        task.wait()
    assert e.value.status_code == S.LLM_KV_CACHE_NOT_EXIST
    assert task.cancel() == S.LLM_KV_CACHE_NOT_EXIST  # a finished task keeps its status
    task.close()


@pytest.mark.parametrize("direction", ["pull", "push"])
def test_cancelled_await_is_a_fenced_cancel(make_decoder, peer, direction):
    """A 128 MiB pull or push over tcp, its awaiting coroutine cancelled
    5 ms in: when CancelledError reaches the caller the task is cancelled
    and the destination (here for a pull, the peer's memory for a push)
    never changes again (checked for 200 ms)."""
    decoder = make_decoder(transport="tcp")
    link(decoder, peer)
    blocks, block = 64, 1024 * 1024
    peer_id = peer_blocks(peer, seed=None, blocks=blocks, block=block)       # zeros
    cache, arrays = local_blocks(decoder, fill=0xAB, blocks=blocks, block=block)
    cm = decoder.cache_manager
    key = BlocksCacheKey(1)
    submit = cm.pull_blocks_async if direction == "pull" else cm.push_blocks_async

    def destination():
        if direction == "pull":
            return [digest(a) for a in arrays]
        return peer.request("digest", cache_id=peer_id)["digests"]

    async def main():
        task = submit(key, cache, list(range(blocks)), list(range(blocks)), timeout_ms=30000)
        waiter = asyncio.ensure_future(task)
        await asyncio.sleep(0.005)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        return task

    task = asyncio.run(main())
    status = task.status
    assert status in CANCELLED, status
    first = destination()
    deadline = time.monotonic() + 0.2
    while time.monotonic() < deadline:
        time.sleep(0.02)
        assert destination() == first
    task.close()
    if status == S.LLMLINK_CANCELLED_LINK_CLOSED:
        link(decoder, peer)
    # CANCELLED: the link stayed usable; else it works again once relinked.
    with cm.pull_blocks_async(key, cache, [3], [5]) as after:
        assert after.wait(10000)


def test_peer_killed_with_tasks_in_flight(linked):
    """SIGKILL the peer with 40 tasks in flight: every awaited task ends
    with an error within its limit, through the fd; none hangs."""
    decoder, peer = linked
    peer_blocks(peer, seed=2)
    cache, _ = local_blocks(decoder)
    cm = decoder.cache_manager
    peer.pause()

    async def main():
        tasks = [cm.pull_blocks_async(BlocksCacheKey(1), cache, [b], [b], timeout_ms=5000)
                 for b in range(40)]
        await asyncio.sleep(0.05)
        peer.proc.kill()
        started = time.monotonic()
        outcomes = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
        return tasks, outcomes, time.monotonic() - started

    tasks, outcomes, took = asyncio.run(main())
    assert took < 20
    assert all(isinstance(o, LLMException) for o in outcomes), outcomes
    assert all(t.status not in (S.LLM_SUCCESS, S.LLMLINK_TASK_PENDING) for t in tasks)
    assert {o.status_code for o in outcomes} == {t.status for t in tasks}
    for t in tasks:
        t.close()


def test_wait_with_a_time_limit_and_the_transfer_lifecycle(linked):
    decoder, peer = linked
    peer_blocks(peer, seed=4)
    cache, arrays = local_blocks(decoder)
    cm = decoder.cache_manager
    peer.pause()
    try:
        task = cm.pull_blocks_async(BlocksCacheKey(1), cache, [1], [2], timeout_ms=20000)
        assert isinstance(task, Transfer)
        assert task.wait(50) is False                     # time ran out: it goes on
        assert task.status == S.LLMLINK_TASK_PENDING and not task.done()
    finally:
        peer.resume()
    assert task.wait() is True
    assert np.array_equal(block_of(arrays[1], 2), block_of(pattern(BLOCKS * BLOCK, 4, 1), 1))
    task.close()
    task.close()                                          # idempotent
    assert task.status == S.LLM_SUCCESS and task.wait(0) is True   # kept after release
    with cm.pull_blocks_async(BlocksCacheKey(1), cache, [3], [4]) as t2:
        assert t2.wait(10000)
    assert t2.status == S.LLM_SUCCESS
    # Dropped without close: the garbage collector releases it.
    cm.pull_blocks_async(BlocksCacheKey(1), cache, [5], [6]).wait(10000)
    gc.collect()
    assert not decoder._handle.hub._tasks


def big_pull(decoder, peer, fill=0xAB):
    """A 128 MiB pull over tcp (64 blocks of 1 MiB per tensor), submitted;
    (task, the destination arrays: keep them while the task may run)."""
    blocks, block = 64, 1024 * 1024
    peer_blocks(peer, seed=None, blocks=blocks, block=block)
    cache, arrays = local_blocks(decoder, fill=fill, blocks=blocks, block=block)
    task = decoder.cache_manager.pull_blocks_async(BlocksCacheKey(1), cache, list(range(blocks)),
                                                   list(range(blocks)), timeout_ms=30000)
    return task, arrays


def test_close_from_another_thread_wakes_a_waiter(make_decoder, peer):
    decoder = make_decoder(transport="tcp")
    link(decoder, peer)
    task, arrays = big_pull(decoder, peer)
    outcome = []

    def waiter():
        try:
            outcome.append(task.wait())
        except LLMException as e:
            outcome.append(e.status_code)

    thread = threading.Thread(target=waiter)
    thread.start()
    time.sleep(0.005)
    task.close()                     # cancels (fenced); the handle goes when wait returns
    thread.join(30)
    assert not thread.is_alive()
    assert outcome == [task.status] and outcome[0] in CANCELLED, task.message
    assert not decoder._handle.hub._tasks
    del arrays                       # only now: the task wrote into them until its fence


def test_finalize_wakes_an_await(make_decoder, peer):
    decoder = make_decoder(transport="tcp")
    link(decoder, peer)

    async def main():
        task, arrays = big_pull(decoder, peer)
        asyncio.get_running_loop().call_later(0.005, decoder.finalize)
        with pytest.raises(LLMException) as e:
            await asyncio.wait_for(task, 30)
        return task, e.value.status_code, arrays

    task, status, _ = asyncio.run(main())
    assert status == task.status and status in CANCELLED, task.message
    task.close()


def test_finalize_releases_running_tasks(make_decoder, peer):
    decoder = make_decoder()
    link(decoder, peer)
    peer_blocks(peer, seed=4)
    cache, _ = local_blocks(decoder)
    peer.pause()
    try:
        task = decoder.cache_manager.pull_blocks_async(BlocksCacheKey(1), cache, [1], [2],
                                                       timeout_ms=3000)
        started = time.monotonic()
        decoder.finalize()
        assert time.monotonic() - started < 10
    finally:
        peer.resume()
    assert task.done() and task.status != S.LLM_SUCCESS
    task.close()


def test_async_argument_checks(linked):
    decoder, peer = linked
    cache, _ = local_blocks(decoder)
    cm = decoder.cache_manager
    key = BlocksCacheKey(1)
    with pytest.raises(TypeError):
        cm.pull_blocks_async(key, cache, [0], [0], notify="text")
    with pytest.raises(ValueError):
        cm.pull_blocks_async(key, cache, [0], [0], notify=b"x" * 4097)
    with pytest.raises(ValueError):
        cm.pull_blocks_async(key, cache, [0], [0], notify=b"")
    with pytest.raises(ValueError):
        cm.pull_blocks_async(key, cache, [0], [0], timeout_ms=0)
    with pytest.raises(TypeError):
        cm.push_blocks_async(CacheKey(1, 2), cache, [0], [0])
    # A block past the local cache: PARAM_INVALID, at submit (no task) or
    # as the task's status.
    with pytest.raises(LLMException) as e:
        cm.pull_blocks_async(key, cache, [0], [BLOCKS]).wait(10000)
    assert e.value.status_code == S.LLM_PARAM_INVALID
    with pytest.raises(ValueError):
        cm.pull_blocks_async(key, cache, [0], [1]).wait(-1)
