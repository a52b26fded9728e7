"""LLMClusterInfo: which remote cluster to link to, and over which NICs."""
from ._checks import UINT16_MAX, check_int, check_ip, check_type, check_uint64
from ._types import LLMRole


class LLMClusterInfo:
    """remote_cluster_id and the ip infos of both ends. Each ip info is kept
    as (ip, port) with ip as text (llm_datadist keeps a uint32; an int ip
    is accepted and converted, IPv6 literals work too)."""

    def __init__(self):
        self._remote_cluster_id = None
        self._remote_role_type = None
        self._local_ip_info_list = []
        self._remote_ip_info_list = []

    @property
    def remote_cluster_id(self):
        return self._remote_cluster_id

    @remote_cluster_id.setter
    def remote_cluster_id(self, value):
        self._remote_cluster_id = check_uint64("remote_cluster_id", value)

    @property
    def remote_role_type(self):
        """The role the remote engine must have (PROMPT or MIX: links go to
        engines that accept them); None accepts either."""
        return self._remote_role_type

    @remote_role_type.setter
    def remote_role_type(self, value):
        if value is not None:
            check_type("remote_role_type", value, LLMRole)
            if value is LLMRole.DECODER:
                raise ValueError("remote_role_type DECODER: a link goes to a PROMPT or MIX engine")
        self._remote_role_type = value

    def append_local_ip_info(self, ip, port):
        self._local_ip_info_list.append(_ip_info(ip, port))

    def append_remote_ip_info(self, ip, port):
        self._remote_ip_info_list.append(_ip_info(ip, port))

    @property
    def local_ip_info_list(self):
        return list(self._local_ip_info_list)

    @property
    def remote_ip_info_list(self):
        return list(self._remote_ip_info_list)

    def _c(self, index):
        if self._remote_cluster_id is None:
            raise ValueError(f"clusters[{index}].remote_cluster_id is not set")
        role = 0 if self._remote_role_type is None else self._remote_role_type.value
        return (self._remote_cluster_id, role, self._local_ip_info_list,
                self._remote_ip_info_list)

    def __repr__(self):
        return (f"LLMClusterInfo(remote_cluster_id={self._remote_cluster_id}, "
                f"local={self._local_ip_info_list}, remote={self._remote_ip_info_list})")


def _ip_info(ip, port):
    text = check_ip("ip", ip)
    check_int("port", port, 0, UINT16_MAX)
    return (text, port)
