"""Argument checks with llm_datadist's error classes: a wrong type is a
TypeError, a value out of range a ValueError. Bools are not ints here."""
import ipaddress
import operator

UINT16_MAX = 2**16 - 1
UINT32_MAX = 2**32 - 1
UINT64_MAX = 2**64 - 1
INT32_MIN, INT32_MAX = -2**31, 2**31 - 1
INT64_MIN, INT64_MAX = -2**63, 2**63 - 1


class _Unset:
    """The default of an argument that has two names: llm_datadist's and
    llmlink's earlier one (see renamed)."""
    __slots__ = ()

    def __repr__(self):
        return "<unset>"


UNSET = _Unset()


def renamed(name, value, old_name, old_value, default=UNSET):
    """One argument under llm_datadist's name and under llmlink's earlier
    name, kept as a keyword alias: the value given under either name, else
    default (none: the argument is required). Both at once is a TypeError,
    as Python's own "multiple values" is."""
    if old_value is not UNSET:
        if value is not UNSET:
            raise TypeError(f"got both {name} and {old_name} (its older name): pass one")
        value = old_value
    if value is UNSET:
        if default is UNSET:
            raise TypeError(f"missing required argument: {name}")
        value = default
    return value


def check_type(name, value, types):
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in _as_tuple(types)):
        raise TypeError(f"{name} must be {_names(types)}, not {type(value).__name__}")
    return value


def check_int(name, value, lo, hi):
    """value as an int in [lo, hi]. Anything with __index__ counts (numpy
    integers, as tensor addresses often are); bools and floats do not."""
    if isinstance(value, bool) or not hasattr(type(value), "__index__"):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    value = operator.index(value)
    if not lo <= value <= hi:
        raise ValueError(f"{name} is {value}, must be in [{lo}, {hi}]")
    return value


def check_uint64(name, value):
    return check_int(name, value, 0, UINT64_MAX)


def check_timeout(name, value):
    # llm_datadist: an int32, and > 0.
    check_int(name, value, INT32_MIN, INT32_MAX)
    if value <= 0:
        raise ValueError(f"{name} is {value}, must be greater than 0")
    return value


def check_list_of(name, value, item_type):
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"{name} must be a list or tuple, not {type(value).__name__}")
    for i, item in enumerate(value):
        if not isinstance(item, item_type):
            raise TypeError(f"{name}[{i}] must be {_names(item_type)}, not {type(item).__name__}")
    return list(value)


def check_int_list(name, value, lo, hi):
    if not isinstance(value, (list, tuple, range)):
        raise TypeError(f"{name} must be a list or tuple of ints, not {type(value).__name__}")
    return [check_int(f"{name}[{i}]", v, lo, hi) for i, v in enumerate(value)]


def check_ip(name, ip):
    """An IPv4/IPv6 literal, or an int: llm_datadist's IPv4 as a uint32 in
    little-endian byte order (1.2.3.4 is 0x04030201). Returns the text."""
    if isinstance(ip, bool) or not isinstance(ip, (str, int)):
        raise TypeError(f"{name} must be a str or int, not {type(ip).__name__}")
    if isinstance(ip, int):
        check_int(name, ip, 0, UINT32_MAX)
        return str(ipaddress.IPv4Address(ip.to_bytes(4, "little")))
    try:
        return str(ipaddress.ip_address(ip))
    except ValueError:
        raise ValueError(f"{name} {ip!r} is not an IPv4 or IPv6 address") from None


def _as_tuple(types):
    return types if isinstance(types, tuple) else (types,)


def _names(types):
    return " or ".join(t.__name__ for t in _as_tuple(types))
