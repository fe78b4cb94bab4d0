"""Range on blob reads alike on every path that serves the bytes.

Paths: a staged upload (a local file), ECR's storage proxied through the gateway, the blob
cache's copy (proxy mode), the embedded emulator's storage (the blob's size not known to the
gateway: the Range goes to storage as it was asked, normalized). RFC 9110: a Range the
server does not support (another unit, several ranges) may be ignored, the whole blob
answered with 200; a last-byte position past the end means up to the end, whatever its
digits; a single range past the end (or a suffix of no bytes) is 416.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess
from tests.support.oci import OciClient, digest_of

SIZE = 4096


@pytest.fixture(scope="module")
def proxy_gateway(upstream: EmulatorProcess,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    folder = tmp_path_factory.mktemp("gateway")
    config = {"blobs": {"mode": "proxy", "cache": {"path": str(folder / "cache")}}}
    with GatewayProcess(folder, config, upstream_url=upstream.url) as gw:
        yield gw


@pytest.fixture
async def client(proxy_gateway: GatewayProcess) -> AsyncIterator[OciClient]:
    async with aiohttp.ClientSession() as session:
        yield OciClient(session, proxy_gateway.url)


def _staged(gateway: GatewayProcess, digest: str) -> bool:
    return Path(gateway.data_dir, "staging", "blobs", "sha256", digest.split(":")[1]).exists()


def _cached(gateway: GatewayProcess) -> bool:
    """Whether the blob cache holds a blob of SIZE bytes."""
    cache = Path(gateway.data_dir, "cache")
    return any(path.is_file() and path.stat().st_size == SIZE for path in cache.rglob("*"))


async def _get(client: OciClient, repo: str, digest: str,
               value: str) -> tuple[int, dict[str, str], bytes]:
    async with client.session.get(client.url(f"/v2/{repo}/blobs/{digest}"),
                                  headers={"Range": value}) as r:
        return r.status, dict(r.headers), await r.read()


async def _check_rules(client: OciClient, repo: str, digest: str, data: bytes) -> None:
    size = len(data)
    for ignored in ("bytes=0-1,5-6", "items=0-1", "bytes=0-1, 5-6"):
        status, _, body = await _get(client, repo, digest, ignored)
        assert (status, body == data) == (200, True), ignored
    for value, (start, end) in {"bytes= 0-1": (0, 1), "BYTES=2-3": (2, 3),
                                "bytes=0-99999999999999999999": (0, size - 1),
                                "bytes=10-" + "9" * 40: (10, size - 1),
                                "bytes=-" + "9" * 25: (0, size - 1)}.items():
        status, headers, body = await _get(client, repo, digest, value)
        assert status == 206, (value, status, body[:200])
        assert body == data[start:end + 1], value
        assert headers["Content-Range"] == f"bytes {start}-{end}/{size}", value
    # A suffix of no bytes selects nothing (RFC 9110 14.1.1), as a last byte before the first.
    for unsatisfiable in (f"bytes={size}-", f"bytes={size + 5}-{size + 9}",
                          "bytes=99999999999999999999-", "bytes=-0", "bytes=-000", "bytes=3-1"):
        status, headers, _ = await _get(client, repo, digest, unsatisfiable)
        assert status == 416, unsatisfiable
        assert headers["Content-Range"] == f"bytes */{size}", unsatisfiable


async def test_ranges_of_a_staged_upload(client: OciClient, proxy_gateway: GatewayProcess,
                                         repo: str) -> None:
    data = os.urandom(SIZE)
    digest = await client.push_blob(repo, data)
    assert _staged(proxy_gateway, digest)  # served from the staged file
    await _check_rules(client, repo, digest, data)


async def test_ranges_proxied_from_ecr_and_from_the_blob_cache(
        client: OciClient, proxy_gateway: GatewayProcess, repo: str) -> None:
    layer = os.urandom(SIZE)
    await client.push_image(repo, "v1", [layer])
    digest = digest_of(layer)
    assert not _staged(proxy_gateway, digest)  # ECR serves it now
    # Ranged reads do not fill the cache: these go to ECR's storage, through the gateway.
    await _check_rules(client, repo, digest, layer)
    assert await client.get_blob(repo, digest) == layer  # a whole read fills the cache
    assert _cached(proxy_gateway)
    await _check_rules(client, repo, digest, layer)


async def test_ranges_from_the_embedded_emulator(tmp_path: Path, repo: str) -> None:
    with GatewayProcess(tmp_path / "embedded") as embedded:
        async with aiohttp.ClientSession() as session:
            client = OciClient(session, embedded.url)
            layer = os.urandom(SIZE)
            await client.push_image(repo, "v1", [layer])
            digest = digest_of(layer)
            assert not _staged(embedded, digest)
            await _check_rules(client, repo, digest, layer)
