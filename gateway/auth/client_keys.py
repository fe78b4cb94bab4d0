"""Who a caller without a login is for the per-client limits: its address, keyed so that one
client is one key (``limits.client_key``).

An IPv4 client is its address (or, with ``ipv4_prefix_length`` under 32, its network). An
IPv6 client is its /64 (``ipv6_prefix_length``): a single host is routinely handed a whole
/64, and counted per address it would have 2**64 fresh limits (and fill the tables without
end); a site handed a /56 or /48 is that many /64s unless the length is shortened. One that
carries an IPv4 client's address is counted by that address: IPv4-mapped, Teredo, 6to4, and
the NAT64 prefixes (RFC 6052: the well-known ``64:ff9b::/96``, and the operator's own
network-specific ones of 32, 40, 48, 56, 64 or 96 bits, the address after the prefix with
bits 64 to 71, the "u" octet, skipped). Counted by the translator's /64, every IPv4 client
behind it would be one client, and one filling its limit would refuse all the others.

The same keys serve the failed-login limits (gateway/auth/ratelimit.py) and the upload
limits (gateway/oci/limits.py). The address is the one the trusted proxies tell
(gateway/auth/forwarded.py); the keys never widen whose word is believed.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass

from aiohttp import web

from gateway.config import Config
from gateway.config.errors import ConfigError

# NAT64's well-known prefix (RFC 6052): an IPv4 client translated to IPv6 (SIIT, NAT64 in
# front of an IPv6-only service) arrives as this /96 and its own address.
WELL_KNOWN_NAT64 = "64:ff9b::/96"
# The prefix lengths RFC 6052 section 2.2 defines, each with the IPv4 address at its place.
NAT64_PREFIX_LENGTHS = (32, 40, 48, 56, 64, 96)


def parse_nat64_prefixes(values: list[str]) -> tuple[ipaddress.IPv6Network, ...]:
    """The prefixes, longest first (the most specific one decides); ConfigError names the
    bad one and why."""
    prefixes = []
    for i, value in enumerate(values):
        try:
            net = ipaddress.ip_network(value.strip(), strict=False)
        except ValueError:
            raise ConfigError(f"[{i}]", f"is not an IPv6 prefix: {value!r}") from None
        if net.network_address != ipaddress.ip_interface(value.strip()).ip:
            raise ConfigError(f"[{i}]", f"{value!r} has bits set past its length: "
                                        f"the prefix is {str(net)!r}")
        if not isinstance(net, ipaddress.IPv6Network):
            raise ConfigError(f"[{i}]", f"is not an IPv6 prefix: {value!r}")
        if net.prefixlen not in NAT64_PREFIX_LENGTHS:
            raise ConfigError(f"[{i}]", f"{value!r}: a NAT64 prefix is /32, /40, /48, /56, "
                                        f"/64 or /96 (RFC 6052), not /{net.prefixlen}")
        if net.network_address.packed[8]:
            raise ConfigError(f"[{i}]", f"{value!r}: bits 64 to 71 of a NAT64 prefix (the "
                                        "\"u\" octet, RFC 6052) must be zero")
        prefixes.append(net)
    return tuple(sorted(prefixes, key=lambda net: -net.prefixlen))


def embedded_ipv4(ip: ipaddress.IPv6Address, prefix_length: int) -> ipaddress.IPv4Address:
    """The IPv4 address an RFC 6052 address of a ``prefix_length`` prefix carries: the 32 bits
    after the prefix, bits 64 to 71 skipped (for /96, its last 32 bits). The suffix is
    ignored, as translators ignore it."""
    packed = ip.packed
    if prefix_length == 96:
        return ipaddress.IPv4Address(packed[12:])
    start = prefix_length // 8
    without_u = packed[:8] + packed[9:]
    return ipaddress.IPv4Address(without_u[start:start + 4])


@dataclass(frozen=True)
class ClientKeys:
    ipv4_prefix_length: int = 32
    ipv6_prefix_length: int = 64
    nat64_prefixes: tuple[ipaddress.IPv6Network, ...] = (
        ipaddress.IPv6Network(WELL_KNOWN_NAT64),)

    # Asked several times for each request (rates, uploads, downloads, connections), of a
    # few addresses at a time: parsed once each. An attacker's many addresses only churn it.
    @functools.lru_cache(maxsize=4096)  # noqa: B019 (a few instances, living as long as the app)
    def of(self, address: str | None) -> str | None:
        """The key of ``address``: the IPv4 address (or network), the IPv6 prefix, or the IPv4
        address an IPv6 one carries. Anything not an address is its own key."""
        try:
            ip = ipaddress.ip_address(address) if address else None
        except ValueError:
            return address
        if ip is None:
            return address
        if isinstance(ip, ipaddress.IPv6Address):
            carried = self.carried_ipv4(ip)
            if carried is None:
                return str(ipaddress.IPv6Network((ip.packed, self.ipv6_prefix_length),
                                                 strict=False))
            ip = carried
        if self.ipv4_prefix_length == 32:
            return str(ip)
        return str(ipaddress.IPv4Network((ip.packed, self.ipv4_prefix_length), strict=False))

    def carried_ipv4(self, ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        for prefix in self.nat64_prefixes:
            if ip in prefix:
                return embedded_ipv4(ip, prefix.prefixlen)
        if ip.teredo is not None:
            return ip.teredo[1]  # (server, client)
        return ip.sixtofour


def client_keys(config: Config) -> ClientKeys:
    keys = config.limits.client_key
    return ClientKeys(keys.ipv4_prefix_length, keys.ipv6_prefix_length,
                      parse_nat64_prefixes(keys.nat64_prefixes))


DEFAULT_CLIENT_KEYS = ClientKeys()
CLIENT_KEYS = web.AppKey("client_keys", ClientKeys)


def client_keys_of(request: web.Request) -> ClientKeys:
    return request.config_dict.get(CLIENT_KEYS) or DEFAULT_CLIENT_KEYS
