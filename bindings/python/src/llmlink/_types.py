"""The value types of llm_datadist: roles, data types, cache descriptions,
cache keys and caches. Keys and descs hand the SWIG layer plain tuples
(see swig/llmlink.i for their layout)."""
from enum import Enum, IntEnum
from math import prod

from . import capi
from ._checks import (INT64_MAX, UINT32_MAX, UINT64_MAX, UNSET, check_int, check_int_list,
                      check_type, check_uint64, renamed)

# CacheKey's "no prefix": llmlink's -1 (the C ABI's int64 prefix_id), or
# llm_datadist's 2**64-1 (its uint64 default), which is the same bits.
NO_PREFIX = -1


class LLMRole(Enum):
    PROMPT = capi.LLMLINK_ROLE_PROMPT
    DECODER = capi.LLMLINK_ROLE_DECODER
    MIX = capi.LLMLINK_ROLE_MIX


class DataType(Enum):
    DT_FLOAT = capi.LLMLINK_DT_FLOAT
    DT_FLOAT16 = capi.LLMLINK_DT_FLOAT16
    DT_INT8 = capi.LLMLINK_DT_INT8
    DT_INT32 = capi.LLMLINK_DT_INT32
    DT_UINT8 = capi.LLMLINK_DT_UINT8
    DT_INT16 = capi.LLMLINK_DT_INT16
    DT_UINT16 = capi.LLMLINK_DT_UINT16
    DT_UINT32 = capi.LLMLINK_DT_UINT32
    DT_INT64 = capi.LLMLINK_DT_INT64
    DT_UINT64 = capi.LLMLINK_DT_UINT64
    DT_DOUBLE = capi.LLMLINK_DT_DOUBLE
    DT_BOOL = capi.LLMLINK_DT_BOOL
    DT_BF16 = capi.LLMLINK_DT_BF16

    @property
    def itemsize(self) -> int:
        return _ITEMSIZE[self]


_ITEMSIZE = {
    DataType.DT_FLOAT: 4, DataType.DT_FLOAT16: 2, DataType.DT_INT8: 1, DataType.DT_INT32: 4,
    DataType.DT_UINT8: 1, DataType.DT_INT16: 2, DataType.DT_UINT16: 2, DataType.DT_UINT32: 4,
    DataType.DT_INT64: 8, DataType.DT_UINT64: 8, DataType.DT_DOUBLE: 8, DataType.DT_BOOL: 1,
    DataType.DT_BF16: 2,
}


class Placement(Enum):
    HOST = capi.LLMLINK_PLACEMENT_HOST
    DEVICE = capi.LLMLINK_PLACEMENT_DEVICE


class RdmaProtection(IntEnum):
    """How the NIC enforces a link's RDMA grants (llmlink_rdma_protection_t),
    in link_stats(cluster_id)["rdma_protection"]. An IntEnum: it compares
    equal to the C value, which is never renumbered."""
    NONE = capi.LLMLINK_RDMA_PROTECTION_NONE          # the link moves no byte over RDMA
    WINDOW = capi.LLMLINK_RDMA_PROTECTION_WINDOW      # a memory window per grant
    LINK_PD = capi.LLMLINK_RDMA_PROTECTION_LINK_PD    # a protection domain per link
    REGION = capi.LLMLINK_RDMA_PROTECTION_REGION      # an rkey over the whole tensor


def rdma_protection_of(value: int):
    """RdmaProtection for value; a value this version does not know stays an
    int (a newer library may add one: it must not turn into a crash)."""
    try:
        return RdmaProtection(value)
    except ValueError:
        return value


class CacheDesc:
    """num_tensors tensors of one shape and data type. shape[0] is the batch
    size (register_cache) or the block count (register_blocks_cache).

    placement defaults to HOST: llmlink moves host memory (llm_datadist's
    default, DEVICE, is refused by the engine with LLM_FEATURE_NOT_ENABLED)."""

    def __init__(self, num_tensors, shape, data_type, placement=Placement.HOST):
        self._num_tensors = check_int("num_tensors", num_tensors, 1, UINT32_MAX)
        self._shape = tuple(check_int_list("shape", shape, 1, INT64_MAX))
        if not self._shape:
            raise ValueError("shape must have at least one dimension")
        self._data_type = check_type("data_type", data_type, DataType)
        self._placement = check_type("placement", placement, Placement)

    num_tensors = property(lambda self: self._num_tensors)
    shape = property(lambda self: self._shape)
    data_type = property(lambda self: self._data_type)
    placement = property(lambda self: self._placement)

    @property
    def size(self) -> int:
        """Bytes of one tensor."""
        return prod(self._shape) * self._data_type.itemsize

    def _c(self):
        return (self._num_tensors, self._data_type.value, self._placement.value, self._shape)

    def __repr__(self):
        return (f"CacheDesc(num_tensors={self._num_tensors}, shape={list(self._shape)}, "
                f"data_type={self._data_type}, placement={self._placement})")


class CacheKey:
    """Names one batch entry of a cache held by cluster_id (llm_datadist's
    name; prompt_cluster_id, llmlink's earlier one, is a keyword alias).
    prefix_id -1 or 2**64-1 (llm_datadist's default) both mean no prefix,
    read back as -1."""

    def __init__(self, cluster_id=UNSET, req_id=UNSET, model_id=0, prefix_id=NO_PREFIX, *,
                 prompt_cluster_id=UNSET):
        cluster_id = renamed("cluster_id", cluster_id, "prompt_cluster_id", prompt_cluster_id)
        if req_id is UNSET:
            raise TypeError("missing required argument: req_id")
        self._cluster_id = check_uint64("cluster_id", cluster_id)
        self._req_id = check_uint64("req_id", req_id)
        self._model_id = check_uint64("model_id", model_id)
        self._prefix_id = _prefix_id(prefix_id)

    cluster_id = property(lambda self: self._cluster_id)
    prompt_cluster_id = cluster_id
    req_id = property(lambda self: self._req_id)
    model_id = property(lambda self: self._model_id)
    prefix_id = property(lambda self: self._prefix_id)

    def _c(self):
        return (capi.LLMLINK_KEY_CACHE, self._cluster_id, self._req_id, self._model_id,
                self._prefix_id, 0, 0)

    def __repr__(self):
        return (f"CacheKey(cluster_id={self._cluster_id}, req_id={self._req_id}, "
                f"model_id={self._model_id}, prefix_id={self._prefix_id})")


def _prefix_id(prefix_id):
    check_int("prefix_id", prefix_id, -1, UINT64_MAX)
    if prefix_id == UINT64_MAX:
        return NO_PREFIX
    if prefix_id > INT64_MAX:
        raise ValueError(f"prefix_id is {prefix_id}, must be in [-1, {INT64_MAX}] "
                         f"or {UINT64_MAX} (no prefix)")
    return int(prefix_id)


class CacheKeyByIdAndIndex:
    """Names batch entry batch_index of cache cache_id held by cluster_id."""

    def __init__(self, cluster_id, cache_id, batch_index=0):
        self._cluster_id = check_uint64("cluster_id", cluster_id)
        self._cache_id = check_int("cache_id", cache_id, 1, INT64_MAX)
        self._batch_index = check_int("batch_index", batch_index, 0, UINT32_MAX)

    cluster_id = property(lambda self: self._cluster_id)
    cache_id = property(lambda self: self._cache_id)
    batch_index = property(lambda self: self._batch_index)

    def _c(self):
        return (capi.LLMLINK_KEY_ID_AND_INDEX, self._cluster_id, 0, 0, NO_PREFIX,
                self._cache_id, self._batch_index)

    def __repr__(self):
        return (f"CacheKeyByIdAndIndex(cluster_id={self._cluster_id}, cache_id={self._cache_id}, "
                f"batch_index={self._batch_index})")


class BlocksCacheKey:
    """Names the blocks cache of model_id held by cluster_id (llm_datadist's
    name; prompt_cluster_id, llmlink's earlier one, is a keyword alias)."""

    def __init__(self, cluster_id=UNSET, model_id=0, *, prompt_cluster_id=UNSET):
        cluster_id = renamed("cluster_id", cluster_id, "prompt_cluster_id", prompt_cluster_id)
        self._cluster_id = check_uint64("cluster_id", cluster_id)
        self._model_id = check_uint64("model_id", model_id)

    cluster_id = property(lambda self: self._cluster_id)
    prompt_cluster_id = cluster_id
    model_id = property(lambda self: self._model_id)

    def _c(self):
        return (capi.LLMLINK_KEY_BLOCKS, self._cluster_id, 0, self._model_id, NO_PREFIX, 0, 0)

    def __repr__(self):
        return f"BlocksCacheKey(cluster_id={self._cluster_id}, model_id={self._model_id})"


class Cache:
    """A registered or allocated cache: its id, desc and tensor addresses."""

    def __init__(self, cache_id, cache_desc, tensor_addrs, allocated=False):
        self._cache_id = cache_id
        self._cache_desc = cache_desc
        self._tensor_addrs = list(tensor_addrs)
        self._allocated = allocated

    cache_id = property(lambda self: self._cache_id)
    cache_desc = property(lambda self: self._cache_desc)
    tensor_addrs = property(lambda self: list(self._tensor_addrs))

    @property
    def per_device_tensor_addrs(self):
        # llm_datadist's shape: one address list per device; llmlink has one.
        return [list(self._tensor_addrs)]

    def tensor_buffer(self, index: int) -> memoryview:
        """A writable memoryview (bytes) over tensor index, without a copy:
        numpy.frombuffer(cache.tensor_buffer(0), dtype=...) reads it in place.
        Valid while the memory is: until deallocate_cache and the cache's
        keys are gone (allocated), or as long as the caller keeps it
        (registered)."""
        check_int("index", index, 0, len(self._tensor_addrs) - 1)
        return capi.llk_py_memoryview(self._tensor_addrs[index], self._cache_desc.size)

    def __repr__(self):
        return f"Cache(cache_id={self._cache_id}, {self._cache_desc!r})"
