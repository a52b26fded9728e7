"""LLMConfig: llm_datadist's typed options, turned into the string dict
that LLMDataDist.init takes (the C side's option keys)."""
from ._checks import INT32_MAX, check_int, check_type


class _Option:
    """One typed attribute of LLMConfig, stored as its option string."""

    def __init__(self, key, convert):
        self.key = key
        self.convert = convert  # (attribute name, value) -> option string
        self.name = key

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, config, owner=None):
        if config is None:
            return self
        return config._values.get(self.key, (None, None))[0]

    def __set__(self, config, value):
        config._values[self.key] = (value, self.convert(self.name, value))


def _bool(key):
    return _Option(key, lambda name, v: "1" if check_type(name, v, bool) else "0")


def _int(key, lo, hi):
    return _Option(key, lambda name, v: str(check_int(name, v, lo, hi)))


def _str(key):
    return _Option(key, check_type_str)


def check_type_str(name, value):
    return check_type(name, value, str)


def _device_ids(name, value):
    # An id, or a list of them (";"-separated, as ge.exec.deviceId takes).
    ids = value if isinstance(value, (list, tuple)) else [value]
    return ";".join(str(check_int(name, v, 0, INT32_MAX)) for v in ids)


class LLMConfig:
    """Options of LLMDataDist.init. generate_options() gives only what was set."""

    device_id = _Option("ge.exec.deviceId", _device_ids)
    sync_kv_timeout = _int("llm.SyncKvCacheWaitTime", 1, INT32_MAX)
    listen_ip_info = _str("llm.listenIpInfo")
    enable_cache_manager = _bool("llm.EnableCacheManager")
    enable_remote_cache_accessible = _bool("llm.EnableRemoteCacheAccessible")
    enable_switch_role = _bool("llm.EnableSwitchRole")
    mem_pool_cfg = _str("llm.MemPoolConfig")
    host_mem_pool_cfg = _str("llm.HostMemPoolConfig")
    buf_pool_cfg = _str("llm.BufPoolCfg")
    local_comm_res = _str("llm.LocalCommRes")
    deploy_res_path = _str("llm.deployResPath")
    link_total_time = _int("llm.LinkTotalTime", 0, INT32_MAX)
    link_retry_count = _int("llm.LinkRetryCount", 1, 100)
    rdma_traffic_class = _int("llm.RdmaTrafficClass", 0, 255)
    rdma_service_level = _int("llm.RdmaServiceLevel", 0, 7)

    def __init__(self):
        self._values = {}
        self._ge_options = {}

    @property
    def ge_options(self):
        """Further options as {key: value} strings, passed through as they
        are (llmlink.* keys such as llmlink.Transport go here)."""
        return dict(self._ge_options)

    @ge_options.setter
    def ge_options(self, value):
        check_type("ge_options", value, dict)
        for k, v in value.items():
            check_type("ge_options key", k, str)
            check_type(f"ge_options[{k!r}]", v, str)
        self._ge_options = dict(value)

    def generate_options(self):
        options = {key: text for key, (_, text) in self._values.items()}
        options.update(self._ge_options)
        return options
