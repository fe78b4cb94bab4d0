"""Where an upstream's redirect may lead the gateway (on another origin than the upstream's):
globally routable addresses only, private networks (RFC 1918, CGNAT, ULA) too when the
upstream's ``private_redirects`` says so; never loopback, link-local, unspecified, multicast
or a cloud metadata address, nor an IPv6 address standing for one; plain http never; and a
name is judged by what it resolves to."""

from __future__ import annotations

import ipaddress
import socket

import aiohttp
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from ecr_model.redirect_targets import RefusedAddress, TargetResolver, host_refusal, refusal
from gateway.config import MirrorConfig
from gateway.pullthrough.sources import Sources
from gateway.pullthrough.upstream import _foreign_refusal

# (address, by default, with private_redirects): None is followed.
ADDRESSES = [
    # globally routable, and IPv6 forms that reach a global IPv4 address
    ("8.8.8.8", None, None),
    ("104.16.0.1", None, None),
    ("2606:4700::1", None, None),
    ("::ffff:8.8.8.8", None, None),
    ("64:ff9b::808:808", None, None),
    # the operator's private networks
    ("10.1.2.3", "private", None),
    ("172.16.0.1", "private", None),
    ("172.31.255.254", "private", None),
    ("192.168.1.1", "private", None),
    ("100.64.0.1", "private", None),
    ("100.127.255.254", "private", None),
    ("fc00::1", "private", None),
    ("fd12:3456:789a::1", "private", None),
    ("::ffff:10.1.2.3", "private", None),
    ("64:ff9b::a01:203", "private", None),  # NAT64 into the VPC
    # cloud metadata and platform services, whatever the setting
    ("169.254.169.254", "internal", "internal"),
    ("169.254.170.2", "internal", "internal"),
    ("100.100.100.200", "internal", "internal"),
    ("168.63.129.16", "internal", "internal"),
    ("fd00:ec2::254", "internal", "internal"),
    ("fd00:ec2::23", "internal", "internal"),
    ("fd20:ce::254", "internal", "internal"),
    ("fd00:c1::a9fe:a9fe", "internal", "internal"),
    ("::ffff:100.100.100.200", "internal", "internal"),
    ("64:ff9b::6464:64c8", "internal", "internal"),
    # this host, links, nothing, groups
    ("127.0.0.1", "internal", "internal"),
    ("127.8.9.10", "internal", "internal"),
    ("::1", "internal", "internal"),
    ("169.254.1.1", "internal", "internal"),
    ("fe80::1", "internal", "internal"),
    ("fe80::1%eth0", "internal", "internal"),
    ("2606:4700::1%eth0", "internal", "internal"),  # a zone: no global address has one
    ("0.0.0.0", "internal", "internal"),
    ("0.1.2.3", "internal", "internal"),
    ("::", "internal", "internal"),
    ("224.0.0.1", "internal", "internal"),
    ("ff02::1", "internal", "internal"),
    ("255.255.255.255", "internal", "internal"),
    # IPv6 forms that stand for, or tunnel to, an IPv4 address
    ("::ffff:127.0.0.1", "internal", "internal"),
    ("::ffff:169.254.169.254", "internal", "internal"),
    ("::7f00:1", "internal", "internal"),  # IPv4-compatible
    ("::ffff:0:7f00:1", "internal", "internal"),  # IPv4-translated
    ("64:ff9b::a9fe:a9fe", "internal", "internal"),
    ("64:ff9b:1::a01:203", "internal", "internal"),  # local-use NAT64
    ("2002:7f00:1::1", "internal", "internal"),  # 6to4
    ("2002:808:808::1", "internal", "internal"),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "internal", "internal"),  # Teredo
    ("2001::a01:203", "internal", "internal"),
    # reserved, benchmarking, documentation, protocol assignments
    ("192.0.0.8", "internal", "internal"),
    ("192.0.2.1", "internal", "internal"),
    ("198.18.0.1", "internal", "internal"),
    ("198.51.100.1", "internal", "internal"),
    ("203.0.113.1", "internal", "internal"),
    ("240.0.0.1", "internal", "internal"),
    ("192.88.99.1", "internal", "internal"),
    ("2001:db8::1", "internal", "internal"),
    ("3fff::1", "internal", "internal"),
    ("5f00::1", "internal", "internal"),
    ("100::1", "internal", "internal"),
    ("fec0::1", "internal", "internal"),
]


@pytest.mark.parametrize(("address", "default", "private"), ADDRESSES)
def test_where_a_redirect_may_lead(address: str, default: str | None,
                                   private: str | None) -> None:
    parsed = ipaddress.ip_address(address)
    assert refusal(parsed) == default
    assert refusal(parsed, private=True) == private


@pytest.mark.parametrize(("address", "refused"), [
    ("127.0.0.1", None), ("::1", None), ("::ffff:127.0.0.1", None), ("127.8.9.10", None),
    ("10.1.2.3", "private"), ("169.254.169.254", "internal"), ("100.100.100.200", "internal"),
])
def test_an_upstream_on_loopback_may_lead_to_loopback(address: str, refused: str | None) -> None:
    assert refusal(ipaddress.ip_address(address), loopback=True) == refused


@pytest.mark.parametrize(("host", "default", "private"), [
    ("cdn.example", None, None),  # a name: judged when it is resolved
    ("0x7f.1", None, None),  # the resolver reads it (as 127.0.0.1, refused then)
    ("8.8.8.8", None, None),
    ("10.1.2.3", "private", None),
    ("[fd12::1]", "private", None),
    ("100.100.100.200", "internal", "internal"),
    ("[::1]", "internal", "internal"),
    ("fe80::1%eth0", "internal", "internal"),
    # what aiohttp connects to as an address without resolving it, but is none
    ("127.1", "internal", "internal"),
    ("2130706433", "internal", "internal"),
    ("127.0.0.1.", "internal", "internal"),
    ("010.1.2.3", "internal", "internal"),
    ("[::1:]", "internal", "internal"),
])
def test_hosts_of_redirect_targets(host: str, default: str | None, private: str | None) -> None:
    assert host_refusal(host) == default
    assert host_refusal(host, private=True) == private


@pytest.mark.parametrize(("url", "refused", "private"), [
    ("https://production.cloudflare.docker.com/registry-v2/x", False, False),
    ("https://8.8.8.8/x", False, False),
    ("http://production.cloudflare.docker.com/x", True, True),
    ("http://10.1.2.3/x", True, True),
    ("https://10.1.2.3/x", True, False),
    ("https://[fd12::1]:8443/x", True, False),
    ("https://100.100.100.200/latest/meta-data/", True, True),
    ("https://169.254.169.254/latest/meta-data/", True, True),
    ("https://[::1]:8443/x", True, True),
    ("https://[fd00:ec2::254]/x", True, True),
    ("https://127.1:8443/x", True, True),
    ("https://2130706433/x", True, True),
    ("https://user:pw@cdn.example/x", True, True),
    ("ftp://cdn.example/x", True, True),
])
def test_redirect_targets(url: str, refused: bool, private: bool) -> None:
    assert (_foreign_refusal(URL(url)) is not None) is refused
    assert (_foreign_refusal(URL(url), private=True) is not None) is private


def test_a_private_refusal_names_the_setting_and_an_internal_one_does_not() -> None:
    assert "private_redirects" in (_foreign_refusal(URL("https://10.1.2.3/x")) or "")
    internal = _foreign_refusal(URL("https://100.100.100.200/x"), private=True) or ""
    assert "internal address" in internal and "private_redirects" not in internal


async def test_a_name_that_resolves_to_loopback_is_refused() -> None:
    for private in (False, True):
        resolver = TargetResolver(private)
        try:
            with pytest.raises(RefusedAddress) as refused:
                await resolver.resolve("localhost", 443)
            assert refused.value.why == "internal"
        finally:
            await resolver.close()


class _Answers(AbstractResolver):
    """What a name server answers for any name: ``addresses``."""

    def __init__(self, *addresses: str) -> None:
        self._addresses = addresses

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        return [{"hostname": host, "host": a, "port": port, "family": socket.AF_INET,
                 "proto": 0, "flags": 0} for a in self._addresses]

    async def close(self) -> None:
        pass


@pytest.mark.parametrize(("answers", "default", "private"), [
    (("104.16.0.1",), None, None),
    (("10.1.2.3",), "private", None),
    (("104.16.0.1", "192.168.1.1"), "private", None),  # any one address refused: the name is
    (("10.1.2.3", "100.100.100.200"), "internal", "internal"),
    (("fd00:ec2::254",), "internal", "internal"),
    (("fe80::1%eth0",), "internal", "internal"),
    (("not an address",), "internal", "internal"),
])
async def test_a_name_is_judged_by_every_address_it_resolves_to(
        answers: tuple[str, ...], default: str | None, private: str | None) -> None:
    for allowed, expected in ((False, default), (True, private)):
        resolver = TargetResolver(allowed, inner=_Answers(*answers))
        if expected is None:
            assert [r["host"] for r in await resolver.resolve("cdn.example", 443)] == \
                list(answers)
            continue
        with pytest.raises(RefusedAddress) as refused:
            await resolver.resolve("cdn.example", 443)
        assert refused.value.why == expected


async def test_each_upstream_follows_its_own_private_redirects_setting() -> None:
    mirrors = {
        host: MirrorConfig.model_validate({"repository_prefix": host.split(".")[0],
                                           "upstream": {"url": f"https://{host}", **extra}})
        for host, extra in (("docker.io", {}),
                            ("registry.internal", {"private_redirects": True}))}
    sources = Sources(mirrors, [], lambda connector: aiohttp.ClientSession(
        connector=connector), lambda settings: None)
    try:
        public, private = sources.find("docker.io", "x"), sources.find(
            "registry.internal", "x")
        assert public is not None and private is not None
        assert public.upstream.private_redirects is False
        assert private.upstream.private_redirects is True
        assert public.upstream._foreign is not private.upstream._foreign
    finally:
        await sources.close()
