#!/usr/bin/env python3
"""scrape_metrics.py URL [NAME{LABELS}=VALUE ...] - scrape an `llmlink serve
--metrics` endpoint with a real HTTP client (urllib) and parse it with
prometheus_client's own text parser; check the naming conventions of every
family and the expected samples given as arguments. Used by
tests/integration/test_cli.c (run from the venv of `make cli-venv`).

Exit 0 when all holds; 1 with the reasons on stderr otherwise.
"""
import re
import sys
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

NAME = re.compile(r"^llmlink_[a-z][a-z0-9_]*$")
LABEL_VALUE = re.compile(r"^[A-Za-z0-9_.:\[\]+-]*$")


def main():
    url = sys.argv[1]
    with urllib.request.urlopen(url, timeout=10) as r:
        if r.status != 200:
            sys.exit(f"scrape: {url}: HTTP {r.status}")
        ctype = r.headers.get("Content-Type", "")
        text = r.read().decode("utf-8")
    errors = []
    if not ctype.startswith("text/plain") or "version=0.0.4" not in ctype:
        errors.append(f"Content-Type {ctype!r} is not the text format 0.0.4")
    samples = {}
    families = list(text_string_to_metric_families(text))
    if len(families) < 10:
        errors.append(f"only {len(families)} metric families")
    for fam in families:
        if not NAME.match(fam.name):
            errors.append(f"{fam.name}: not llmlink_snake_case")
        if fam.type == "counter":
            # the parser strips _total from counter family names; every
            # sample of a counter must carry it
            for s in fam.samples:
                if not s.name.endswith("_total") and not s.name.endswith("_created"):
                    errors.append(f"counter sample {s.name} does not end in _total")
        if fam.type == "histogram":
            if not fam.name.endswith("_seconds"):
                errors.append(f"histogram {fam.name} is not in _seconds")
            by = {}
            for s in fam.samples:
                if s.name.endswith("_bucket"):
                    key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
                    by.setdefault(key, []).append((float(s.labels["le"]), s.value))
            for key, buckets in by.items():
                values = [v for _, v in sorted(buckets)]
                if values != sorted(values):
                    errors.append(f"{fam.name}{dict(key)}: buckets not cumulative")
                if sorted(buckets)[-1][0] != float("inf"):
                    errors.append(f"{fam.name}{dict(key)}: no +Inf bucket")
        if "bytes" in fam.name and not fam.name.endswith("_bytes"):
            errors.append(f"{fam.name}: a byte count must end in _bytes(_total)")
        if fam.type not in ("counter", "gauge", "histogram"):
            errors.append(f"{fam.name}: type {fam.type}")
        for s in fam.samples:
            for k, v in s.labels.items():
                if k not in ("peer",) and not LABEL_VALUE.match(v):
                    errors.append(f"{s.name}: label {k}={v!r}")
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            samples[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    for want in sys.argv[2:]:
        key, _, value = want.rpartition("=")
        got = samples.get(key)
        if got is None:
            errors.append(f"no sample {key}")
        elif got != float(value):
            errors.append(f"{key} = {got}, expected {value}")
    if errors:
        for e in errors:
            print(f"scrape: {e}", file=sys.stderr)
        sys.exit(1)
    print(f"scrape: {len(families)} families, {len(samples)} samples, conventions hold")


if __name__ == "__main__":
    main()
