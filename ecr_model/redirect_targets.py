"""Where an upstream registry's redirect to another origin may lead a pull through cache.

ECR's pull through cache reaches its upstreams, and their blob storage, over the internet:
a redirect leads to a globally routable address only. Private networks (RFC 1918, CGNAT
100.64.0.0/10, IPv6 ULA) are allowed only where the operator says the upstream's storage lives
there (the gateway's ``private_redirects``). Loopback, link-local, unspecified, multicast and
the cloud metadata services are refused whatever the setting, and so is an IPv6 address that
stands for such an IPv4 address (mapped, translated, IPv4-compatible, NAT64) or reaches one
through a tunnel (6to4, Teredo). A pull through cache whose upstream is itself on loopback (a
test's registry) may follow its redirects on loopback.

A literal address is judged before any connection (:func:`host_refusal`); a name by what it
resolves to, when the connection is made (:class:`TargetResolver`), so a name that resolves
differently the second time gains nothing.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Literal

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
# "private": refused unless private networks are allowed; "internal": refused always.
Refusal = Literal["private", "internal"]


def _networks(*cidrs: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


# What an operator's own network uses: RFC 1918, CGNAT (RFC 6598) and IPv6 ULA (RFC 4193).
PRIVATE_NETWORKS = _networks("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
                             "100.64.0.0/10", "fc00::/7")
# Cloud metadata and platform services, some inside the ranges above or even global:
# AWS, GCP, Azure and OCI on IPv4 (link-local anyway); Alibaba Cloud (CGNAT); Azure's
# WireServer (a global address only its VMs reach); AWS's instance services on IPv6 (metadata
# fd00:ec2::254, DNS, time, EKS pod identity); GCP's and OCI's metadata on IPv6.
METADATA = _networks("169.254.169.254/32", "100.100.100.200/32", "168.63.129.16/32",
                     "fd00:ec2::/64", "fd20:ce::254/128", "fd00:c1::a9fe:a9fe/128")
# IPv6 forms whose packets go to the IPv4 address in their last 32 bits.
_EMBEDDING = _networks("::ffff:0:0/96", "::ffff:0:0:0/96", "::/96", "64:ff9b::/96")
# Transition tunnels (6to4, Teredo): where they lead depends on relays and the IPv4 addresses
# they embed; no registry's storage uses them.
_TUNNELS = _networks("2002::/16", "2001::/32")
# Not globally routable, though Python's is_global says so before 3.13 (IANA's special
# purpose registries): IETF protocol assignments, the 6to4 relay anycast, local-use NAT64,
# IPv6 documentation, SRv6 SIDs and the deprecated site-local addresses.
_NOT_GLOBAL = _networks("192.0.0.0/24", "192.88.99.0/24", "64:ff9b:1::/48", "3fff::/20",
                        "5f00::/16", "fec0::/10")


def refusal(address: Address, private: bool = False, loopback: bool = False) -> Refusal | None:
    """Why a redirect may not lead to ``address`` (None: it may). ``private``: private
    networks are allowed; ``loopback``: loopback is (the upstream itself is on loopback)."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:  # a zone qualifies link-local addresses; no global one has one
            return "internal"
        if any(address in n for n in _TUNNELS):
            return "internal"
        if int(address) > 1 and any(address in n for n in _EMBEDDING):  # not :: nor ::1
            address = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if loopback and address.is_loopback:
        return None
    if any(address in n for n in METADATA):
        return "internal"
    if any(address in n for n in PRIVATE_NETWORKS):
        return None if private else "private"
    if (address.is_global and not address.is_multicast
            and not any(address in n for n in _NOT_GLOBAL)):
        return None
    return "internal"


def host_refusal(host: str, private: bool = False, loopback: bool = False) -> Refusal | None:
    """Why a redirect may not lead to the URL host ``host`` when it is an address (None for a
    name: its addresses are judged when it is resolved). Anything aiohttp would connect to as
    an address without resolving it (digits and dots, or a colon) must be a plain address:
    ``127.1``, ``2130706433`` or ``127.0.0.1.`` would reach loopback unjudged."""
    bare = host.strip("[]")
    if ":" not in bare and not bare.replace(".", "").isdigit():
        return None
    try:
        address = ipaddress.ip_address(bare)
    except ValueError:
        return "internal"
    return refusal(address, private, loopback)


class RefusedAddress(OSError):
    """A redirect's host resolved to an address it may not lead to (``why``)."""

    def __init__(self, message: str, why: Refusal) -> None:
        super().__init__(message)
        self.why = why


class TargetResolver(AbstractResolver):
    """The system's resolver, refusing a host with any address :func:`refusal` refuses."""

    def __init__(self, private: bool = False, loopback: bool = False,
                 inner: AbstractResolver | None = None) -> None:
        self._private, self._loopback = private, loopback
        self._inner = inner or aiohttp.DefaultResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        refused: set[Refusal] = set()
        for one in found:
            try:
                why = refusal(ipaddress.ip_address(one["host"]), self._private, self._loopback)
            except ValueError:  # a zone id the resolver wrote as Python does not, or worse
                why = "internal"
            if why is not None:
                refused.add(why)
        if refused:  # "private" only when the setting would allow every address refused
            why = "internal" if "internal" in refused else "private"
            raise RefusedAddress(f"{host} resolves to a refused ({why}) address", why)
        return found

    async def close(self) -> None:
        await self._inner.close()


# The hops a caller following redirects itself takes from one URL, and what counts as one.
MAX_REDIRECTS = 5
REDIRECTS = frozenset({301, 302, 303, 307, 308})


Origin = tuple[str, str, int | None]


def origin(url: URL) -> Origin:
    """(scheme, host, port) of ``url``, lower case, the port made explicit: what a redirect
    stays on or leaves."""
    return (url.scheme.lower(), (url.host or "").lower(), url.port)


def resolver_refusal(exc: aiohttp.ClientConnectorError) -> Refusal | None:
    """Why a connection was not made when :class:`TargetResolver` refused its host (None:
    it failed for another reason)."""
    return exc.os_error.why if isinstance(exc.os_error, RefusedAddress) else None


def next_hop(response: aiohttp.ClientResponse) -> URL | None:
    """Where a redirect ``response`` leads, its ``Location`` resolved against its URL, the
    response released; None when it is not a redirect (it is the answer). ValueError for a
    redirect without a usable ``Location``."""
    if response.status not in REDIRECTS:
        return None
    location = response.headers.get("Location")
    response.release()
    if not location:
        raise ValueError("a redirect without a Location")
    return response.url.join(URL(location))
