#!/usr/bin/env python3
"""bench/collect.py - the records bench/plot.py draws, measured on this host
with the `llmlink` command (what `make bench` runs after bench/run.sh).

    python3 bench/collect.py --llmlink build/bin/llmlink -o OUT.jsonl
           [--sizes 16K,64K,256K,1M] [--transports tcp,shm] [--total 128M]
           [--clusters 1,2,4,8,16] [--ref NAME=GBPS[@BLOCK]]... [--quick]

1. `llmlink serve` (one PROMPT engine with a cache per block size) and
   `llmlink bench --json` against it: one "llmlink bench" record per point.
2. 16 `llmlink serve` processes (cluster ids 1..16) and `llmlink link` to the
   first K of them in one call, for each K of --clusters: one "link" record
   each, the seconds the command reports for its llmlink_link_clusters call
   (the best of 3 runs).
3. References: iperf3 (one TCP stream on 127.0.0.1, 3 s) when installed, and
   every --ref given (a figure measured elsewhere: ucx_perftest, perftest):
   "reference" records.
Every child is bounded in time and stopped at the end (SIGTERM, then SIGKILL).
Exit 0, 1 when a step failed (what ran is still written), 2 for usage.
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

STEP_TIMEOUT_S = 300


def parse_size(text):
    m = re.fullmatch(r"(\d+)([KMG]?)", text.strip().upper())
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}")
    return int(m.group(1)) << {"": 0, "K": 10, "M": 20, "G": 30}[m.group(2)]


class Server:
    """`llmlink serve`, waited for until it prints ready."""

    def __init__(self, llmlink, cluster_id, sizes, cache_bytes):
        cmd = [llmlink, "serve", "-c", str(cluster_id), "-b", ",".join(sizes),
               "-s", str(cache_bytes)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        self.port = None
        deadline = time.monotonic() + 30
        for line in self.proc.stdout:
            if line.startswith("port="):
                self.port = int(line.split("=", 1)[1])
            if line.strip() == "ready" or time.monotonic() > deadline:
                break
        if self.port is None:
            self.stop()
            raise RuntimeError(f"llmlink serve -c {cluster_id} did not start")
        self.addr = f"{cluster_id}@127.0.0.1:{self.port}"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        self.proc.stdout.close()


def bench_records(args):
    server = Server(args.llmlink, 1, args.sizes, args.cache_bytes)
    try:
        out = subprocess.run(
            [args.llmlink, "bench", "--json", "-b", ",".join(args.sizes), "-T", args.transports,
             "-d", "both", "-n", args.total, "-s", str(args.cache_bytes), server.addr],
            capture_output=True, text=True, timeout=STEP_TIMEOUT_S)
    finally:
        server.stop()
    records = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    if out.returncode != 0:
        print(f"collect.py: llmlink bench exited {out.returncode}: {out.stderr.strip()}",
              file=sys.stderr)
    return records, out.returncode == 0 and bool(records)


def link_records(args):
    servers = []
    try:
        for cid in range(1, max(args.clusters) + 1):
            servers.append(Server(args.llmlink, cid, ["4K"], 1 << 20))
        records, ok = [], True
        for k in args.clusters:
            best = None
            for _ in range(3):
                out = subprocess.run([args.llmlink, "link", "-c", "1000",
                                      *[s.addr for s in servers[:k]]],
                                     capture_output=True, text=True, timeout=60)
                m = re.search(r"(\d+) linked, (\d+) failed in ([0-9.]+) s", out.stdout)
                if out.returncode != 0 or not m:
                    print(f"collect.py: llmlink link ({k} clusters) failed: "
                          f"{out.stderr.strip() or out.stdout.strip()}", file=sys.stderr)
                    ok = False
                    break
                secs = float(m.group(3))
                best = secs if best is None else min(best, secs)
            if best is not None:
                records.append({"schema": 1, "tool": "link", "clusters": k, "seconds": best})
        return records, ok
    finally:
        for s in servers:
            s.stop()


def iperf3_record(seconds):
    if not shutil.which("iperf3"):
        return None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(["iperf3", "-s", "-1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(50):  # until it listens (never connecting: -1 takes one test)
            if f":{port:04X} " in open("/proc/net/tcp").read():
                break
            time.sleep(0.1)
        out = subprocess.run(["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", str(seconds),
                              "-J"], capture_output=True, text=True, timeout=seconds + 30)
        bps = json.loads(out.stdout)["end"]["sum_received"]["bits_per_second"]
        return {"schema": 1, "tool": "reference", "name": "iperf3",
                "note": "1 TCP stream, 127.0.0.1", "gbps": bps / 8 / 1e9}
    except (ValueError, KeyError, subprocess.TimeoutExpired) as e:
        print(f"collect.py: iperf3 failed: {e}", file=sys.stderr)
        return None
    finally:
        if server.poll() is None:
            server.kill()
        server.wait(timeout=15)


def ref_record(text):
    m = re.fullmatch(r"([^=]+)=([0-9.]+)(?:@(\w+))?", text)
    if not m:
        raise argparse.ArgumentTypeError(f"--ref wants NAME=GBPS[@BLOCK], not {text!r}")
    rec = {"schema": 1, "tool": "reference", "name": m.group(1), "gbps": float(m.group(2))}
    if m.group(3):
        rec["block_size"] = parse_size(m.group(3))
    return rec


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--llmlink", required=True, help="the llmlink command")
    ap.add_argument("-o", "--out", required=True)
    ap.add_argument("--sizes", default="16K,64K,256K,1M")
    ap.add_argument("--transports", default="tcp,shm")
    ap.add_argument("--total", default="128M")
    ap.add_argument("--clusters", default="1,2,4,8,16")
    ap.add_argument("--ref", action="append", type=ref_record, default=[])
    ap.add_argument("--quick", action="store_true", help="a smoke run: 16M per point, 1..4")
    args = ap.parse_args(argv)
    args.sizes = args.sizes.split(",")
    for s in args.sizes:
        parse_size(s)
    args.clusters = sorted({int(k) for k in args.clusters.split(",")})
    if not args.clusters or args.clusters[0] < 1 or args.clusters[-1] > 16:
        ap.error("--clusters: 1..16 (one llmlink_link_clusters call)")
    if args.quick:
        args.total, args.clusters = "16M", [c for c in args.clusters if c <= 4] or [1]
    args.cache_bytes = 16 << 20

    records, ok = [], True
    for step in (bench_records, link_records):
        try:
            got, step_ok = step(args)
        except (RuntimeError, OSError, subprocess.TimeoutExpired, ValueError) as e:
            print(f"collect.py: {step.__name__}: {e}", file=sys.stderr)
            got, step_ok = [], False
        records += got
        ok = ok and step_ok
    ref = iperf3_record(3)
    records += ([ref] if ref else []) + args.ref
    with open(args.out, "w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, sort_keys=True) + "\n")
    print(f"collect.py: {len(records)} records in {args.out}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
