"""Notifications between this process (decoder) and a prompt peer in
another process: order, a full queue, attached to a transfer, and awaited
in asyncio on the engine's fd."""
import asyncio
import select
import threading
import time

import pytest

from conftest import cluster_to
from llmlink import BlocksCacheKey, CacheDesc, DataType, LLMException, LLMStatusCode, Notification

S = LLMStatusCode
DECODER = 100
WAIT_S = 10.0


def linked_to(make_decoder, peer):
    decoder = make_decoder(cluster_id=DECODER)
    ret, rets = decoder.link_clusters([cluster_to(peer)], 5000)
    assert ret == S.LLM_SUCCESS, rets
    return decoder


def peer_notifies(peer, want, max_count=None):
    """The peer's notifications, polled (bounded) until `want` arrived."""
    got, deadline = [], time.monotonic() + WAIT_S
    while len(got) < want and time.monotonic() < deadline:
        got += peer.request("get_notifies", max_count=max_count)["notifies"]
        if len(got) < want:
            time.sleep(0.01)
    return [(c, bytes.fromhex(h)) for c, h in got]


def test_order_both_ways(make_decoder, peer):
    decoder = linked_to(make_decoder, peer)
    for i in range(50):
        decoder.notify(1, b"to-prompt %d" % i)
    assert peer_notifies(peer, 50) == [(DECODER, b"to-prompt %d" % i) for i in range(50)]
    for i in range(20):
        peer.request("notify", cluster=DECODER, data=(b"to-decoder %d" % i).hex())
    got, deadline = [], time.monotonic() + WAIT_S
    while len(got) < 20 and time.monotonic() < deadline:
        got += decoder.get_notifies()
        time.sleep(0.01)
    assert got == [Notification(1, b"to-decoder %d" % i) for i in range(20)]
    assert all(isinstance(n, Notification) for n in got)
    assert decoder.get_notifies() == []
    big = bytes(range(256)) * 16                                    # 4096 bytes
    decoder.notify(1, big)
    assert peer_notifies(peer, 1) == [(DECODER, big)]


def test_a_full_queue_refuses_with_its_status(make_decoder, start_peer):
    peer = start_peer(1, opts=["llmlink.NotifyQueueDepth=4"])
    decoder = linked_to(make_decoder, peer)
    for i in range(4):
        decoder.notify(1, b"n%d" % i)
    with pytest.raises(LLMException) as e:
        decoder.notify(1, b"one too many")
    assert e.value.status_code == S.LLMLINK_NOTIFY_QUEUE_FULL
    assert peer_notifies(peer, 4) == [(DECODER, b"n%d" % i) for i in range(4)]
    decoder.notify(1, b"room again")                                # nothing was queued before
    assert peer_notifies(peer, 1) == [(DECODER, b"room again")]


def test_notification_attached_to_a_transfer(make_decoder, peer):
    decoder = linked_to(make_decoder, peer)
    peer.request("register_blocks", num_tensors=2, shape=[4, 256], dtype="DT_UINT8",
                 key=[1, 0], seed=3)
    desc = CacheDesc(2, [4, 256], DataType.DT_UINT8)
    cache = decoder.cache_manager.allocate_blocks_cache(desc)
    with decoder.cache_manager.pull_blocks_async(BlocksCacheKey(1), cache, [1, 2], [0, 3],
                                                 notify=b"request 7 read") as task:
        assert task.wait(int(WAIT_S * 1000))
    assert peer_notifies(peer, 1) == [(DECODER, b"request 7 read")]


def test_next_notify_awaits_the_fd(make_decoder, peer):
    decoder = linked_to(make_decoder, peer)
    before = threading.active_count()

    async def main():
        waiter = asyncio.ensure_future(decoder.next_notify())
        await asyncio.sleep(0.05)
        assert not waiter.done()
        peer.request("notify", cluster=DECODER, data=b"first".hex())
        first = await asyncio.wait_for(waiter, WAIT_S)
        peer.request("notify", cluster=DECODER, data=b"second".hex())
        peer.request("notify", cluster=DECODER, data=b"third".hex())
        second = await asyncio.wait_for(decoder.next_notify(), WAIT_S)
        third = await asyncio.wait_for(decoder.next_notify(), WAIT_S)
        assert threading.active_count() == before
        return first, second, third

    assert asyncio.run(main()) == (Notification(1, b"first"), Notification(1, b"second"),
                                   Notification(1, b"third"))
    assert not decoder._handle.hub._watches


def test_a_next_notify_that_gave_up_takes_nothing(make_decoder, peer):
    decoder = linked_to(make_decoder, peer)

    async def main():
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(decoder.next_notify(), 0.05)
        peer.request("notify", cluster=DECODER, data=b"after".hex())
        return await asyncio.wait_for(decoder.next_notify(), WAIT_S)

    assert asyncio.run(main()) == Notification(1, b"after")
    peer.request("notify", cluster=DECODER, data=b"later".hex())
    got, deadline = [], time.monotonic() + WAIT_S
    while not got and time.monotonic() < deadline:
        got = decoder.get_notifies()
        time.sleep(0.01)
    assert got == [Notification(1, b"later")]


def test_await_while_notifications_wait_unfetched(make_decoder, peer):
    """The fd stays readable while a notification waits that nobody takes:
    awaiting a transfer still completes, and the notification is left for
    get_notifies."""
    decoder = linked_to(make_decoder, peer)
    peer.request("register_blocks", num_tensors=2, shape=[4, 256], dtype="DT_UINT8",
                 key=[1, 0], seed=3)
    cache = decoder.cache_manager.allocate_blocks_cache(CacheDesc(2, [4, 256], DataType.DT_UINT8))
    peer.request("notify", cluster=DECODER, data=b"unread".hex())
    fd = decoder._handle.call(__import__("llmlink").capi.llmlink_get_event_fd)
    deadline = time.monotonic() + WAIT_S
    while not select.select([fd], [], [], 0)[0] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert select.select([fd], [], [], 0)[0]          # the notification arrived

    async def main():
        for b in range(4):
            await asyncio.wait_for(
                decoder.cache_manager.pull_blocks_async(BlocksCacheKey(1), cache, [b], [3 - b]),
                WAIT_S)

    asyncio.run(main())
    assert decoder.get_notifies() == [Notification(1, b"unread")]
    assert not select.select([fd], [], [], 0)[0]      # quiet once everything was taken


def test_notify_argument_checks(make_decoder, peer):
    decoder = linked_to(make_decoder, peer)
    with pytest.raises(TypeError):
        decoder.notify(1, "text")
    with pytest.raises(ValueError):
        decoder.notify(1, b"")
    with pytest.raises(ValueError):
        decoder.notify(1, b"x" * 4097)
    with pytest.raises(ValueError):
        decoder.notify(1, b"x", timeout_ms=0)
    with pytest.raises(LLMException) as e:
        decoder.notify(55, b"nobody")                                # no link with 55
    assert e.value.status_code == S.LLM_NOT_YET_LINK
    with pytest.raises(ValueError):
        decoder.get_notifies(-1)
