"""Type hints for the public names of llmlink (the llm_datadist API)."""
import logging
from enum import Enum, IntEnum
from typing import (Any, Dict, Generator, List, NamedTuple, Optional, Sequence, Tuple, Union,
                    overload)

__version__: str

class LLMStatusCode(IntEnum):
    LLM_SUCCESS: int
    LLM_FAILED: int
    LLM_WAIT_PROCESS_TIMEOUT: int
    LLM_KV_CACHE_NOT_EXIST: int
    LLM_REPEAT_REQUEST: int
    LLM_REQUEST_ALREADY_COMPLETED: int
    LLM_PARAM_INVALID: int
    LLM_ENGINE_FINALIZED: int
    LLM_NOT_YET_LINK: int
    LLM_ALREADY_LINK: int
    LLM_LINK_FAILED: int
    LLM_UNLINK_FAILED: int
    LLM_NOTIFY_PROMPT_UNLINK_FAILED: int
    LLM_CLUSTER_NUM_EXCEED_LIMIT: int
    LLM_PROCESSING_LINK: int
    LLM_DEVICE_OUT_OF_MEMORY: int
    LLM_PREFIX_ALREADY_EXIST: int
    LLM_PREFIX_NOT_EXIST: int
    LLM_SEQ_LEN_OVER_LIMIT: int
    LLM_NO_FREE_BLOCK: int
    LLM_BLOCKS_OUT_OF_MEMORY: int
    LLM_EXIST_LINK: int
    LLM_FEATURE_NOT_ENABLED: int
    LLM_TIMEOUT: int
    LLM_LINK_BUSY: int
    LLM_OUT_OF_MEMORY: int
    LLMLINK_NOT_INITIALIZED: int
    LLMLINK_ALREADY_INITIALIZED: int
    LLMLINK_VERSION_MISMATCH: int
    LLMLINK_PROTOCOL_ERROR: int
    LLMLINK_ROLE_NOT_ALLOWED: int
    LLMLINK_CLUSTER_ID_MISMATCH: int
    LLMLINK_NETWORK_ERROR: int
    LLMLINK_CACHE_KEY_ALREADY_EXIST: int
    LLMLINK_CACHE_IN_USE: int
    LLMLINK_AUTH_FAILED: int
    LLMLINK_ACCESS_DENIED: int
    LLMLINK_TASK_PENDING: int
    LLMLINK_CANCELLED: int
    LLMLINK_CANCELLED_LINK_CLOSED: int
    LLMLINK_NOTIFY_QUEUE_FULL: int

class LLMException(Exception):
    def __init__(self, message: str = ..., status_code: Union[LLMStatusCode, int] = ...) -> None: ...
    @property
    def status_code(self) -> Union[LLMStatusCode, int]: ...

class LLMRole(Enum):
    PROMPT: int
    DECODER: int
    MIX: int

class DataType(Enum):
    DT_FLOAT: int
    DT_FLOAT16: int
    DT_INT8: int
    DT_INT32: int
    DT_UINT8: int
    DT_INT16: int
    DT_UINT16: int
    DT_UINT32: int
    DT_INT64: int
    DT_UINT64: int
    DT_DOUBLE: int
    DT_BOOL: int
    DT_BF16: int
    @property
    def itemsize(self) -> int: ...

class Placement(Enum):
    HOST: int
    DEVICE: int

class RdmaProtection(IntEnum):
    NONE: int
    WINDOW: int
    LINK_PD: int
    REGION: int

IpInfo = Tuple[str, int]

class LLMClusterInfo:
    remote_cluster_id: Optional[int]
    remote_role_type: Optional[LLMRole]
    def __init__(self) -> None: ...
    def append_local_ip_info(self, ip: Union[str, int], port: int) -> None: ...
    def append_remote_ip_info(self, ip: Union[str, int], port: int) -> None: ...
    @property
    def local_ip_info_list(self) -> List[IpInfo]: ...
    @property
    def remote_ip_info_list(self) -> List[IpInfo]: ...

class LLMConfig:
    device_id: Union[int, Sequence[int], None]
    sync_kv_timeout: Optional[int]
    listen_ip_info: Optional[str]
    enable_cache_manager: Optional[bool]
    enable_remote_cache_accessible: Optional[bool]
    enable_switch_role: Optional[bool]
    mem_pool_cfg: Optional[str]
    host_mem_pool_cfg: Optional[str]
    buf_pool_cfg: Optional[str]
    local_comm_res: Optional[str]
    deploy_res_path: Optional[str]
    link_total_time: Optional[int]
    link_retry_count: Optional[int]
    rdma_traffic_class: Optional[int]
    rdma_service_level: Optional[int]
    ge_options: Dict[str, str]
    def __init__(self) -> None: ...
    def generate_options(self) -> Dict[str, str]: ...

class CacheDesc:
    def __init__(self, num_tensors: int, shape: Sequence[int], data_type: DataType,
                 placement: Placement = ...) -> None: ...
    @property
    def num_tensors(self) -> int: ...
    @property
    def shape(self) -> Tuple[int, ...]: ...
    @property
    def data_type(self) -> DataType: ...
    @property
    def placement(self) -> Placement: ...
    @property
    def size(self) -> int: ...

class CacheKey:
    # prompt_cluster_id: llmlink's earlier name of cluster_id, a keyword alias.
    # prefix_id: -1 or 2**64-1 for no prefix (read back as -1).
    @overload
    def __init__(self, cluster_id: int, req_id: int, model_id: int = ...,
                 prefix_id: int = ...) -> None: ...
    @overload
    def __init__(self, *, prompt_cluster_id: int, req_id: int, model_id: int = ...,
                 prefix_id: int = ...) -> None: ...
    cluster_id: int
    prompt_cluster_id: int
    req_id: int
    model_id: int
    prefix_id: int

class CacheKeyByIdAndIndex:
    def __init__(self, cluster_id: int, cache_id: int, batch_index: int = ...) -> None: ...
    cluster_id: int
    cache_id: int
    batch_index: int

class BlocksCacheKey:
    # prompt_cluster_id: llmlink's earlier name of cluster_id, a keyword alias.
    @overload
    def __init__(self, cluster_id: int, model_id: int = ...) -> None: ...
    @overload
    def __init__(self, *, prompt_cluster_id: int, model_id: int = ...) -> None: ...
    cluster_id: int
    prompt_cluster_id: int
    model_id: int

class Cache:
    @property
    def cache_id(self) -> int: ...
    @property
    def cache_desc(self) -> CacheDesc: ...
    @property
    def tensor_addrs(self) -> List[int]: ...
    @property
    def per_device_tensor_addrs(self) -> List[List[int]]: ...
    def tensor_buffer(self, index: int) -> memoryview: ...

PullKey = Union[CacheKey, CacheKeyByIdAndIndex]

class Transfer:
    # A pull or push in flight; released by close(), a with-block, the
    # garbage collector, or finalize (a running task is cancelled first).
    @property
    def status(self) -> Union[LLMStatusCode, int]: ...
    @property
    def message(self) -> str: ...
    def done(self) -> bool: ...
    def wait(self, timeout_ms: Optional[int] = ...) -> bool: ...
    def cancel(self) -> Union[LLMStatusCode, int]: ...
    def close(self) -> None: ...
    def __enter__(self) -> "Transfer": ...
    def __exit__(self, *exc: Any) -> None: ...
    def __await__(self) -> Generator[Any, None, None]: ...

class CacheTask(Transfer):
    def synchronize(self, timeout_in_millis: Optional[int] = ...) -> Union[LLMStatusCode, int]: ...
    def get_results(self, timeout_in_millis: Optional[int] = ...
                    ) -> List[Optional[Union[LLMStatusCode, int]]]: ...

class LayerSynchronizer:
    def synchronize_layer(self, layer_index: int, timeout_in_millis: Optional[int]) -> bool: ...

class TransferWithCacheKeyConfig:
    def __init__(self, cache_key: Union[BlocksCacheKey, CacheKeyByIdAndIndex, CacheKey],
                 src_layer_range: Optional[range] = ..., dst_layer_range: Optional[range] = ...,
                 src_batch_index: int = ...) -> None: ...
    cache_key: Union[BlocksCacheKey, CacheKeyByIdAndIndex, CacheKey]
    src_layer_range: Optional[range]
    dst_layer_range: Optional[range]
    src_batch_index: int

class TransferConfig:
    # Accepted; transfer_cache_async raises LLM_FEATURE_NOT_ENABLED for it.
    def __init__(self, dst_cluster_id: int, dst_addrs: Sequence[int],
                 src_layer_range: Optional[range] = ..., src_batch_index: int = ...) -> None: ...
    dst_cluster_id: int
    dst_addrs: List[int]
    src_layer_range: Optional[range]
    src_batch_index: int

class Notification(NamedTuple):
    cluster_id: int
    data: bytes

class CacheManager:
    def register_cache(self, cache_desc: CacheDesc, addrs: Sequence[int],
                       cache_keys: Sequence[CacheKey] = ...,
                       remote_accessible: Optional[bool] = ...) -> Cache: ...
    # blocks_key: llmlink's earlier name of blocks_cache_key, a keyword alias.
    def register_blocks_cache(self, cache_desc: CacheDesc, addrs: Sequence[int],
                              blocks_cache_key: Optional[BlocksCacheKey] = ...,
                              remote_accessible: Optional[bool] = ..., *,
                              blocks_key: Optional[BlocksCacheKey] = ...) -> Cache: ...
    def unregister_cache(self, cache_id: Union[int, Cache]) -> None: ...
    def allocate_cache(self, cache_desc: CacheDesc, cache_keys: Sequence[CacheKey] = ...) -> Cache: ...
    def allocate_blocks_cache(self, cache_desc: CacheDesc,
                              blocks_cache_key: Optional[BlocksCacheKey] = ..., *,
                              blocks_key: Optional[BlocksCacheKey] = ...) -> Cache: ...
    def deallocate_cache(self, cache: Union[Cache, int]) -> None: ...
    def deallocate_blocks_cache(self, cache: Union[Cache, int]) -> None: ...
    def remove_cache_key(self, cache_key: Union[CacheKey, BlocksCacheKey]) -> None: ...
    def pull_cache(self, cache_key: PullKey, cache: Cache, batch_index: int = ..., size: int = ...,
                   src_layer_range: Optional[range] = ..., dst_layer_range: Optional[range] = ...,
                   tensor_num_per_layer: int = ...) -> None: ...
    def pull_blocks(self, src_cache_key: Union[PullKey, BlocksCacheKey], dst_cache: Cache,
                    src_blocks: Optional[Sequence[int]] = ..., dst_blocks: Sequence[int] = ...,
                    src_layer_range: Optional[range] = ..., dst_layer_range: Optional[range] = ...,
                    tensor_num_per_layer: int = ...) -> None: ...
    def push_blocks(self, dst_cache_key: BlocksCacheKey, src_cache: Cache,
                    src_blocks: Sequence[int] = ..., dst_blocks: Sequence[int] = ...,
                    src_layer_range: Optional[range] = ..., dst_layer_range: Optional[range] = ...,
                    tensor_num_per_layer: int = ...) -> None: ...
    def push_cache(self, dst_cache_key: PullKey, src_cache: Cache, src_batch_index: int = ...,
                   src_layer_range: Optional[range] = ..., dst_layer_range: Optional[range] = ...,
                   size: int = ..., tensor_num_per_layer: int = ...) -> None: ...
    # The same without waiting. notify: bytes (1..4096) the peer gets once
    # every byte is in place; timeout_ms: None for llm.SyncKvCacheWaitTime.
    def pull_cache_async(self, cache_key: PullKey, cache: Cache, batch_index: int = ...,
                         size: int = ..., src_layer_range: Optional[range] = ...,
                         dst_layer_range: Optional[range] = ..., tensor_num_per_layer: int = ...,
                         *, notify: Optional[bytes] = ..., timeout_ms: Optional[int] = ...
                         ) -> Transfer: ...
    def pull_blocks_async(self, src_cache_key: Union[PullKey, BlocksCacheKey], dst_cache: Cache,
                          src_blocks: Optional[Sequence[int]] = ..., dst_blocks: Sequence[int] = ...,
                          src_layer_range: Optional[range] = ...,
                          dst_layer_range: Optional[range] = ..., tensor_num_per_layer: int = ...,
                          *, notify: Optional[bytes] = ..., timeout_ms: Optional[int] = ...
                          ) -> Transfer: ...
    def push_blocks_async(self, dst_cache_key: BlocksCacheKey, src_cache: Cache,
                          src_blocks: Sequence[int] = ..., dst_blocks: Sequence[int] = ...,
                          src_layer_range: Optional[range] = ...,
                          dst_layer_range: Optional[range] = ..., tensor_num_per_layer: int = ...,
                          *, notify: Optional[bytes] = ..., timeout_ms: Optional[int] = ...
                          ) -> Transfer: ...
    def push_cache_async(self, dst_cache_key: PullKey, src_cache: Cache, src_batch_index: int = ...,
                         src_layer_range: Optional[range] = ...,
                         dst_layer_range: Optional[range] = ..., size: int = ...,
                         tensor_num_per_layer: int = ..., *, notify: Optional[bytes] = ...,
                         timeout_ms: Optional[int] = ...) -> Transfer: ...
    def transfer_cache_async(
            self, src_cache: Cache, layer_synchronizer: LayerSynchronizer,
            transfer_configs: Sequence[Union[TransferWithCacheKeyConfig, TransferConfig]],
            src_block_indices: Optional[Sequence[int]] = ...,
            dst_block_indices: Optional[Sequence[int]] = ...,
            dst_block_memory_size: Optional[int] = ..., *,
            timeout_ms: Optional[int] = ...) -> CacheTask: ...

LinkOutcome = Tuple[LLMStatusCode, List[LLMStatusCode]]

class LLMDataDist:
    def __init__(self, role: LLMRole, cluster_id: int) -> None: ...
    def init(self, options: Dict[str, str]) -> None: ...
    def finalize(self) -> None: ...
    def link_clusters(self, clusters: Union[List[LLMClusterInfo], Tuple[LLMClusterInfo, ...]],
                      timeout: int = ...) -> LinkOutcome: ...
    def unlink_clusters(self, clusters: Union[List[LLMClusterInfo], Tuple[LLMClusterInfo, ...]],
                        timeout: int = ..., force: bool = ...) -> LinkOutcome: ...
    def check_link_status(self, remote_cluster_id: int) -> None: ...
    @property
    def cache_manager(self) -> CacheManager: ...
    @property
    def cluster_id(self) -> int: ...
    @property
    def role(self) -> LLMRole: ...
    def get_listen_port(self, index: int = ...) -> int: ...
    # No cluster_id: the engine's link counters; a cluster_id: that link's
    # counters (rdma_protection is an RdmaProtection; rdma_rail_bytes and
    # rdma_rail_mtu are lists of rdma_rails ints).
    @overload
    def link_stats(self) -> Dict[str, int]: ...
    @overload
    def link_stats(self, cluster_id: int) -> Dict[str, Union[int, RdmaProtection, List[int]]]: ...
    def transfer_stats(self) -> Dict[str, int]: ...
    def metrics(self) -> Dict[str, Any]: ...
    def links(self) -> List[Dict[str, Any]]: ...
    def notify(self, cluster_id: int, data: bytes, timeout_ms: int = ...) -> None: ...
    def get_notifies(self, max_count: Optional[int] = ...) -> List[Notification]: ...
    async def next_notify(self) -> Notification: ...

def set_log_level(level: Optional[int]) -> None: ...
