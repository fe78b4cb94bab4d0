"""What a request says about its client, believed only from proxies the operator trusts.

``X-Forwarded-Proto``, ``X-Forwarded-Host`` and ``X-Forwarded-For`` are plain request
headers: any client can send them. They are read only when the connection comes from an
address in ``trusted_proxies``; then the client's address is the rightmost one in
``X-Forwarded-For`` that is not itself a trusted proxy (each proxy appends the address it
saw, so the entries left of it are the client's own word).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from aiohttp import web

from gateway.config.errors import ConfigError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(values: list[str]) -> tuple[Network, ...]:
    """CIDRs (a bare address is a /32 or /128); ValueError names the bad one."""
    return tuple(ipaddress.ip_network(value.strip(), strict=False) for value in values)


def check_networks(values: list[str]) -> None:
    """``trusted_proxies`` (called by gateway/config/models.py): each an address or CIDR."""
    for i, value in enumerate(values):
        try:
            parse_networks([value])
        except ValueError:
            raise ConfigError(f"[{i}]", f"is not an address or CIDR: {value!r}") from None


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip().strip('"')
    if text.startswith("["):  # [v6]:port
        text = text[1:].split("]", 1)[0]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


@dataclass(frozen=True)
class ProxyTrust:
    networks: tuple[Network, ...] = ()

    def trusts(self, address: str | None) -> bool:
        if not self.networks:  # no proxy trusted, the usual case: nothing to parse
            return False
        found = _address(address) if address else None
        return found is not None and any(found in net for net in self.networks)

    def _forwarded(self, request: web.Request, name: str) -> str | None:
        if not self.trusts(request.remote):
            return None
        value = request.headers.get(name, "").split(",")[0].strip()
        return value or None

    def client_address(self, request: web.Request) -> str | None:
        """The client's address: the peer's, or from a trusted proxy the rightmost
        untrusted one it forwarded."""
        remote = request.remote
        if not self.trusts(remote):
            return remote
        hops = [h.strip() for v in request.headers.getall("X-Forwarded-For", [])
                for h in v.split(",") if h.strip()]
        for hop in reversed(hops):
            if not self.trusts(hop):
                found = _address(hop)
                return str(found) if found is not None else remote
        return remote  # only proxies in the chain: the request began at one of them

    def scheme(self, request: web.Request) -> str:
        forwarded = (self._forwarded(request, "X-Forwarded-Proto") or "").lower()
        return forwarded if forwarded in ("http", "https") else request.scheme

    def forwarded_host(self, request: web.Request) -> str | None:
        return self._forwarded(request, "X-Forwarded-Host")


PROXY_TRUST = web.AppKey("proxy_trust", ProxyTrust)


def client_address(request: web.Request) -> str | None:
    """The client's address as this application's trusted proxies tell it."""
    trust = request.config_dict.get(PROXY_TRUST)
    return trust.client_address(request) if trust is not None else request.remote
