"""LLMDataDist: one engine, with llm_datadist's calls and error semantics."""
from . import capi
from ._cache_manager import CacheManager
from ._checks import (UINT16_MAX, UINT32_MAX, check_int, check_list_of, check_timeout, check_type,
                      check_uint64)
from ._cluster import LLMClusterInfo
from ._handle import EngineHandle
from ._metrics import labelled_link, labelled_metrics
from ._notify import Notification, notify_bytes
from ._types import LLMRole, rdma_protection_of


class LLMDataDist:
    def __init__(self, role, cluster_id):
        self._role = check_type("role", role, LLMRole)
        self._cluster_id = check_uint64("cluster_id", cluster_id)
        self._handle = None
        self._cache_manager = None

    @property
    def cluster_id(self):
        return self._cluster_id

    @property
    def role(self):
        return self._role

    def init(self, options):
        """Starts the engine with options ({str: str}, e.g. from
        LLMConfig.generate_options()). A second init is a no-op, as in
        llm_datadist; after finalize, init starts a new engine."""
        if self._handle is not None and self._handle.open:
            return
        check_type("options", options, dict)
        for key, value in options.items():
            check_type("option key", key, str)
            check_type(f"options[{key!r}]", value, str)
        self._handle = EngineHandle(self._role.value, self._cluster_id, dict(options))
        self._cache_manager = CacheManager(self._handle)

    def finalize(self):
        """Closes every link and frees the engine, after the calls other
        threads are running return. Idempotent."""
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.close()

    def __del__(self):
        handle = getattr(self, "_handle", None)
        if handle is not None:
            try:
                handle.close()
            except Exception:  # interpreter shutdown: nothing to report to
                pass

    def _engine(self):
        if self._handle is None or not self._handle.open:
            raise RuntimeError("llm datadist is not initialized")
        return self._handle

    def link_clusters(self, clusters, timeout=3000):
        """Links to up to 16 clusters: (LLMStatusCode, [LLMStatusCode per
        cluster]). Engine outcomes come back here, never as an exception."""
        engine = self._engine()
        check_timeout("timeout", timeout)
        c_clusters = _c_clusters(clusters)
        return engine.call(capi.llmlink_link_clusters, c_clusters, timeout)

    def unlink_clusters(self, clusters, timeout=3000, force=False):
        """force=False tells the peer and waits for it; force=True frees the
        local end at once. Returns (LLMStatusCode, [LLMStatusCode ...])."""
        engine = self._engine()
        check_timeout("timeout", timeout)
        check_type("force", force, bool)
        c_clusters = _c_clusters(clusters)
        return engine.call(capi.llmlink_unlink_clusters, c_clusters, timeout, force)

    def check_link_status(self, remote_cluster_id):
        """None when a live link to remote_cluster_id exists, else
        LLMException (LLM_NOT_YET_LINK)."""
        engine = self._engine()
        check_uint64("remote_cluster_id", remote_cluster_id)
        engine.call(capi.llmlink_check_link_status, remote_cluster_id)

    @property
    def cache_manager(self) -> CacheManager:
        self._engine()
        return self._cache_manager

    # llmlink's own additions: the port chosen for "ip:0", and counters.
    def get_listen_port(self, index=0):
        engine = self._engine()
        check_int("index", index, 0, UINT16_MAX)
        return engine.call(capi.llmlink_get_listen_port, index)

    def link_stats(self, cluster_id=None):
        """Without cluster_id: the engine's link and handshake counters
        (llmlink_get_stats). With it: the counters of the link with that
        cluster (either direction), what its peer's requests did to this
        engine's memory - peer_write_bytes, peer_read_bytes,
        requests_fenced, and rdma_protection (an RdmaProtection) - and its
        RDMA rails: rdma_rails, rdma_rails_up, rdma_rail_failovers,
        rdma_rail_repairs, and the lists rdma_rail_bytes (what this
        engine's requests moved over each rail) and rdma_rail_mtu (each
        rail's path MTU in bytes), of rdma_rails items (0 and [] on a link
        without RDMA). They start at 0 when the link is made.
        LLMException(LLM_NOT_YET_LINK) when there is no usable link with
        cluster_id."""
        engine = self._engine()
        if cluster_id is None:
            return engine.call(capi.llmlink_get_stats)
        check_uint64("cluster_id", cluster_id)
        stats = engine.call(capi.llmlink_get_link_stats, cluster_id)
        stats["rdma_protection"] = rdma_protection_of(stats["rdma_protection"])
        return stats

    def transfer_stats(self):
        return self._engine().call(capi.llmlink_get_xfer_stats)

    def metrics(self):
        """The engine's operator metrics (llmlink_get_metrics; docs/metrics.md):
        a dict of the C struct's fields, every array keyed by label text -
        links_established by side, links_closed / handshakes_refused /
        link_failures by reason, transfers by (direction, transport,
        status), bytes by (direction, transport), latency_buckets (per
        bucket, not cumulative), latency_count and latency_sum_ns by
        direction. llmlink.prometheus.LLMLinkCollector exports them."""
        return labelled_metrics(self._engine().call(capi.llk_py_get_metrics))

    def links(self):
        """The live links (llmlink_get_links), outbound first, by cluster id:
        dicts with direction ("outbound"/"inbound"), cluster_id, transport
        ("tcp", "shm", "rdma"), streams, up_since_ms, bytes_pulled,
        bytes_pushed, transfers_ok, transfers_failed, rdma_protection,
        peer_write_bytes, peer_read_bytes, requests_fenced, peer ("ip:port"),
        and the RDMA rails as in link_stats(cluster_id): rdma_rails,
        rdma_rails_up, rdma_rail_failovers, rdma_rail_repairs, and the lists
        rdma_rail_bytes and rdma_rail_mtu of rdma_rails items."""
        return [labelled_link(link) for link in self._engine().call(capi.llk_py_get_links)]

    # Notifications: small messages between linked engines.
    def notify(self, cluster_id, data, timeout_ms=1000):
        """Sends data (bytes, 1..4096) to the linked engine cluster_id and
        waits up to timeout_ms for it to be queued there. LLMException:
        LLMLINK_NOTIFY_QUEUE_FULL (the peer's queue is full: nothing was
        queued, try later), LLM_NOT_YET_LINK, LLM_TIMEOUT."""
        engine = self._engine()
        check_uint64("cluster_id", cluster_id)
        data = notify_bytes("data", data)
        check_timeout("timeout_ms", timeout_ms)
        engine.call(capi.llmlink_notify, cluster_id, data, timeout_ms)

    def get_notifies(self, max_count=None):
        """The notifications received and not yet taken, oldest first (in
        the order each peer sent them), at most max_count (None: all):
        a list of Notification(cluster_id, data)."""
        engine = self._engine()
        if max_count is not None:
            check_int("max_count", max_count, 0, UINT32_MAX)
        want = UINT32_MAX if max_count is None else max_count
        out = engine.hub.take_spilled(want)
        while len(out) < want:
            batch = engine.call(capi.llk_py_get_notifies, min(want - len(out), _NOTIFY_BATCH))
            out += [Notification(*item) for item in batch]
            if len(batch) < _NOTIFY_BATCH:
                break
        return out

    async def next_notify(self):
        """asyncio: the next notification (a Notification), waiting on the
        engine's fd (no thread, no polling) until one arrives."""
        engine = self._engine()
        got = self.get_notifies(1)
        if got:
            return got[0]
        return await engine.hub.watch_notify()


# Notifications per C call (each is up to 4 KiB in the call's buffer).
_NOTIFY_BATCH = 64


def _c_clusters(clusters):
    clusters = check_list_of("clusters", clusters, LLMClusterInfo)
    return [cluster._c(i) for i, cluster in enumerate(clusters)]
