"""Notifications: small messages between linked engines (llmlink_notify,
llmlink_get_notifies), llmlink's addition to the llm_datadist API."""
from collections import namedtuple

from ._checks import check_type

MAX_NOTIFY_BYTES = 4096


class Notification(namedtuple("Notification", ["cluster_id", "data"])):
    """A received notification: the sender's cluster_id and the bytes."""
    __slots__ = ()


def notify_bytes(name, data):
    """data as bytes of 1..4096 (bytes, bytearray or memoryview: copied, so
    no other thread can change it while the engine reads it)."""
    check_type(name, data, (bytes, bytearray, memoryview))
    data = bytes(data)
    if not 1 <= len(data) <= MAX_NOTIFY_BYTES:
        raise ValueError(f"{name} is {len(data)} bytes, must be 1..{MAX_NOTIFY_BYTES}")
    return data
