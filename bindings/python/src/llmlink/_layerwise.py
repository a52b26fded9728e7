"""Layer-wise push (llm_datadist's transfer_cache_async): LayerSynchronizer,
TransferWithCacheKeyConfig, TransferConfig, and the synchronizer's call
from the engine's thread."""
import abc
import logging

from ._checks import INT32_MAX, UINT32_MAX, UINT64_MAX, check_int, check_int_list, check_type
from ._status import LLMException, LLMStatusCode
from ._types import BlocksCacheKey, CacheKey, CacheKeyByIdAndIndex

_log = logging.getLogger("llmlink")
_CONFIG_KEYS = (BlocksCacheKey, CacheKeyByIdAndIndex, CacheKey)


class LayerSynchronizer(abc.ABC):
    """Says when a layer's cache is computed. transfer_cache_async calls
    synchronize_layer(layer_index, timeout_in_millis) once per layer, in
    order, on an engine thread (holding the GIL while it runs); True starts
    that layer's transfer, False (or an exception, logged) ends the task:
    configs not finished get LLM_FAILED."""

    @abc.abstractmethod
    def synchronize_layer(self, layer_index, timeout_in_millis):
        """True once layer layer_index is computed. timeout_in_millis is
        None (no limit), as in llm_datadist."""


class TransferWithCacheKeyConfig:
    """A destination of transfer_cache_async named by a key of the peer's
    cache: a BlocksCacheKey, a CacheKeyByIdAndIndex or a CacheKey, with the
    local layers src_layer_range going to the remote dst_layer_range (both
    ranges of layers with step 1 and the same length; None for both: every
    layer). src_batch_index: the local entry pushed, when the local cache
    holds batch entries (0 with a BlocksCacheKey)."""

    def __init__(self, cache_key, src_layer_range=None, dst_layer_range=None, src_batch_index=0):
        self._cache_key = check_type("cache_key", cache_key, _CONFIG_KEYS)
        src = _bounds("src_layer_range", src_layer_range)
        dst = _bounds("dst_layer_range", dst_layer_range)
        if (src_layer_range is None) != (dst_layer_range is None):
            raise ValueError("give both src_layer_range and dst_layer_range, or neither")
        if src_layer_range is not None and len(src_layer_range) != len(dst_layer_range):
            raise ValueError(f"src_layer_range {src_layer_range} and dst_layer_range "
                             f"{dst_layer_range} cover different numbers of layers")
        self._src_batch_index = check_int("src_batch_index", src_batch_index, 0, UINT32_MAX)
        if isinstance(cache_key, BlocksCacheKey) and src_batch_index != 0:
            raise ValueError("src_batch_index must be 0 with a BlocksCacheKey")
        self._src, self._dst = src, dst
        self._src_layer_range, self._dst_layer_range = src_layer_range, dst_layer_range

    cache_key = property(lambda self: self._cache_key)
    src_layer_range = property(lambda self: self._src_layer_range)
    dst_layer_range = property(lambda self: self._dst_layer_range)
    src_batch_index = property(lambda self: self._src_batch_index)

    def _c(self):
        return (self._cache_key._c(), *self._src, *self._dst, self._src_batch_index)

    def __repr__(self):
        return (f"TransferWithCacheKeyConfig({self._cache_key!r}, {self._src_layer_range}, "
                f"{self._dst_layer_range}, src_batch_index={self._src_batch_index})")


class TransferConfig:
    """llm_datadist's destination by raw tensor addresses. Accepted and
    checked, but transfer_cache_async raises LLM_FEATURE_NOT_ENABLED for
    it: llmlink addresses a peer's memory only through its registered
    caches (use TransferWithCacheKeyConfig)."""

    def __init__(self, dst_cluster_id, dst_addrs, src_layer_range=None, src_batch_index=0):
        self._dst_cluster_id = check_int("dst_cluster_id", dst_cluster_id, 0, UINT64_MAX)
        self._dst_addrs = check_int_list("dst_addrs", dst_addrs, 0, UINT64_MAX)
        _bounds("src_layer_range", src_layer_range)
        self._src_layer_range = src_layer_range
        self._src_batch_index = check_int("src_batch_index", src_batch_index, 0, UINT32_MAX)

    dst_cluster_id = property(lambda self: self._dst_cluster_id)
    dst_addrs = property(lambda self: list(self._dst_addrs))
    src_layer_range = property(lambda self: self._src_layer_range)
    src_batch_index = property(lambda self: self._src_batch_index)


def c_targets(transfer_configs):
    """transfer_configs (a non-empty list or tuple) as the C targets."""
    if not isinstance(transfer_configs, (list, tuple)):
        raise TypeError("transfer_configs must be a list or tuple, "
                        f"not {type(transfer_configs).__name__}")
    if not transfer_configs:
        raise ValueError("transfer_configs is empty")
    for i, config in enumerate(transfer_configs):
        if isinstance(config, TransferConfig):
            raise LLMException(
                f"transfer_configs[{i}] is a TransferConfig (destination by raw addresses), "
                "which llmlink does not support: name the peer's cache with "
                "TransferWithCacheKeyConfig", LLMStatusCode.LLM_FEATURE_NOT_ENABLED)
        check_type(f"transfer_configs[{i}]", config, TransferWithCacheKeyConfig)
    return [config._c() for config in transfer_configs]


class SyncCall:
    """What the engine thread calls: synchronizer.synchronize_layer, with
    an exception or a non-bool answer logged and taken as False (the task
    then ends with "layer synchronizer returned false for layer i")."""

    def __init__(self, synchronizer):
        fn = getattr(synchronizer, "synchronize_layer", None)
        if not callable(fn):
            raise TypeError("layer_synchronizer must be a LayerSynchronizer (with "
                            f"synchronize_layer), not {type(synchronizer).__name__}")
        self._fn = fn

    def __call__(self, layer_index, timeout_ms):
        try:
            ok = self._fn(layer_index, None if timeout_ms < 0 else timeout_ms)
        except BaseException:  # noqa: BLE001 - it must not escape into the engine thread
            _log.exception("layer synchronizer raised for layer %d: taken as False", layer_index)
            return False
        if not isinstance(ok, bool):
            _log.error("layer synchronizer returned %r for layer %d, not a bool: taken as False",
                       ok, layer_index)
            return False
        return ok


def _bounds(name, layer_range):
    if layer_range is None:
        return -1, -1
    check_type(name, layer_range, range)
    if layer_range.step != 1 or not 0 <= layer_range.start < layer_range.stop <= INT32_MAX:
        raise ValueError(f"{name} must be a non-empty range(start, stop) of layers, step 1, "
                         f"start >= 0; got {layer_range}")
    return layer_range.start, layer_range.stop
