"""Several Python threads in engine calls at once, while another Python
thread keeps running: the GIL is released for as long as a call blocks."""
import socket
import threading
import time

import numpy as np

from conftest import cluster_to
from kvpattern import pattern
from llmlink import BlocksCacheKey, CacheDesc, DataType, LLMException, LLMStatusCode

S = LLMStatusCode
BLOCKS, BLOCK_BYTES, TENSORS = 64, 256, 2


class Ticker:
    """A Python thread that records when it got to run."""

    def __init__(self, interval_s=0.005):
        self.ticks = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval_s,), daemon=True)

    def _run(self, interval_s):
        while not self._stop.is_set():
            self.ticks.append(time.monotonic())
            time.sleep(interval_s)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=10)

    def ticks_within(self, start, end):
        return sum(1 for t in self.ticks if start < t < end)


def run_threads(target, count):
    """target(i) in count threads started together; [(start, end, result|exception)]."""
    results = [None] * count
    barrier = threading.Barrier(count)

    def body(i):
        barrier.wait(timeout=30)
        start = time.monotonic()
        try:
            outcome = target(i)
        except Exception as e:  # reported to the test, which checks each
            outcome = e
        results[i] = (start, time.monotonic(), outcome)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
        assert not t.is_alive(), "an engine call did not return"
    return results


def overlap(results):
    """The span during which every call was running."""
    return max(r[0] for r in results), min(r[1] for r in results)


def setup_blocks(make_decoder, peer, **decoder_options):
    decoder = make_decoder(**decoder_options)
    assert decoder.link_clusters([cluster_to(peer)])[0] == S.LLM_SUCCESS
    peer.request("register_blocks", num_tensors=TENSORS, shape=[BLOCKS, BLOCK_BYTES],
                 dtype="DT_UINT8", key=[peer.cluster_id, 0], seed=8)
    arrays = [np.zeros(BLOCKS * BLOCK_BYTES, np.uint8) for _ in range(TENSORS)]
    desc = CacheDesc(TENSORS, [BLOCKS, BLOCK_BYTES], DataType.DT_UINT8)
    cache = decoder.cache_manager.register_blocks_cache(desc, [a.ctypes.data for a in arrays])
    return decoder, cache, arrays


def test_threads_pull_at_once_and_every_byte_arrives(make_decoder, peer):
    decoder, cache, arrays = setup_blocks(make_decoder, peer)
    threads, rounds, per_thread = 4, 20, BLOCKS // 4
    key = BlocksCacheKey(peer.cluster_id)

    def puller(i):
        # Thread i owns destination blocks [i*16, i*16+16) and pulls the
        # source blocks in reverse order into them, round after round.
        dst = list(range(i * per_thread, (i + 1) * per_thread))
        src = [BLOCKS - 1 - b for b in dst]
        for _ in range(rounds):
            decoder.cache_manager.pull_blocks(key, cache, src, dst)
        return rounds

    with Ticker() as ticker:
        results = run_threads(puller, threads)
    assert [r[2] for r in results] == [rounds] * threads, [r[2] for r in results]
    for t, array in enumerate(arrays):
        want = pattern(BLOCKS * BLOCK_BYTES, 8, t).reshape(BLOCKS, BLOCK_BYTES)[::-1]
        assert np.array_equal(array.reshape(BLOCKS, BLOCK_BYTES), want)
    assert decoder.transfer_stats()["transfers"] == threads * rounds
    assert ticker.ticks, "the ticker thread never ran"


def test_gil_is_released_while_pulls_wait_for_a_stopped_peer(make_decoder, peer):
    decoder, cache, arrays = setup_blocks(make_decoder, peer, sync_kv_timeout=1500,
                                          transport="tcp")
    key = BlocksCacheKey(peer.cluster_id)

    def puller(i):
        decoder.cache_manager.pull_blocks(key, cache, [i], [i])

    peer.pause()  # SIGSTOP: no request is answered until the timeout
    try:
        with Ticker() as ticker:
            results = run_threads(puller, 3)
    finally:
        peer.resume()
    for _, _, outcome in results:
        assert isinstance(outcome, LLMException), outcome
    # The first to time out closes the link; the others then see it gone.
    statuses = sorted(r[2].status_code for r in results)
    assert S.LLM_WAIT_PROCESS_TIMEOUT in statuses, statuses
    assert set(statuses) <= {S.LLM_WAIT_PROCESS_TIMEOUT, S.LLMLINK_NETWORK_ERROR,
                             S.LLM_NOT_YET_LINK}, statuses
    start, end = overlap(results)
    assert end > start, "the pulls did not wait at the same time"
    # With the GIL held by any of the three, the ticker could not run in
    # the span where all three were inside the C call.
    assert ticker.ticks_within(start, end) >= 5, (ticker.ticks_within(start, end), end - start)


def test_gil_is_released_while_links_wait_for_a_silent_server(make_decoder):
    # A listener that completes TCP handshakes (the kernel does) but never
    # answers the llmlink handshake: link_clusters waits out its timeout.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        decoders = [make_decoder(cluster_id=200 + i) for i in range(3)]

        def linker(i):
            return decoders[i].link_clusters([cluster_to(port, 7)], 1000)

        with Ticker() as ticker:
            results = run_threads(linker, 3)
    for _, _, outcome in results:
        assert not isinstance(outcome, Exception), outcome
        ret, rets = outcome
        assert ret == S.LLM_LINK_FAILED and rets[0] in (S.LLM_TIMEOUT, S.LLM_LINK_FAILED), outcome
    start, end = overlap(results)
    assert end > start
    assert ticker.ticks_within(start, end) >= 5, (ticker.ticks_within(start, end), end - start)


def test_finalize_waits_for_calls_running_in_other_threads(make_decoder):
    # The ABI leaves it to the caller that finalize never races another
    # call on the engine: finalize returns after the running link does.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        decoder = make_decoder(cluster_id=300)
        started, outcome = threading.Event(), {}

        def linker():
            started.set()
            outcome["link"] = decoder.link_clusters([cluster_to(silent.getsockname()[1], 7)],
                                                    1000)
            outcome["end"] = time.monotonic()

        thread = threading.Thread(target=linker)
        thread.start()
        assert started.wait(10)
        # Until the call is counted as running (then it is in, or just
        # entering, the C call); the link itself waits 1 s there.
        deadline = time.monotonic() + 10
        while decoder._handle._calls == 0 and time.monotonic() < deadline:
            time.sleep(0.001)
        decoder.finalize()
        finalized = time.monotonic()
        thread.join(timeout=30)
    assert outcome["link"][0] == S.LLM_LINK_FAILED, outcome
    assert outcome["end"] <= finalized
    try:
        decoder.check_link_status(7)
        raise AssertionError("check_link_status worked after finalize")
    except RuntimeError:
        pass


def test_each_thread_gets_the_message_of_its_own_failure(make_decoder):
    # llmlink_last_error() is per thread and read by the wrapper right
    # after the call: failures racing in several threads never swap messages.
    decoder = make_decoder()

    def checker(i):
        wrong = 0
        for _ in range(300):
            try:
                decoder.check_link_status(5000 + i)
            except LLMException as e:
                wrong += f"cluster {5000 + i}" not in str(e)
        return wrong

    results = run_threads(checker, 4)
    assert [r[2] for r in results] == [0, 0, 0, 0]
