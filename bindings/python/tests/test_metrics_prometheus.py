"""LLMDataDist.metrics() / links() and llmlink.prometheus.LLMLinkCollector:
after a known sequence against a prompt peer in another process (a link to
a port where nothing listens, a link, pulls that succeed, one the peer
refuses, an unlink), the collector's output, rendered by prometheus_client
and parsed back with its text parser, has exactly the expected values, and
the names, labels and units docs/metrics.md lists (the ones
`llmlink serve --metrics` serves)."""
import os
import re
import socket

import pytest

from conftest import cluster_to
from test_transfer import BLOCK_BYTES, BLOCKS, TENSORS, peer_blocks, register_dst_blocks
from llmlink import BlocksCacheKey, LLMException, LLMStatusCode, RdmaProtection

prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from llmlink.prometheus import LLMLinkCollector  # noqa: E402
from llmlink._metrics import bucket_bounds  # noqa: E402

S = LLMStatusCode
HERE = os.path.dirname(os.path.abspath(__file__))
METRICS_MD = os.path.join(HERE, "..", "..", "..", "docs", "metrics.md")


def scrape(engine):
    """{sample name: {frozenset(labels.items()): value}} and the families,
    through a registry, generate_latest and the text parser."""
    registry = prometheus_client.CollectorRegistry()
    registry.register(LLMLinkCollector(engine))
    text = prometheus_client.generate_latest(registry).decode()
    families = list(text_string_to_metric_families(text))
    samples = {}
    for family in families:
        for s in family.samples:
            samples.setdefault(s.name, {})[frozenset(s.labels.items())] = s.value
    return families, samples


def value(samples, name, **labels):
    return samples[name][frozenset(labels.items())]


def free_port():
    """A loopback port where nothing listens (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def sequence(make_decoder, peer):
    """The decoder after: a failed link, a link, 2 good pulls, 1 refused."""
    decoder = make_decoder(transport="tcp")
    ret, rets = decoder.link_clusters([cluster_to(free_port(), 9)], 2000)
    assert rets[0] != S.LLM_SUCCESS
    assert decoder.link_clusters([cluster_to(peer)], 5000)[0] == S.LLM_SUCCESS
    peer_blocks(peer, seed=3)
    cache, keep_alive = register_dst_blocks(decoder)
    key = BlocksCacheKey(peer.cluster_id, 0)
    for _ in range(2):
        decoder.cache_manager.pull_blocks(key, cache, [1, 2], [3, 4])
    with pytest.raises(LLMException):  # a block past the end of the peer's cache
        decoder.cache_manager.pull_blocks(key, cache, [BLOCKS + 5], [0])
    return decoder, peer, keep_alive


PER_PULL = 2 * BLOCK_BYTES * TENSORS


def test_metrics_dict_is_keyed_by_labels(sequence):
    decoder, peer, _ = sequence
    m = decoder.metrics()
    assert m["version"] == 1 and m["links_up"] == 1
    assert m["links_established"] == {"outbound": 1, "inbound": 0}
    assert m["link_failures"]["connect"] == 1 and sum(m["link_failures"].values()) == 1
    assert {k: v for k, v in m["transfers"].items() if v} == {
        ("pull", "tcp", "success"): 2, ("pull", "tcp", "refused"): 1}
    assert {k: v for k, v in m["bytes"].items() if v} == {("pull", "tcp"): 2 * PER_PULL}
    assert m["latency_count"] == {"pull": 3, "push": 0}
    assert sum(m["latency_buckets"]["pull"]) == 3
    assert m["latency_sum_ns"]["pull"] > 0
    [link] = decoder.links()
    assert link["direction"] == "outbound" and link["cluster_id"] == peer.cluster_id
    assert link["transport"] == "tcp" and link["peer"] == f"127.0.0.1:{peer.port}"
    assert link["bytes_pulled"] == 2 * PER_PULL and link["bytes_pushed"] == 0
    assert (link["transfers_ok"], link["transfers_failed"]) == (2, 1)
    assert link["rdma_protection"] == RdmaProtection.NONE
    assert link["streams"] >= 1 and link["up_since_ms"] > 0
    # a tcp link has no RDMA rail: the rail fields (link info version 2)
    # are 0 and the per-rail lists empty, as in link_stats(cluster_id)
    rails = {k: v for k, v in link.items() if k.startswith("rdma_rail")}
    assert rails == {"rdma_rails": 0, "rdma_rails_up": 0, "rdma_rail_failovers": 0,
                     "rdma_rail_repairs": 0, "rdma_rail_bytes": [], "rdma_rail_mtu": []}
    stats = decoder.link_stats(peer.cluster_id)
    assert {k: v for k, v in stats.items() if k.startswith("rdma_rail")} == rails


def test_collector_exact_values_after_a_known_sequence(sequence):
    decoder, peer, _ = sequence
    _, s = scrape(decoder)
    assert value(s, "llmlink_links_up") == 1
    assert value(s, "llmlink_links_established_total", side="outbound") == 1
    assert value(s, "llmlink_links_established_total", side="inbound") == 0
    assert value(s, "llmlink_link_failures_total", reason="connect") == 1
    assert sum(s["llmlink_link_failures_total"].values()) == 1
    transfers = {k: v for k, v in s["llmlink_transfers_total"].items() if v}
    assert transfers == {
        frozenset({"direction": "pull", "transport": "tcp", "status": "success"}.items()): 2,
        frozenset({"direction": "pull", "transport": "tcp", "status": "refused"}.items()): 1}
    # every label value the library names is exported, zero or not
    assert len(s["llmlink_transfers_total"]) == 2 * 4 * 5
    assert value(s, "llmlink_transfer_bytes_total", direction="pull", transport="tcp") == \
        2 * PER_PULL
    # the histogram: cumulative le buckets ending at +Inf = count = transfers
    assert value(s, "llmlink_transfer_duration_seconds_count", direction="pull") == 3
    assert value(s, "llmlink_transfer_duration_seconds_count", direction="push") == 0
    assert value(s, "llmlink_transfer_duration_seconds_sum", direction="pull") > 0
    pull = sorted(((float(dict(k)["le"]), v) for k, v in
                   s["llmlink_transfer_duration_seconds_bucket"].items()
                   if dict(k)["direction"] == "pull"))
    assert len(pull) == 25 and pull[-1] == (float("inf"), 3)
    assert pull[0][0] == pytest.approx(8e-6)
    assert all(a[1] <= b[1] for a, b in zip(pull, pull[1:]))
    # le as `llmlink serve --metrics` writes it (prom.c: "%.9g")
    les = sorted((dict(k)["le"] for k in s["llmlink_transfer_duration_seconds_bucket"]
                  if dict(k)["direction"] == "pull"), key=float)
    assert les == [format(b, ".9g") for b in bucket_bounds()] + ["+Inf"]
    # per link
    ids = {"cluster_id": str(peer.cluster_id), "side": "outbound"}
    assert value(s, "llmlink_link_info", **ids, transport="tcp",
                 peer=f"127.0.0.1:{peer.port}") == 1
    assert value(s, "llmlink_link_transfer_bytes_total", **ids, direction="pull") == 2 * PER_PULL
    assert value(s, "llmlink_link_transfer_bytes_total", **ids, direction="push") == 0
    assert value(s, "llmlink_link_transfers_total", **ids, status="success") == 2
    assert value(s, "llmlink_link_transfers_total", **ids, status="failed") == 1
    assert value(s, "llmlink_link_streams", **ids) >= 1
    # the link's RDMA rails: none on tcp - the per-link series are 0, and
    # no per-rail series
    for name in ("llmlink_link_rdma_rails", "llmlink_link_rdma_rails_up",
                 "llmlink_link_rdma_rail_failovers_total", "llmlink_link_rdma_rail_repairs_total"):
        assert value(s, name, **ids) == 0, name
    assert "llmlink_link_rdma_rail_bytes_total" not in s
    assert "llmlink_link_rdma_rail_mtu_bytes" not in s

    # unlink: the link goes from the per-link series, and is counted closed
    assert decoder.unlink_clusters([cluster_to(peer)], 5000)[0] == S.LLM_SUCCESS
    _, s = scrape(decoder)
    assert value(s, "llmlink_links_up") == 0
    assert value(s, "llmlink_links_closed_total", reason="unlinked") == 1
    assert "llmlink_link_info" not in s
    assert value(s, "llmlink_transfers_total", direction="pull", transport="tcp",
                 status="success") == 2  # engine counters stay


def test_per_rail_series_of_an_rdma_link():
    """No RDMA on the test host: the rail families are rendered from the
    dict links() gives for a link of two rails (one down), through
    prometheus_client and its parser, as a scrape sees them."""
    from llmlink.prometheus import _per_rail
    link = {"cluster_id": 7, "direction": "inbound", "rdma_rails": 2, "rdma_rails_up": 1,
            "rdma_rail_failovers": 1, "rdma_rail_repairs": 0, "rdma_rail_bytes": [4096, 512],
            "rdma_rail_mtu": [1024, 4096]}

    class Families:
        def collect(self):
            return list(_per_rail([link]))

    registry = prometheus_client.CollectorRegistry()
    registry.register(Families())
    text = prometheus_client.generate_latest(registry).decode()
    s = {}
    for family in text_string_to_metric_families(text):
        for x in family.samples:
            s.setdefault(x.name, {})[frozenset(x.labels.items())] = x.value
    ids = {"cluster_id": "7", "side": "inbound"}
    assert value(s, "llmlink_link_rdma_rails", **ids) == 2
    assert value(s, "llmlink_link_rdma_rails_up", **ids) == 1
    assert value(s, "llmlink_link_rdma_rail_failovers_total", **ids) == 1
    assert value(s, "llmlink_link_rdma_rail_repairs_total", **ids) == 0
    def rail(r):
        return frozenset({**ids, "rail": str(r)}.items())

    assert s["llmlink_link_rdma_rail_bytes_total"] == {rail(0): 4096, rail(1): 512}
    assert s["llmlink_link_rdma_rail_mtu_bytes"] == {rail(0): 1024, rail(1): 4096}


def documented_names():
    """The Prometheus names in docs/metrics.md's tables (first column)."""
    with open(METRICS_MD) as f:
        return {m.group(1) for m in re.finditer(r"^\| `(llmlink_[a-z_]+)[`{]", f.read(), re.M)}


def test_names_follow_conventions_and_match_the_docs(sequence):
    decoder, _, _ = sequence
    families, s = scrape(decoder)
    exported = set()
    for family in families:
        assert re.fullmatch(r"llmlink_[a-z_]+", family.name), family.name
        assert family.documentation
        if family.type == "counter":
            assert all(x.name == family.name + "_total" for x in family.samples), family.name
            exported.add(family.name + "_total")
        elif family.type == "histogram":
            assert family.name.endswith("_seconds")
            exported.add(family.name)
        else:
            assert family.type == "gauge", family.name
            assert not family.name.endswith("_total")
            exported.add(family.name)
        if "bytes" in family.name:
            assert family.name.endswith("_bytes"), family.name  # _bytes_total on the wire
    assert exported == documented_names()


def test_a_finalized_engine_yields_nothing(make_decoder):
    decoder = make_decoder()
    decoder.finalize()
    families, _ = scrape(decoder)
    assert families == []
    with pytest.raises(RuntimeError):
        decoder.metrics()
