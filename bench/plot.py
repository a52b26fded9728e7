#!/usr/bin/env python3
"""bench/plot.py - the benchmark's JSON records as PNG figures (matplotlib).

    python3 bench/plot.py [-o DIR] FILE.jsonl...

Reads JSON Lines (one object per line; blank lines and lines that are not
JSON objects are an error naming the file and line) and writes into DIR
(default .):

  bandwidth.png   GB/s against block size, one line per direction and
                  transport (what carried the calls), from the records of
                  `llmlink bench --json` (docs/cli.md, schema 1); the
                  reference records drawn in the same figure: a horizontal
                  line, or a marker at their block size when they have one.
  link_time.png   seconds to link against the number of clusters linked in
                  one call, from the link records (when there are any).

Record kinds, told apart by "tool":
  "llmlink bench"  a transfer point (docs/cli.md); points with ok false
                   are left out (their error is printed on stderr)
  "reference"      {"tool": "reference", "name": "iperf3", "gbps": 4.1,
                    "block_size": 262144 (optional), "note": "..."}: what
                   another tool moved on the same machine (iperf3, ucx,
                   perftest)
  "link"           {"tool": "link", "clusters": 4, "seconds": 0.0031}:
                   one llmlink_link_clusters call of that many clusters
Other tools' records are ignored (a later schema may add kinds).

Every figure is FIG_W x FIG_H pixels (FIG_SIZE inches at DPI). Exit 0, 1
when there is nothing to plot, 2 for a usage or input error.
"""
import argparse
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")  # files only: no display on a build machine
import matplotlib.pyplot as plt  # noqa: E402

FIG_SIZE = (8.0, 5.0)
DPI = 100
FIG_W, FIG_H = int(FIG_SIZE[0] * DPI), int(FIG_SIZE[1] * DPI)


class InputError(Exception):
    pass


def read_records(paths):
    records = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except ValueError as e:
                    raise InputError(f"{path}:{n}: not JSON ({e})") from None
                if not isinstance(rec, dict):
                    raise InputError(f"{path}:{n}: not a JSON object")
                records.append(rec)
    return records


def _num(rec, key, kind):
    v = rec.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise InputError(f"{kind} record without a number {key!r}: {rec}")
    return v


def size_label(n):
    for unit, shift in (("M", 20), ("K", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift}{unit}"
    return str(n)


def bench_series(records):
    """{(direction, transport_used): sorted [(block_size, gbps)]}."""
    series = {}
    for rec in records:
        if rec.get("tool") != "llmlink bench":
            continue
        if not rec.get("ok"):
            print(f"plot.py: left out a failed point: {rec.get('direction')} "
                  f"{rec.get('transport')} {rec.get('block_size')}: {rec.get('error')}",
                  file=sys.stderr)
            continue
        key = (rec.get("direction", "?"), rec.get("transport_used") or rec.get("transport", "?"))
        series.setdefault(key, []).append((_num(rec, "block_size", "bench"),
                                           _num(rec, "gbps", "bench")))
    return {k: sorted(v) for k, v in sorted(series.items())}


def references(records):
    return [rec for rec in records if rec.get("tool") == "reference"]


def bandwidth_figure(series, refs, date, out):
    fig, ax = plt.subplots(figsize=FIG_SIZE, dpi=DPI)
    sizes = sorted({s for pts in series.values() for s, _ in pts})
    # one color per transport, solid pull and dashed push
    transports = sorted({t for _, t in series})
    for (direction, transport), pts in series.items():
        ax.plot([s for s, _ in pts], [g for _, g in pts], marker="o",
                color=f"C{transports.index(transport)}",
                linestyle="-" if direction == "pull" else "--",
                label=f"llmlink {direction} {transport}")
    for i, ref in enumerate(refs):
        gbps = _num(ref, "gbps", "reference")
        name = str(ref.get("name", "reference"))
        if ref.get("note"):
            name += f" ({ref['note']})"
        color = f"C{(len(transports) + i) % 10}"
        if isinstance(ref.get("block_size"), (int, float)) and ref["block_size"] > 0:
            ax.plot([ref["block_size"]], [gbps], marker="*", markersize=14, linestyle="none",
                    color=color, label=name)
        else:
            ax.axhline(gbps, color=color, linestyle=":", linewidth=1.5, label=name)
    ax.set_xscale("log", base=2)
    if sizes:
        ax.set_xticks(sizes)
        ax.set_xticklabels([size_label(s) for s in sizes])
    ax.set_xlabel("block size (bytes per tensor)")
    ax.set_ylabel("GB/s (decimal)")
    ax.set_ylim(bottom=0)
    ax.set_title("llmlink transfer bandwidth" + (f", {date}" if date else ""))
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize="small", loc="best")
    save(fig, out)


def link_figure(records, date, out):
    pts = sorted((_num(r, "clusters", "link"), _num(r, "seconds", "link"))
                 for r in records if r.get("tool") == "link")
    if not pts:
        return False
    fig, ax = plt.subplots(figsize=FIG_SIZE, dpi=DPI)
    ax.plot([c for c, _ in pts], [s * 1e3 for _, s in pts], marker="o")
    ax.set_xlabel("clusters linked in one call")
    ax.set_ylabel("link time (ms)")
    ax.set_ylim(bottom=0)
    ax.set_title("llmlink link time" + (f", {date}" if date else ""))
    ax.grid(True, alpha=0.3)
    save(fig, out)
    return True


def save(fig, out):
    # no bbox "tight": the figure keeps its stated pixel size
    fig.savefig(out, dpi=DPI)
    plt.close(fig)


def run_date(records):
    dates = sorted(str(r["date"]) for r in records if r.get("date"))
    return dates[0][:10] if dates else ""


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("inputs", nargs="+", metavar="FILE.jsonl")
    ap.add_argument("-o", "--out-dir", default=".")
    args = ap.parse_args(argv)
    try:
        records = read_records(args.inputs)
        os.makedirs(args.out_dir, exist_ok=True)
        date = run_date(records)
        series, refs = bench_series(records), references(records)
        wrote = []
        if series or refs:
            path = os.path.join(args.out_dir, "bandwidth.png")
            bandwidth_figure(series, refs, date, path)
            wrote.append(path)
        path = os.path.join(args.out_dir, "link_time.png")
        if link_figure(records, date, path):
            wrote.append(path)
    except (OSError, InputError) as e:
        print(f"plot.py: {e}", file=sys.stderr)
        return 2
    if not wrote:
        print("plot.py: no bench, reference or link records in the input", file=sys.stderr)
        return 1
    for path in wrote:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
