"""A prometheus_client collector of one engine's metrics (optional: install
with `pip install llmlink[prometheus]`).

    from prometheus_client import REGISTRY
    from llmlink.prometheus import LLMLinkCollector
    REGISTRY.register(LLMLinkCollector(datadist))

Every scrape reads llmlink_get_metrics / llmlink_get_links once and yields
the same families, names, labels and units as `llmlink serve --metrics`
(docs/metrics.md): counters end in _total, bytes in _bytes_total,
durations are a histogram in seconds with cumulative le buckets. Every
value an enum has is exported, zero or not, so rate() sees a series from
its first increment. A finalized engine yields nothing.
"""
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily)

from ._metrics import bucket_bounds

__all__ = ["LLMLinkCollector"]


def _le(bound):
    # the text prom.c writes ("%.9g": exact for every bound), so le label
    # values match across renderings and a dashboard's le="8e-06" selects both
    return format(bound, ".9g")


def _counter(name, doc, labels=None, values=()):
    # prometheus_client appends _total to a counter's samples
    family = CounterMetricFamily(name, doc, labels=labels)
    for label_values, value in values:
        family.add_metric(label_values, value)
    return family


class LLMLinkCollector:
    """Collects one LLMDataDist's metrics on each scrape."""

    def __init__(self, datadist):
        self._datadist = datadist

    def describe(self):
        # no metrics at registration: an uninitialized engine is fine to register
        return []

    def collect(self):
        try:
            m = self._datadist.metrics()
            links = self._datadist.links()
        except RuntimeError:  # not initialized, or finalized
            return
        yield from _links_and_handshakes(m)
        yield from _transfers(m)
        yield from _served_tasks_notifies(m)
        yield from _per_link(links)
        yield from _per_rail(links)


def _links_and_handshakes(m):
    yield GaugeMetricFamily("llmlink_links_up", "Established links now, both directions.",
                            value=m["links_up"])
    yield _counter("llmlink_links_established", "Links made, by which end made them (side).",
                   ["side"], (([s], v) for s, v in m["links_established"].items()))
    yield _counter("llmlink_links_closed", "Links ended, by reason.", ["reason"],
                   (([r], v) for r, v in m["links_closed"].items()))
    yield _counter("llmlink_handshakes_ok", "Inbound handshakes that made a link.",
                   values=[([], m["handshakes_ok"])])
    yield _counter("llmlink_handshakes_refused",
                   "Inbound handshakes and data-stream attaches refused, by reason.", ["reason"],
                   (([r], v) for r, v in m["handshakes_refused"].items()))
    yield _counter("llmlink_handshakes_timed_out",
                   "Inbound connections dropped before their handshake completed.",
                   values=[([], m["handshakes_timed_out"])])
    yield _counter("llmlink_link_failures",
                   "Clusters of this engine's link calls that did not link, by reason.",
                   ["reason"], (([r], v) for r, v in m["link_failures"].items()))
    yield _counter("llmlink_protocol_errors", "Connections dropped for malformed frames.",
                   values=[([], m["protocol_errors"])])


def _transfers(m):
    yield _counter("llmlink_transfers",
                   "This engine's transfer calls, by direction, transport and final status.",
                   ["direction", "transport", "status"],
                   ((list(k), v) for k, v in m["transfers"].items()))
    yield _counter("llmlink_transfer_bytes", "Payload bytes of this engine's successful transfers.",
                   ["direction", "transport"], ((list(k), v) for k, v in m["bytes"].items()))
    hist = HistogramMetricFamily("llmlink_transfer_duration_seconds",
                                 "Durations of this engine's transfer calls (any status).",
                                 labels=["direction"])
    bounds = bucket_bounds()
    for direction, per_bucket in m["latency_buckets"].items():
        cumulative, buckets = 0, []
        for bound, n in zip(bounds, per_bucket):
            cumulative += n
            buckets.append((_le(bound), cumulative))
        count = m["latency_count"][direction]
        buckets.append(("+Inf", count))
        hist.add_metric([direction], buckets, m["latency_sum_ns"][direction] / 1e9)
    yield hist


def _served_tasks_notifies(m):
    for name, key, doc in (
            ("llmlink_peer_requests_served", "requests_served",
             "Peers' transfer requests this engine served."),
            ("llmlink_peer_requests_refused", "requests_refused",
             "Peers' transfer requests this engine refused."),
            ("llmlink_tasks_submitted", "tasks_submitted", "Asynchronous transfer tasks submitted."),
            ("llmlink_tasks_cancelled", "tasks_cancelled", "Tasks that ended cancelled."),
            ("llmlink_notifications_sent", "notifies_sent",
             "Notifications this engine sent that the peer queued."),
            ("llmlink_notifications_received", "notifies_received",
             "Notifications received and queued here."),
            ("llmlink_notifications_refused_full", "notifies_refused_full",
             "Notifications refused because a queue was full.")):
        yield _counter(name, doc, values=[([], m[key])])


def _per_link(links):
    ids = ["cluster_id", "side"]

    def key(link):
        return [str(link["cluster_id"]), link["direction"]]

    info = GaugeMetricFamily("llmlink_link_info",
                             "One series per live link: its transport and peer.",
                             labels=ids + ["transport", "peer"])
    since = GaugeMetricFamily("llmlink_link_up_since_seconds",
                              "When each live link was made (Unix time).", labels=ids)
    streams = GaugeMetricFamily("llmlink_link_streams",
                                "Data streams this engine requests on, per link.", labels=ids)
    for link in links:
        info.add_metric(key(link) + [link["transport"], link["peer"]], 1)
        since.add_metric(key(link), link["up_since_ms"] / 1000.0)
        streams.add_metric(key(link), link["streams"])
    yield info
    yield since
    yield streams
    yield _counter("llmlink_link_transfer_bytes",
                   "Payload bytes of this engine's successful transfers over each link.",
                   ids + ["direction"],
                   ((key(l) + [d], l["bytes_pulled" if d == "pull" else "bytes_pushed"])
                    for l in links for d in ("pull", "push")))
    yield _counter("llmlink_link_transfers",
                   "This engine's transfer calls over each link: success, or any other status "
                   "(failed).", ids + ["status"],
                   ((key(l) + [s], l["transfers_ok" if s == "success" else "transfers_failed"])
                    for l in links for s in ("success", "failed")))
    yield _counter("llmlink_link_peer_bytes",
                   "Bytes the peer's requests read from / wrote into this engine's caches.",
                   ids + ["access"],
                   ((key(l) + [a], l["peer_read_bytes" if a == "read" else "peer_write_bytes"])
                    for l in links for a in ("read", "write")))
    yield _counter("llmlink_link_requests_fenced",
                   "The peer's admitted requests that ended unfinished (fenced), per link.", ids,
                   ((key(l), l["requests_fenced"]) for l in links))


def _per_rail(links):
    """The RDMA rails of each link: every link has the per-link families
    (0 without RDMA), each of its rails the per-rail ones (rail="0".."n-1")."""
    ids = ["cluster_id", "side"]

    def key(link):
        return [str(link["cluster_id"]), link["direction"]]

    rails = GaugeMetricFamily("llmlink_link_rdma_rails", "RDMA rails of each link (0: no RDMA).",
                              labels=ids)
    up = GaugeMetricFamily("llmlink_link_rdma_rails_up",
                           "RDMA rails of each link usable now (the others failed and wait to be "
                           "re-established).", labels=ids)
    mtu = GaugeMetricFamily("llmlink_link_rdma_rail_mtu_bytes",
                            "Path MTU of each RDMA rail of each link, in bytes.",
                            labels=ids + ["rail"])
    for link in links:
        rails.add_metric(key(link), link["rdma_rails"])
        up.add_metric(key(link), link["rdma_rails_up"])
        for rail, value in enumerate(link["rdma_rail_mtu"]):
            mtu.add_metric(key(link) + [str(rail)], value)
    yield rails
    yield up
    yield _counter("llmlink_link_rdma_rail_failovers",
                   "RDMA rails that failed under a transfer whose work went on over the other "
                   "rails, per link.", ids, ((key(l), l["rdma_rail_failovers"]) for l in links))
    yield _counter("llmlink_link_rdma_rail_repairs",
                   "Failed RDMA rails re-established without relinking, per link.", ids,
                   ((key(l), l["rdma_rail_repairs"]) for l in links))
    yield _counter("llmlink_link_rdma_rail_bytes",
                   "Bytes this engine's requests moved over each RDMA rail of each link.",
                   ids + ["rail"],
                   ((key(l) + [str(r)], v) for l in links
                    for r, v in enumerate(l["rdma_rail_bytes"])))
    yield mtu
