"""LLMDataDist.metrics() / links(): llmlink_get_metrics and llmlink_get_links
with every array keyed by its label text (llmlink_metrics_label), the text
docs/metrics.md and the Prometheus renderings use.

An enum value this version of the package does not know is picked up from
the library: labels are read "while the value has a name", as the C
renderer does, so a newer library's values appear without a change here.
"""
from . import capi
from ._types import rdma_protection_of

DIR = capi.LLMLINK_LABEL_DIR
TRANSPORT = capi.LLMLINK_LABEL_TRANSPORT
RESULT = capi.LLMLINK_LABEL_RESULT
LINK_DIR = capi.LLMLINK_LABEL_LINK_DIR
CLOSE_REASON = capi.LLMLINK_LABEL_CLOSE_REASON
REFUSE_REASON = capi.LLMLINK_LABEL_REFUSE_REASON


def labels(kind):
    """The label texts of an enum, in value order: 0.. while it has a name."""
    out = []
    while True:
        name = capi.llmlink_metrics_label(kind, len(out))
        if name is None:
            return out
        out.append(name)


def label_of(kind, value):
    """The label text of value, or str(value) for one the library does not name."""
    name = capi.llmlink_metrics_label(kind, value)
    return name if name is not None else str(value)


def bucket_bounds():
    """The upper bounds (seconds) of the latency buckets, in order."""
    return [capi.llmlink_metrics_bucket_bound_seconds(i)
            for i in range(capi.LLMLINK_METRICS_BUCKETS)]


def _by(kind, values):
    return {name: values[i] for i, name in enumerate(labels(kind))}


def labelled_metrics(raw):
    """The dict of llk_py_get_metrics with arrays keyed by label text:
    transfers by (direction, transport, status), bytes by (direction,
    transport), latency_* by direction; scalars as they are."""
    dirs, transports, results = labels(DIR), labels(TRANSPORT), labels(RESULT)
    m = dict(raw)
    m["links_established"] = _by(LINK_DIR, raw["links_established"])
    m["links_closed"] = _by(CLOSE_REASON, raw["links_closed"])
    for key in ("handshakes_refused", "link_failures"):
        m[key] = _by(REFUSE_REASON, raw[key])
    m["transfers"] = {(d, t, r): raw["transfers"][di][ti][ri]
                      for di, d in enumerate(dirs) for ti, t in enumerate(transports)
                      for ri, r in enumerate(results)}
    m["bytes"] = {(d, t): raw["bytes"][di][ti]
                  for di, d in enumerate(dirs) for ti, t in enumerate(transports)}
    for key in ("latency_buckets", "latency_count", "latency_sum_ns"):
        m[key] = _by(DIR, raw[key])
    return m


def labelled_link(raw):
    """One llk_py_get_links element with direction ("outbound" / "inbound"),
    transport ("tcp"...) as label text and rdma_protection an RdmaProtection."""
    link = dict(raw)
    link["direction"] = label_of(LINK_DIR, raw["direction"])
    link["transport"] = label_of(TRANSPORT, raw["transport"])
    link["rdma_protection"] = rdma_protection_of(raw["rdma_protection"])
    return link
