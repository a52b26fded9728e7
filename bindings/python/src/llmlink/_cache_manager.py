"""CacheManager: llm_datadist's cache calls over one engine.

Tensor addresses are plain ints (numpy's arr.ctypes.data,
torch.Tensor.data_ptr(), Cache.tensor_addrs...). Transfers block until the
bytes have moved (bounded by llm.SyncKvCacheWaitTime), without the GIL; the
*_async ones return a Transfer at once (see _transfer.py)."""
from . import capi
from ._checks import (INT32_MAX, INT64_MAX, UINT32_MAX, UINT64_MAX, UNSET, check_int,
                      check_int_list, check_list_of, check_timeout, check_type, renamed)
from ._layerwise import SyncCall, c_targets
from ._notify import notify_bytes
from ._transfer import CacheTask, Transfer
from ._types import (BlocksCacheKey, Cache, CacheDesc, CacheKey, CacheKeyByIdAndIndex,
                     Placement)

_PULL_CACHE_KEYS = (CacheKey, CacheKeyByIdAndIndex)
_PULL_BLOCKS_KEYS = (CacheKey, CacheKeyByIdAndIndex, BlocksCacheKey)


class CacheManager:
    def __init__(self, handle):
        self._handle = handle

    # -- registration ---------------------------------------------------
    def register_cache(self, cache_desc, addrs, cache_keys=(), remote_accessible=None):
        """Caller memory as a cache of cache_desc.shape[0] batch entries;
        cache_keys[i] names entry i. remote_accessible (llm_datadist's
        default: False for HOST placement, True for DEVICE): peers may pull
        from and push into it; when False a peer's request for it gets
        LLM_KV_CACHE_NOT_EXIST, as if it did not exist (this engine's own
        transfers use it either way)."""
        desc = check_type("cache_desc", cache_desc, CacheDesc)
        c_addrs = _addrs(addrs)
        keys = check_list_of("cache_keys", cache_keys, CacheKey)
        access = _access(desc, remote_accessible)
        cache_id = self._call(capi.llmlink_register_cache_opts, desc._c(), c_addrs,
                              [k._c() for k in keys], access)
        return Cache(cache_id, desc, c_addrs)

    def register_blocks_cache(self, cache_desc, addrs, blocks_cache_key=UNSET,
                              remote_accessible=None, *, blocks_key=UNSET):
        """Caller memory as a blocks cache (shape[0] blocks per tensor);
        blocks_cache_key (default None; blocks_key is its older name, a
        keyword alias) lets peers address it; remote_accessible as in
        register_cache."""
        desc = check_type("cache_desc", cache_desc, CacheDesc)
        c_addrs = _addrs(addrs)
        key = _blocks_cache_key(blocks_cache_key, blocks_key)
        access = _access(desc, remote_accessible)
        cache_id = self._call(capi.llmlink_register_blocks_cache_opts, desc._c(), c_addrs, key,
                              access)
        return Cache(cache_id, desc, c_addrs)

    def unregister_cache(self, cache_id):
        self._call(capi.llmlink_unregister_cache, _cache_id(cache_id))

    # -- memory the library owns ------------------------------------------
    def allocate_cache(self, cache_desc, cache_keys=()):
        """Zeroed, page-aligned memory; read it through Cache.tensor_buffer().
        Held by its id and by each of its keys (see deallocate_cache)."""
        desc = check_type("cache_desc", cache_desc, CacheDesc)
        keys = check_list_of("cache_keys", cache_keys, CacheKey)
        cache_id, addrs = self._call(capi.llmlink_allocate_cache, desc._c(),
                                     [k._c() for k in keys])
        return Cache(cache_id, desc, addrs, allocated=True)

    def allocate_blocks_cache(self, cache_desc, blocks_cache_key=UNSET, *, blocks_key=UNSET):
        """As allocate_cache, for a blocks cache; blocks_cache_key as in
        register_blocks_cache."""
        desc = check_type("cache_desc", cache_desc, CacheDesc)
        key = _blocks_cache_key(blocks_cache_key, blocks_key)
        cache_id, addrs = self._call(capi.llmlink_allocate_blocks_cache, desc._c(), key)
        return Cache(cache_id, desc, addrs, allocated=True)

    def deallocate_cache(self, cache):
        """Drops the id of an allocated cache (a Cache or its id). The memory
        is freed once running transfers end and its keys are gone."""
        self._call(capi.llmlink_deallocate_cache, _cache_id(cache))

    def deallocate_blocks_cache(self, cache):
        """llm_datadist's name for deallocate_cache on a blocks cache: the
        same call (deallocate_cache frees blocks caches too)."""
        self.deallocate_cache(cache)

    def remove_cache_key(self, cache_key):
        key = check_type("cache_key", cache_key, (CacheKey, BlocksCacheKey))
        self._call(capi.llmlink_remove_cache_key, key._c())

    # -- transfers ----------------------------------------------------------
    def pull_cache(self, cache_key, cache, batch_index=0, size=-1, src_layer_range=None,
                   dst_layer_range=None, tensor_num_per_layer=2):
        """The remote entry named by cache_key into entry batch_index of cache;
        size: bytes per tensor (-1: the whole entry)."""
        self._call(capi.llmlink_pull_cache,
                   *_pull_cache_args(cache_key, cache, batch_index, size, src_layer_range,
                                     dst_layer_range, tensor_num_per_layer))

    def pull_blocks(self, src_cache_key, dst_cache, src_blocks=(), dst_blocks=(),
                    src_layer_range=None, dst_layer_range=None, tensor_num_per_layer=2):
        """src_blocks[i] of the remote cache into dst_blocks[i] of dst_cache;
        with a CacheKey/CacheKeyByIdAndIndex and no src_blocks (() or None,
        the same), that entry fills dst_blocks in order."""
        self._call(capi.llmlink_pull_blocks,
                   *_pull_blocks_args(src_cache_key, dst_cache, src_blocks, dst_blocks,
                                      src_layer_range, dst_layer_range, tensor_num_per_layer))

    def push_blocks(self, dst_cache_key, src_cache, src_blocks=(), dst_blocks=(),
                    src_layer_range=None, dst_layer_range=None, tensor_num_per_layer=2):
        self._call(capi.llmlink_push_blocks,
                   *_push_blocks_args(dst_cache_key, src_cache, src_blocks, dst_blocks,
                                      src_layer_range, dst_layer_range, tensor_num_per_layer))

    def push_cache(self, dst_cache_key, src_cache, src_batch_index=0, src_layer_range=None,
                   dst_layer_range=None, size=-1, tensor_num_per_layer=2):
        self._call(capi.llmlink_push_cache,
                   *_push_cache_args(dst_cache_key, src_cache, src_batch_index, src_layer_range,
                                     dst_layer_range, size, tensor_num_per_layer))

    # -- the same, without waiting: a Transfer ----------------------------
    def pull_cache_async(self, cache_key, cache, batch_index=0, size=-1, src_layer_range=None,
                         dst_layer_range=None, tensor_num_per_layer=2, *, notify=None,
                         timeout_ms=None) -> Transfer:
        """pull_cache's arguments and checks; returns a Transfer at once.
        notify: bytes (1..4096) the peer receives once every byte is in
        place; timeout_ms: the task's limit (None: llm.SyncKvCacheWaitTime)."""
        args = _pull_cache_args(cache_key, cache, batch_index, size, src_layer_range,
                                dst_layer_range, tensor_num_per_layer)
        return self._submit(capi.llmlink_pull_cache_async, args, notify, timeout_ms)

    def pull_blocks_async(self, src_cache_key, dst_cache, src_blocks=(), dst_blocks=(),
                          src_layer_range=None, dst_layer_range=None, tensor_num_per_layer=2, *,
                          notify=None, timeout_ms=None) -> Transfer:
        """pull_blocks without waiting; notify and timeout_ms as in
        pull_cache_async."""
        args = _pull_blocks_args(src_cache_key, dst_cache, src_blocks, dst_blocks,
                                 src_layer_range, dst_layer_range, tensor_num_per_layer)
        return self._submit(capi.llmlink_pull_blocks_async, args, notify, timeout_ms)

    def push_blocks_async(self, dst_cache_key, src_cache, src_blocks=(), dst_blocks=(),
                          src_layer_range=None, dst_layer_range=None, tensor_num_per_layer=2, *,
                          notify=None, timeout_ms=None) -> Transfer:
        """push_blocks without waiting; notify and timeout_ms as in
        pull_cache_async."""
        args = _push_blocks_args(dst_cache_key, src_cache, src_blocks, dst_blocks,
                                 src_layer_range, dst_layer_range, tensor_num_per_layer)
        return self._submit(capi.llmlink_push_blocks_async, args, notify, timeout_ms)

    def push_cache_async(self, dst_cache_key, src_cache, src_batch_index=0, src_layer_range=None,
                         dst_layer_range=None, size=-1, tensor_num_per_layer=2, *, notify=None,
                         timeout_ms=None) -> Transfer:
        """push_cache without waiting; notify and timeout_ms as in
        pull_cache_async."""
        args = _push_cache_args(dst_cache_key, src_cache, src_batch_index, src_layer_range,
                                dst_layer_range, size, tensor_num_per_layer)
        return self._submit(capi.llmlink_push_cache_async, args, notify, timeout_ms)

    def transfer_cache_async(self, src_cache, layer_synchronizer, transfer_configs,
                             src_block_indices=None, dst_block_indices=None,
                             dst_block_memory_size=None, *, timeout_ms=None) -> CacheTask:
        """Layer-wise push (llm_datadist's): each layer of src_cache goes to
        every config's remote cache as soon as
        layer_synchronizer.synchronize_layer(layer) returns True, while the
        next layer computes. Blocks caches: src_block_indices[i] ->
        dst_block_indices[i] (both None for a cache of batch entries).
        dst_block_memory_size is checked and otherwise unused (the remote
        cache's block size is known from its key). timeout_ms: each layer
        push's limit from its submission (None: llm.SyncKvCacheWaitTime; the
        synchronizer's time does not count). Returns a CacheTask."""
        src = check_type("src_cache", src_cache, Cache)
        sync = SyncCall(layer_synchronizer)
        targets = c_targets(transfer_configs)
        srcs = None if src_block_indices is None else _blocks("src_block_indices",
                                                              src_block_indices)
        dsts = None if dst_block_indices is None else _blocks("dst_block_indices",
                                                              dst_block_indices)
        if dst_block_memory_size is not None:
            check_int("dst_block_memory_size", dst_block_memory_size, 1, INT64_MAX)
        opts = _task_opts(None, timeout_ms)
        ptr = self._handle.enter()
        try:
            task = capi.llmlink_transfer_cache_async(ptr, src.cache_id, sync, targets, srcs, dsts,
                                                     _TENSORS_PER_LAYER, opts)
            return CacheTask(self._handle, task, len(targets), sync)
        finally:
            self._handle.exit()

    def _submit(self, fn, args, notify, timeout_ms):
        opts = _task_opts(notify, timeout_ms)
        ptr = self._handle.enter()
        try:
            # Registered with the engine's hub before the call count drops,
            # so that finalize finds it.
            return Transfer(self._handle, fn(ptr, *args, opts))
        finally:
            self._handle.exit()

    def _call(self, fn, *args):
        return self._handle.call(fn, *args)


# transfer_cache_async: a layer is K and V, as in llm_datadist.
_TENSORS_PER_LAYER = 2


def _pull_cache_args(cache_key, cache, batch_index, size, src_layer_range, dst_layer_range,
                     tensor_num_per_layer):
    key = check_type("cache_key", cache_key, _PULL_CACHE_KEYS)
    dst = check_type("cache", cache, Cache)
    check_int("batch_index", batch_index, 0, UINT32_MAX)
    _check_size(size)
    layers = _layers(src_layer_range, dst_layer_range, tensor_num_per_layer)
    return key._c(), dst.cache_id, batch_index, size, layers


def _pull_blocks_args(src_cache_key, dst_cache, src_blocks, dst_blocks, src_layer_range,
                      dst_layer_range, tensor_num_per_layer):
    key = check_type("src_cache_key", src_cache_key, _PULL_BLOCKS_KEYS)
    dst = check_type("dst_cache", dst_cache, Cache)
    src = None if src_blocks is None else _blocks("src_blocks", src_blocks)
    dsts = _blocks("dst_blocks", dst_blocks)
    layers = _layers(src_layer_range, dst_layer_range, tensor_num_per_layer)
    return key._c(), dst.cache_id, src, dsts, layers


def _push_blocks_args(dst_cache_key, src_cache, src_blocks, dst_blocks, src_layer_range,
                      dst_layer_range, tensor_num_per_layer):
    key = check_type("dst_cache_key", dst_cache_key, BlocksCacheKey)
    src = check_type("src_cache", src_cache, Cache)
    srcs = _blocks("src_blocks", src_blocks)
    dsts = _blocks("dst_blocks", dst_blocks)
    layers = _layers(src_layer_range, dst_layer_range, tensor_num_per_layer)
    return key._c(), src.cache_id, srcs, dsts, layers


def _push_cache_args(dst_cache_key, src_cache, src_batch_index, src_layer_range,
                     dst_layer_range, size, tensor_num_per_layer):
    key = check_type("dst_cache_key", dst_cache_key, _PULL_CACHE_KEYS)
    src = check_type("src_cache", src_cache, Cache)
    check_int("src_batch_index", src_batch_index, 0, UINT32_MAX)
    _check_size(size)
    layers = _layers(src_layer_range, dst_layer_range, tensor_num_per_layer)
    return key._c(), src.cache_id, src_batch_index, size, layers


def _task_opts(notify, timeout_ms):
    """The C task options: (timeout_ms, notify bytes or None)."""
    if timeout_ms is not None:
        check_timeout("timeout_ms", timeout_ms)
    data = None if notify is None else notify_bytes("notify", notify)
    return (0 if timeout_ms is None else timeout_ms, data)


def _access(desc, remote_accessible):
    """llm_datadist's remote_accessible (None: False for HOST placement,
    True for DEVICE) as the C library's llmlink_access_t."""
    if remote_accessible is None:
        remote_accessible = desc.placement == Placement.DEVICE
    check_type("remote_accessible", remote_accessible, bool)
    return capi.LLMLINK_ACCESS_READ_WRITE if remote_accessible else capi.LLMLINK_ACCESS_NONE


def _addrs(addrs):
    values = check_int_list("addrs", addrs, 0, UINT64_MAX)
    for i, a in enumerate(values):
        if a == 0:
            raise ValueError(f"addrs[{i}] is 0")
    return values


def _blocks(name, blocks):
    return check_int_list(name, blocks, 0, UINT64_MAX)


def _blocks_cache_key(blocks_cache_key, blocks_key):
    key = renamed("blocks_cache_key", blocks_cache_key, "blocks_key", blocks_key, None)
    return None if key is None else check_type("blocks_cache_key", key, BlocksCacheKey)._c()


def _cache_id(cache):
    if isinstance(cache, Cache):
        return cache.cache_id
    return check_int("cache_id", cache, 1, INT64_MAX)


def _check_size(size):
    check_int("size", size, -1, INT64_MAX)
    if size == 0:
        raise ValueError("size is 0: give bytes per tensor, or -1 for the whole entry")


def _layer_bounds(name, layer_range):
    # A range of layers with step 1, or None for every layer of that cache.
    if layer_range is None:
        return -1, -1
    check_type(name, layer_range, range)
    if layer_range.step != 1 or not 0 <= layer_range.start < layer_range.stop <= INT32_MAX:
        raise ValueError(f"{name} must be a non-empty range(start, stop) of layers, step 1, "
                         f"start >= 0; got {layer_range}")
    return layer_range.start, layer_range.stop


def _layers(src_range, dst_range, tensor_num_per_layer):
    check_int("tensor_num_per_layer", tensor_num_per_layer, 1, UINT32_MAX)
    if src_range is None and dst_range is None and tensor_num_per_layer == 2:
        return None  # every tensor of both caches
    src = _layer_bounds("src_layer_range", src_range)
    dst = _layer_bounds("dst_layer_range", dst_range)
    return (src[0], src[1], dst[0], dst[1], tensor_num_per_layer)
