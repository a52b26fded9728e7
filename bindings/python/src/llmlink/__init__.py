"""llmlink: links LLM decode clusters to prefill clusters and moves their KV
cache; a drop-in for llm_datadist (change `from llm_datadist import ...` to
`from llmlink import ...`)."""
from ._status import LLMException, LLMStatusCode  # first: the C layer raises through it
from . import capi
from ._cache_manager import CacheManager
from ._cluster import LLMClusterInfo
from ._config import LLMConfig
from ._datadist import LLMDataDist
from ._layerwise import LayerSynchronizer, TransferConfig, TransferWithCacheKeyConfig
from ._logging import set_log_level
from ._notify import Notification
from ._transfer import CacheTask, Transfer
from ._types import (BlocksCacheKey, Cache, CacheDesc, CacheKey, CacheKeyByIdAndIndex, DataType,
                     LLMRole, Placement, RdmaProtection)

if capi.llmlink_version_number() != capi.LLMLINK_VERSION_NUMBER:
    raise ImportError(f"llmlink: the extension was built for {capi.LLMLINK_VERSION_STRING} but "
                      f"reports {capi.llmlink_version_string()}")

__version__ = capi.llmlink_version_string()

__all__ = [
    "BlocksCacheKey", "Cache", "CacheDesc", "CacheKey", "CacheKeyByIdAndIndex", "CacheManager",
    "CacheTask", "DataType", "LayerSynchronizer", "LLMClusterInfo", "LLMConfig", "LLMDataDist",
    "LLMException", "LLMRole", "LLMStatusCode", "Notification", "Placement", "RdmaProtection",
    "Transfer", "TransferConfig", "TransferWithCacheKeyConfig", "set_log_level",
]
