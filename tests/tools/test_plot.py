#!/usr/bin/env python3
"""bench/plot.py on a recorded JSON (tests/tools/bench-sample.jsonl: a real
`llmlink bench --json` and `bench/collect.py` run on loopback, with a failed
point, two reference records and a record of an unknown tool added): each
PNG exists, is a PNG of the stated pixel size and not blank; bad input
exits 2 naming the file and line; nothing to plot exits 1.

Runs with unittest (make test-plot, in `make test`), matplotlib from the
venv `make plot-venv` makes.
"""
import io
import os
import struct
import subprocess
import sys
import tempfile
import unittest
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PLOT = os.path.join(ROOT, "bench", "plot.py")
SAMPLE = os.path.join(HERE, "bench-sample.jsonl")
sys.dont_write_bytecode = True  # no __pycache__ in bench/
sys.path.insert(0, os.path.join(ROOT, "bench"))
import plot  # noqa: E402


def png_info(path):
    """(width, height, distinct bytes in the decoded image data)."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path}: not a PNG"
    pos, width, height, idat = 8, None, None, io.BytesIO()
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat.write(body)
        pos += 12 + length
    return width, height, len(set(zlib.decompress(idat.getvalue())))


def run_plot(*args):
    return subprocess.run([sys.executable, PLOT, *args], capture_output=True, text=True,
                          timeout=120)


class PlotTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.out = self.tmp.name

    def tearDown(self):
        self.tmp.cleanup()

    def test_sample_gives_both_figures_at_their_size(self):
        r = run_plot("-o", self.out, SAMPLE)
        self.assertEqual(r.returncode, 0, r.stderr)
        for name in ("bandwidth.png", "link_time.png"):
            path = os.path.join(self.out, name)
            self.assertIn(path, r.stdout.split())
            self.assertGreater(os.path.getsize(path), 1000, name)
            width, height, distinct = png_info(path)
            self.assertEqual((width, height), (plot.FIG_W, plot.FIG_H), name)
            self.assertGreater(distinct, 8, f"{name} looks blank")
        # the failed point is left out, and said so
        self.assertIn("left out a failed point: pull rdma 65536", r.stderr)

    def test_series_and_references_from_the_sample(self):
        records = plot.read_records([SAMPLE])
        series = plot.bench_series(records)
        self.assertEqual(sorted(series), [("pull", "shm"), ("pull", "tcp"),
                                          ("push", "shm"), ("push", "tcp")])
        for pts in series.values():
            self.assertEqual([s for s, _ in pts], [16384, 65536, 262144, 1048576])
            self.assertTrue(all(g > 0 for _, g in pts))
        self.assertEqual([r["name"] for r in plot.references(records)],
                         ["iperf3", "ucx_perftest ucp_get"])
        self.assertEqual(plot.run_date(records), "2026-12-04")

    def test_link_records_only_gives_the_link_figure(self):
        src = os.path.join(self.out, "links.jsonl")
        with open(src, "w") as f:
            f.write('{"tool": "link", "clusters": 1, "seconds": 0.001}\n'
                    '{"tool": "link", "clusters": 16, "seconds": 0.004}\n')
        r = run_plot("-o", self.out, src)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertFalse(os.path.exists(os.path.join(self.out, "bandwidth.png")))
        self.assertEqual(png_info(os.path.join(self.out, "link_time.png"))[:2],
                         (plot.FIG_W, plot.FIG_H))

    def test_bad_json_exits_2_naming_file_and_line(self):
        src = os.path.join(self.out, "bad.jsonl")
        with open(src, "w") as f:
            f.write('{"tool": "link", "clusters": 1, "seconds": 0.001}\n\n{"tool": \n')
        r = run_plot("-o", self.out, src)
        self.assertEqual(r.returncode, 2)
        self.assertIn(f"{src}:3: not JSON", r.stderr)

    def test_a_record_without_its_number_exits_2(self):
        src = os.path.join(self.out, "nonum.jsonl")
        with open(src, "w") as f:
            f.write('{"tool": "reference", "name": "iperf3", "gbps": "fast"}\n')
        r = run_plot("-o", self.out, src)
        self.assertEqual(r.returncode, 2)
        self.assertIn("without a number 'gbps'", r.stderr)

    def test_nothing_to_plot_exits_1(self):
        src = os.path.join(self.out, "none.jsonl")
        with open(src, "w") as f:
            f.write('{"tool": "something else"}\n')
        r = run_plot("-o", self.out, src)
        self.assertEqual(r.returncode, 1)
        self.assertEqual(os.listdir(self.out), ["none.jsonl"])


if __name__ == "__main__":
    unittest.main(verbosity=2)
