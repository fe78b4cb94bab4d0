"""Where an upstream's redirect may lead the gateway (on another origin than the upstream's):
no loopback, link-local, unspecified, multicast or cloud metadata address, nor an IPv6
address standing for one; plain http never; and a name is judged by what it resolves to."""

from __future__ import annotations

import ipaddress

import pytest
from yarl import URL

from gateway.pullthrough.upstream import (
    NotPublic,
    _foreign_refusal,
    _PublicResolver,
    public_address,
)


@pytest.mark.parametrize("address", [
    "127.0.0.1", "127.8.9.10", "::1", "169.254.169.254", "169.254.1.1", "fe80::1",
    "fd00:ec2::254", "0.0.0.0", "0.1.2.3", "::", "224.0.0.1", "ff02::1",
    "::ffff:127.0.0.1", "::ffff:169.254.169.254", "64:ff9b::a9fe:a9fe", "2002:7f00:1::1",
])
def test_internal_addresses_are_refused(address: str) -> None:
    assert not public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["8.8.8.8", "104.16.0.1", "2606:4700::1"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize(("url", "refused"), [
    ("https://production.cloudflare.docker.com/registry-v2/x", False),
    ("https://8.8.8.8/x", False),
    ("http://production.cloudflare.docker.com/x", True),
    ("https://169.254.169.254/latest/meta-data/", True),
    ("https://[::1]:8443/x", True),
    ("https://[fd00:ec2::254]/x", True),
    ("https://user:pw@cdn.example/x", True),
    ("ftp://cdn.example/x", True),
])
def test_redirect_targets(url: str, refused: bool) -> None:
    assert (_foreign_refusal(URL(url)) is not None) is refused


async def test_a_name_that_resolves_to_loopback_is_refused() -> None:
    resolver = _PublicResolver()
    try:
        with pytest.raises(NotPublic):
            await resolver.resolve("localhost", 443)
    finally:
        await resolver.close()
