"""llmlink: links LLM decode clusters to prefill clusters and moves their KV
cache; a drop-in for llm_datadist (change `from llm_datadist import ...` to
`from llmlink import ...`)."""
from ._status import LLMException, LLMStatusCode  # first: the C layer raises through it
from . import capi
from ._cache_manager import CacheManager
from ._cluster import LLMClusterInfo
from ._config import LLMConfig
from ._datadist import LLMDataDist
from ._logging import set_log_level
from ._types import (BlocksCacheKey, Cache, CacheDesc, CacheKey, CacheKeyByIdAndIndex, DataType,
                     LLMRole, Placement, RdmaProtection)

if capi.llmlink_version_number() != capi.LLMLINK_VERSION_NUMBER:
    raise ImportError(f"llmlink: the extension was built for {capi.LLMLINK_VERSION_STRING} but "
                      f"reports {capi.llmlink_version_string()}")

__version__ = capi.llmlink_version_string()

__all__ = [
    "BlocksCacheKey", "Cache", "CacheDesc", "CacheKey", "CacheKeyByIdAndIndex", "CacheManager",
    "DataType", "LLMClusterInfo", "LLMConfig", "LLMDataDist", "LLMException", "LLMRole",
    "LLMStatusCode", "Placement", "RdmaProtection", "set_log_level",
]
