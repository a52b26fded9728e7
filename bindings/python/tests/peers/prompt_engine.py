"""A PROMPT engine in its own process, written with the binding itself,
driven by JSON lines on stdin (one JSON reply line each) - the far end of
the two-process tests.

    prompt_engine.py --cluster-id N --listen IP:PORT [--opt KEY=VALUE]...

First line out: {"ready": true, "port": <listen port>} (or {"ready": false,
"error": ...}). Requests: {"op": NAME, ...}; replies {"ok": true, ...} or
{"ok": false, "error": TEXT, "status": LLMStatusCode name}.

  register_blocks  num_tensors shape dtype key=[cluster, model]|null seed [key_arg]
                   [remote_accessible] [access=READ|WRITE|NONE|READ_WRITE]
  register_cache   num_tensors shape dtype keys=[[cluster, req, model], ...] seed
                   [remote_accessible]
                   (remote_accessible: true by default, "default" for the
                   binding's own default; access: llmlink's
                   llmlink_register_blocks_cache_opts with that access;
                   seed null: zeroed memory)
  allocate_cache   num_tensors shape dtype keys=[...] seed
                   -> cache_id   (memory filled with kvpattern.pattern(seed))
  digest  cache_id           -> digests: sha256 of each tensor's bytes
  read    cache_id tensor offset size -> hex: those bytes of the tensor
  notify  cluster data=HEX [timeout_ms] -> sends a notification to cluster
  get_notifies [max_count]   -> notifies: [[cluster_id, HEX], ...]
  stats                      -> links: link_stats(), xfer: transfer_stats()
  unlink  clusters=[id...] force -> ret, rets (status names)
  quit                       -> finalizes, replies, exits 0
EOF stdin is quit.
A key given as a JSON object instead of a list is built with keywords
(CacheKey(**key)); key_arg names the keyword register_blocks passes the
blocks key under (blocks_cache_key or blocks_key) instead of by position.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

from kvpattern import digest, pattern  # noqa: E402
from llmlink import capi  # noqa: E402
from llmlink import (BlocksCacheKey, Cache, CacheDesc, CacheKey, DataType, LLMClusterInfo,  # noqa: E402
                     LLMConfig, LLMDataDist, LLMException, LLMRole)


class Peer:
    def __init__(self, engine):
        self.engine = engine
        self.cm = engine.cache_manager
        self.caches = {}  # cache_id -> (Cache, numpy arrays it lives in, or None)

    def _desc(self, req):
        return CacheDesc(req["num_tensors"], req["shape"], DataType[req["dtype"]])

    def _register(self, req, blocks):
        desc = self._desc(req)
        seed = req.get("seed", 0)
        arrays = [np.zeros(desc.size, dtype=np.uint8) if seed is None else pattern(desc.size, seed, t)
                  for t in range(desc.num_tensors)]
        addrs = [a.ctypes.data for a in arrays]
        # The decoder pulls from and pushes into these: remotely accessible,
        # as llm_datadist needs for host memory ("default": the binding's
        # default, not accessible for HOST).
        ra = req.get("remote_accessible", True)
        ra = {} if ra == "default" else {"remote_accessible": ra}
        if blocks and req.get("access") is not None:
            # llmlink's own access values (read-only, write-only): the C call
            key = _key(BlocksCacheKey, req["key"])
            cache_id = self.cm._call(capi.llmlink_register_blocks_cache_opts, desc._c(), addrs,
                                     key._c(), getattr(capi, "LLMLINK_ACCESS_" + req["access"]))
            self.caches[cache_id] = (Cache(cache_id, desc, addrs), arrays)
            return {"cache_id": cache_id}
        if blocks:
            key = req.get("key")
            key = _key(BlocksCacheKey, key) if key else None
            if req.get("key_arg"):
                cache = self.cm.register_blocks_cache(desc, addrs, **{req["key_arg"]: key}, **ra)
            else:
                cache = self.cm.register_blocks_cache(desc, addrs, key, **ra)
        else:
            keys = [_key(CacheKey, k) for k in req.get("keys", [])]
            cache = self.cm.register_cache(desc, addrs, keys, **ra)
        self.caches[cache.cache_id] = (cache, arrays)
        return {"cache_id": cache.cache_id}

    def op_register_blocks(self, req):
        return self._register(req, blocks=True)

    def op_register_cache(self, req):
        return self._register(req, blocks=False)

    def op_allocate_cache(self, req):
        desc = self._desc(req)
        cache = self.cm.allocate_cache(desc, [_key(CacheKey, k) for k in req.get("keys", [])])
        for t in range(desc.num_tensors):
            np.frombuffer(cache.tensor_buffer(t), dtype=np.uint8)[:] = \
                pattern(desc.size, req.get("seed", 0), t)
        self.caches[cache.cache_id] = (cache, None)
        return {"cache_id": cache.cache_id}

    def op_digest(self, req):
        cache, _ = self.caches[req["cache_id"]]
        return {"digests": [digest(cache.tensor_buffer(t))
                            for t in range(cache.cache_desc.num_tensors)]}

    def op_read(self, req):
        cache, _ = self.caches[req["cache_id"]]
        view = cache.tensor_buffer(req["tensor"])
        return {"hex": bytes(view[req["offset"]:req["offset"] + req["size"]]).hex()}

    def op_notify(self, req):
        self.engine.notify(req["cluster"], bytes.fromhex(req["data"]), req.get("timeout_ms", 1000))
        return {}

    def op_get_notifies(self, req):
        got = self.engine.get_notifies(req.get("max_count"))
        return {"notifies": [[n.cluster_id, n.data.hex()] for n in got]}

    def op_stats(self, req):
        return {"links": self.engine.link_stats(), "xfer": self.engine.transfer_stats()}

    def op_unlink(self, req):
        clusters = []
        for cid in req["clusters"]:
            c = LLMClusterInfo()
            c.remote_cluster_id = cid
            clusters.append(c)
        ret, rets = self.engine.unlink_clusters(clusters, req.get("timeout", 3000),
                                                req.get("force", False))
        return {"ret": ret.name, "rets": [r.name for r in rets]}


def _key(key_type, fields):
    return key_type(**fields) if isinstance(fields, dict) else key_type(*fields)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cluster-id", type=int, required=True)
    ap.add_argument("--listen", required=True)
    ap.add_argument("--opt", action="append", default=[])
    args = ap.parse_args()

    config = LLMConfig()
    config.listen_ip_info = args.listen
    config.ge_options = dict(o.split("=", 1) for o in args.opt)
    engine = LLMDataDist(LLMRole.PROMPT, args.cluster_id)
    try:
        engine.init(config.generate_options())
    except LLMException as e:
        print(json.dumps({"ready": False, "error": str(e)}), flush=True)
        return 1
    print(json.dumps({"ready": True, "port": engine.get_listen_port(0)}), flush=True)

    peer = Peer(engine)
    for line in sys.stdin:
        req = json.loads(line)
        if req["op"] == "quit":
            break
        try:
            reply = {"ok": True, **getattr(peer, "op_" + req["op"])(req)}
        except LLMException as e:
            reply = {"ok": False, "error": str(e), "status": e.status_code.name}
        except Exception as e:  # a bad request: say so, keep serving
            reply = {"ok": False, "error": f"{type(e).__name__}: {e}", "status": None}
        print(json.dumps(reply), flush=True)
    engine.finalize()
    print(json.dumps({"ok": True, "bye": True}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
