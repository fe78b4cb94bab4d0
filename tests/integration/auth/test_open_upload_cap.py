"""``limits.max_open_uploads_per_client``: one client cannot hold every upload session the
gateway allows (each keeps up to 5 MiB on disk until it ends or idles out). Its sessions are
counted per user, or per address (as the trusted proxies tell it) for anonymous callers;
past its cap its POST gets 429 while other clients still open theirs, and a session that
finishes or is cancelled no longer counts."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.integration.auth.conftest import PASSWORDS, htpasswd_auth
from tests.integration.auth.helpers import auth_gateway, basic
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess

CAP = 3
LIMITS = {"max_open_uploads_per_client": CAP, "max_open_uploads": 1000}


@pytest.fixture(scope="module")
def capgw(upstream: EmulatorProcess, htpasswd: Path,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    with auth_gateway(tmp_path_factory.mktemp("cap"), upstream, htpasswd_auth(htpasswd),
                      limits=LIMITS) as gateway:
        yield gateway


def _as(user: str) -> dict[str, str]:
    return basic(user, PASSWORDS[user])


async def post(session: aiohttp.ClientSession, gateway: GatewayProcess, name: str,
               headers: dict[str, str]) -> tuple[int, str, dict[str, str], dict]:
    async with session.post(f"{gateway.url}/v2/{name}/blobs/uploads/", headers=headers) as r:
        body = await r.json(content_type=None) if r.status != 202 else {}
        return r.status, r.headers.get("Location", ""), dict(r.headers), body


async def open_upload(session: aiohttp.ClientSession, gateway: GatewayProcess, name: str,
                      headers: dict[str, str]) -> str:
    status, location, _, body = await post(session, gateway, name, headers)
    assert status == 202, body
    return location


async def assert_refused(session: aiohttp.ClientSession, gateway: GatewayProcess, name: str,
                         headers: dict[str, str]) -> None:
    status, _, answer_headers, body = await post(session, gateway, name, headers)
    assert status == 429, body
    assert answer_headers["Retry-After"]
    error = body["errors"][0]
    assert error["code"] == "TOOMANYREQUESTS"
    assert "open upload sessions for this client" in error["message"]
    assert error["detail"] == {"limit": CAP}


async def test_a_client_at_its_cap_is_refused_while_others_still_open(
        capgw: GatewayProcess) -> None:
    alice, bob = _as("alice"), _as("bob")
    mine = f"team-a/cap-{os.urandom(3).hex()}"
    async with aiohttp.ClientSession() as session:
        opened = [await open_upload(session, capgw, mine, alice) for _ in range(CAP)]
        await assert_refused(session, capgw, mine, alice)
        await assert_refused(session, capgw, f"team-a/other-{os.urandom(3).hex()}", alice)
        # bob, in his own repository, is not held up by alice's sessions.
        theirs = f"public/bob-{os.urandom(3).hex()}"
        bobs = [await open_upload(session, capgw, theirs, bob) for _ in range(CAP)]
        await assert_refused(session, capgw, theirs, bob)

        # A cancelled session no longer counts.
        async with session.delete(capgw.url + opened.pop(), headers=alice) as r:
            assert r.status == 204, await r.text()
        opened.append(await open_upload(session, capgw, mine, alice))
        await assert_refused(session, capgw, mine, alice)

        # Nor does a finished one.
        data = os.urandom(1000)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        async with session.put(f"{capgw.url}{opened.pop()}?digest={digest}", data=data,
                               headers={**alice,
                                        "Content-Type": "application/octet-stream"}) as r:
            assert r.status == 201, await r.text()
        opened.append(await open_upload(session, capgw, mine, alice))
        await assert_refused(session, capgw, mine, alice)

        for location in opened:
            async with session.delete(capgw.url + location, headers=alice) as r:
                assert r.status == 204
        for location in bobs:
            async with session.delete(capgw.url + location, headers=bob) as r:
                assert r.status == 204
        # Nothing stays counted: the whole cap is there again.
        again = [await open_upload(session, capgw, mine, alice) for _ in range(CAP)]
        for location in again:
            async with session.delete(capgw.url + location, headers=alice):
                pass


def _proxied(client_key: dict[str, Any] | None = None) -> dict[str, Any]:
    """Anonymous pushes behind the trusted loopback proxy (a proxy may publish them), its
    clients' addresses in X-Forwarded-For, keyed by ``client_key`` (limits.client_key)."""
    return {"limits": {**LIMITS, "client_key": client_key or {}},
            "trusted_proxies": ["127.0.0.1/32"],
            "auth": {"allow_anonymous_on_public_address": True}}


async def test_anonymous_clients_count_by_the_address_the_trusted_proxy_gives(
        upstream: EmulatorProcess, tmp_path: Path) -> None:
    """Behind a trusted proxy every client arrives from the proxy's address: each is
    counted by the address the proxy forwarded, not all of them as one."""
    with GatewayProcess(tmp_path, _proxied(), upstream_url=upstream.url) as gateway:
        first, second = ({"X-Forwarded-For": "203.0.113.7"},
                         {"X-Forwarded-For": "203.0.113.8"})
        name = f"anon/cap-{os.urandom(3).hex()}"
        async with aiohttp.ClientSession() as session:
            for _ in range(CAP):
                await open_upload(session, gateway, name, first)
            await assert_refused(session, gateway, name, first)
            await open_upload(session, gateway, name, second)


async def test_anonymous_ipv6_clients_count_by_their_64(upstream: EmulatorProcess,
                                                        tmp_path: Path) -> None:
    """A host is routinely handed a whole IPv6 /64: counted per address, it would open its
    sessions under a fresh cap from each of 2**64 addresses, up to every session the gateway
    allows (max_open_uploads), and every other pusher's POST would get 429. Its sessions are
    counted by the /64, as its failed logins are; another /64 is another client."""
    with GatewayProcess(tmp_path, _proxied(), upstream_url=upstream.url) as gateway:
        name = f"anon/v6-{os.urandom(3).hex()}"
        async with aiohttp.ClientSession() as session:
            for i in range(1, CAP + 1):
                await open_upload(session, gateway, name,
                                  {"X-Forwarded-For": f"2001:db8:5:6::{i}"})
            for address in ("2001:db8:5:6::ffff", "2001:db8:5:6:abcd:ef01:2345:6789"):
                await assert_refused(session, gateway, name, {"X-Forwarded-For": address})
            await open_upload(session, gateway, name, {"X-Forwarded-For": "2001:db8:5:7::1"})


@pytest.mark.parametrize("client_key,first,second", [
    # NAT64's well-known prefix, known by default.
    ({}, "64:ff9b::c633:6409", "64:ff9b::cb00:7107"),
    # A translator's own prefix (RFC 6052 network-specific: a /96 of the local-use
    # 64:ff9b:1::/48, RFC 8215), listed.
    ({"nat64_prefixes": ["64:ff9b::/96", "64:ff9b:1:2::/96"]},
     "64:ff9b:1:2::c633:6409", "64:ff9b:1:2::cb00:7107"),
    # A /48 one, the address after it with the "u" octet skipped.
    ({"nat64_prefixes": ["2001:db8:122::/48"]},
     "2001:db8:122:c633:64:900::", "2001:db8:122:cb00:71:700::"),
])
async def test_ipv4_clients_behind_nat64_count_by_their_own_address(
        upstream: EmulatorProcess, tmp_path: Path, client_key: dict[str, Any], first: str,
        second: str) -> None:
    """An IPv6-only gateway reached by IPv4 clients through a translator (SIIT, NAT64) sees
    each as the translator's prefix and its IPv4 address: one /64 for every IPv4 client on
    the internet. Counted by the /64, one of them (198.51.100.9) opening its cap of sessions
    got every other one's (203.0.113.7) POST refused with 429."""
    with GatewayProcess(tmp_path, _proxied(client_key), upstream_url=upstream.url) as gateway:
        name = f"anon/nat64-{os.urandom(3).hex()}"
        attacker = {"X-Forwarded-For": first}
        async with aiohttp.ClientSession() as session:
            for _ in range(CAP):
                await open_upload(session, gateway, name, attacker)
            await assert_refused(session, gateway, name, attacker)
            # The same IPv4 client, mapped or as itself, is the same client.
            await assert_refused(session, gateway, name, {"X-Forwarded-For": "198.51.100.9"})
            await open_upload(session, gateway, name, {"X-Forwarded-For": second})


async def test_an_ipv6_site_counts_by_the_configured_prefix(upstream: EmulatorProcess,
                                                            tmp_path: Path) -> None:
    """Handed a /56, a client has 256 /64s, each a fresh cap at the default length; with
    limits.client_key.ipv6_prefix_length 56 they are one client, another /56 another."""
    with GatewayProcess(tmp_path, _proxied({"ipv6_prefix_length": 56}),
                        upstream_url=upstream.url) as gateway:
        name = f"anon/v6site-{os.urandom(3).hex()}"
        async with aiohttp.ClientSession() as session:
            for i in range(1, CAP + 1):
                await open_upload(session, gateway, name,
                                  {"X-Forwarded-For": f"2001:db8:5:{i}::1"})
            await assert_refused(session, gateway, name, {"X-Forwarded-For": "2001:db8:5:ff::1"})
            await open_upload(session, gateway, name, {"X-Forwarded-For": "2001:db8:5:100::1"})
