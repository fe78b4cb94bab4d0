"""What a host name or address in a URL says about where it leads."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Mapping


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name, an address, an IPv6 address in brackets) is this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: assume it is reachable from elsewhere


def is_local_name(host: str, names: frozenset[str] = frozenset()) -> bool:
    """Whether ``host`` (a Host header: name or address, perhaps with a port) names a loopback
    listener the way its own clients do: an IP address, ``localhost`` or a ``.localhost``
    name (which browsers resolve to loopback themselves, never through DNS), or one of
    ``names`` (lower case, without a trailing dot). Any other name may be a web page's own,
    pointed at 127.0.0.1 (DNS rebinding)."""
    if host.startswith("["):
        bracketed, _, _ = host[1:].partition("]")
        return _is_address(bracketed)
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if _is_address(name):
        return True
    name = name.lower().rstrip(".")
    return name == "localhost" or name.endswith(".localhost") or name in names


def sent_by_web_page(headers: Mapping[str, str]) -> bool:
    """Whether a browser marked the request as a web page's: every POST and every
    cross-origin request carries ``Origin``, and browsers add ``Sec-Fetch-Site``; HTTP
    clients of registries and of AWS APIs send neither."""
    return "Origin" in headers or "Sec-Fetch-Site" in headers


@functools.lru_cache(maxsize=1024)  # a Host header is checked on every request
def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
