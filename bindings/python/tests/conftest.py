"""Fixtures: prefill peers in their own processes, and decoder engines here."""
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest

from llmlink import LLMClusterInfo, LLMConfig, LLMDataDist, LLMRole, LLMStatusCode

HERE = os.path.dirname(os.path.abspath(__file__))
PEER_SCRIPT = os.path.join(HERE, "peers", "prompt_engine.py")
REPLY_TIMEOUT_S = 30.0


class PeerProcess:
    """tests/peers/prompt_engine.py in a child process, driven by JSON lines."""

    def __init__(self, cluster_id, listen="127.0.0.1:0", opts=()):
        cmd = [sys.executable, PEER_SCRIPT, "--cluster-id", str(cluster_id), "--listen", listen]
        for opt in opts:
            cmd += ["--opt", opt]
        self.cluster_id = cluster_id
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, bufsize=1)
        self._lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        ready = self._next_line()
        if not ready.get("ready"):
            self.stop()
            raise RuntimeError(f"peer did not start: {ready}")
        self.port = ready["port"]

    def _read(self):
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _next_line(self, timeout=REPLY_TIMEOUT_S):
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"peer {self.cluster_id}: no reply within {timeout} s") from None
        if line is None:
            raise RuntimeError(f"peer {self.cluster_id} exited (rc {self.proc.wait(5)})")
        return json.loads(line)

    def request(self, op, **fields):
        self.proc.stdin.write(json.dumps({"op": op, **fields}) + "\n")
        self.proc.stdin.flush()
        reply = self._next_line()
        if not reply.get("ok"):
            raise AssertionError(f"peer {op} failed: {reply}")
        return reply

    def pause(self):
        """SIGSTOP, and wait until every thread of the peer is stopped: the
        signal is asynchronous, and a thread still running could answer."""
        self.proc.send_signal(signal.SIGSTOP)
        deadline = time.monotonic() + 10
        while not self._all_threads_stopped():
            if time.monotonic() > deadline:
                raise TimeoutError(f"peer {self.cluster_id} did not stop")
            time.sleep(0.005)

    def _all_threads_stopped(self):
        task_dir = f"/proc/{self.proc.pid}/task"
        for tid in os.listdir(task_dir):
            try:
                with open(f"{task_dir}/{tid}/stat") as f:
                    state = f.read().rsplit(")", 1)[1].split()[0]
            except FileNotFoundError:
                continue
            if state not in ("T", "t"):
                return False
        return True

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)

    def stop(self):
        if self.proc.poll() is None:
            self.resume()
            try:
                self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(timeout=10)
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass


@pytest.fixture
def start_peer():
    peers = []

    def start(cluster_id=1, **kw):
        peer = PeerProcess(cluster_id, **kw)
        peers.append(peer)
        return peer

    yield start
    for peer in peers:
        peer.stop()


@pytest.fixture
def peer(start_peer):
    return start_peer(1)


def cluster_to(peer_or_port, cluster_id=None):
    port = getattr(peer_or_port, "port", peer_or_port)
    info = LLMClusterInfo()
    info.remote_cluster_id = cluster_id if cluster_id is not None else peer_or_port.cluster_id
    info.append_local_ip_info("127.0.0.1", port)
    info.append_remote_ip_info("127.0.0.1", port)
    return info


@pytest.fixture
def make_decoder():
    engines = []

    def make(cluster_id=100, sync_kv_timeout=None, transport=None, options=None):
        config = LLMConfig()
        if sync_kv_timeout is not None:
            config.sync_kv_timeout = sync_kv_timeout
        ge = dict(options or {})
        if transport is not None:
            ge["llmlink.Transport"] = transport
        if ge:
            config.ge_options = ge
        engine = LLMDataDist(LLMRole.DECODER, cluster_id)
        engine.init(config.generate_options())
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.finalize()


@pytest.fixture
def linked(make_decoder, peer):
    """(decoder, peer) with a live link from the decoder to the peer."""
    decoder = make_decoder()
    ret, rets = decoder.link_clusters([cluster_to(peer)], 5000)
    assert ret == LLMStatusCode.LLM_SUCCESS, rets
    return decoder, peer
