"""The local blob cache of proxy mode: verified fills, Range, restarts, corruption, bounds."""

from __future__ import annotations

import asyncio
import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.integration.mirror.conftest import StartGateway
from tests.integration.mirror.helpers import (
    Image,
    check_pulled,
    downloads,
    ecr_calls,
    get,
    pull,
    push_image,
    sha256,
)
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess

MiB = 1024 * 1024
MAX_BYTES = 3 * MiB


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("blob-cache")


@pytest.fixture(scope="module")
def proxy(upstream: EmulatorProcess, cache_dir: Path,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    config = {"blobs": {"mode": "proxy", "cache": {"path": str(cache_dir),
                                                   "max_bytes": MAX_BYTES}},
              "cache": {"tag_ttl_seconds": 60}}
    with GatewayProcess(tmp_path_factory.mktemp("gw"), config,
                        upstream_url=upstream.url) as gw:
        yield gw


def _cached(cache_dir: Path, digest: str) -> Path:
    return cache_dir / "sha256" / digest.split(":", 1)[1]


def _find_files(root: Path, name: str) -> list[Path]:
    return [p for p in root.rglob(name) if p.is_file()]


def _cached_bytes(cache_dir: Path) -> int:
    return sum(p.stat().st_size for p in (cache_dir / "sha256").iterdir())


async def _tmp_emptied(cache_dir: Path) -> None:
    """Wait for the unlinks that run in the background to leave ``tmp/`` empty."""
    for _ in range(50):
        if not os.listdir(cache_dir / "tmp"):
            return
        await asyncio.sleep(0.1)
    assert os.listdir(cache_dir / "tmp") == []


async def _image(gateway: GatewayProcess, sizes: tuple[int, ...] = (300_000, 200_000)) -> Image:
    return await push_image(gateway.url, f"cache/{uuid.uuid4().hex[:10]}", layer_sizes=sizes)


async def test_fill_then_serve_from_disk_with_range(
        gateway: GatewayProcess, proxy: GatewayProcess, upstream: EmulatorProcess,
        cache_dir: Path) -> None:
    image = await _image(gateway)
    layer = image.layers[0]
    digest = sha256(layer)
    url = f"{proxy.url}/v2/{image.name}/blobs/{digest}"
    async with aiohttp.ClientSession() as session:
        assert (await get(session, url))[2] == layer
        assert _cached(cache_dir, digest).read_bytes() == layer
        upstream.clear_requests()
        status, headers, body = await get(session, url, headers={"Range": "bytes=1000-1999"})
        assert status == 206 and body == layer[1000:2000]
        assert headers["Content-Range"] == f"bytes 1000-1999/{len(layer)}"
        status, _, body = await get(session, url)
        assert status == 200 and body == layer
        status, _, body = await get(session, url, headers={"Range": f"bytes={len(layer)}-"})
        assert status == 416 and b"BLOB_UPLOAD_INVALID" in body  # OCI error body
        assert downloads(upstream) == []
        # Shared by content, yet still per repository: another repository may not read it.
        status, _, _ = await get(session, f"{proxy.url}/v2/cache/elsewhere/blobs/{digest}")
        assert status == 404
    assert tuple(os.listdir(cache_dir / "tmp")) == ()


async def test_survives_restart_and_verifies_first_read(
        gateway: GatewayProcess, proxy: GatewayProcess, upstream: EmulatorProcess,
        cache_dir: Path) -> None:
    """After a restart the cached files are served without touching storage; a file whose
    bytes changed while the gateway was down (same size) is caught by the digest check on
    its first read, dropped and fetched again."""
    image = await _image(gateway)
    async with aiohttp.ClientSession() as session:
        check_pulled(await pull(session, proxy.url, image.name, "v1"), image)
    bad = sha256(image.layers[1])
    path = _cached(cache_dir, bad)
    proxy.restart()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))

    upstream.clear_requests()
    async with aiohttp.ClientSession() as session:
        check_pulled(await pull(session, proxy.url, image.name, "v1"), image)
    assert [d["digest"] for d in downloads(upstream)] == [bad]
    assert ecr_calls(upstream, image.name) == {"BatchGetImage": 1, "GetDownloadUrlForLayer": 1}
    assert path.read_bytes() == image.layers[1]



def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


async def test_other_local_users_neither_read_nor_plant_cached_blobs(
        gateway: GatewayProcess, proxy: GatewayProcess, upstream: EmulatorProcess,
        cache_dir: Path, tmp_path: Path) -> None:
    """The cache holds private repositories' bytes and, once it verified a file, checks only
    its size: its folders are the gateway user's alone and its files 0600. A folder left
    open while the gateway was down (by an older version, or by hand), with a symbolic link
    and a file anyone may rewrite put in place of two cached blobs: the gateway closes the
    folder again, reads through neither, and fetches both blobs again."""
    image = await _image(gateway)
    async with aiohttp.ClientSession() as session:
        check_pulled(await pull(session, proxy.url, image.name, "v1"), image)
    linked, writable = (sha256(layer) for layer in image.layers)
    for folder in (cache_dir / "sha256", cache_dir / "tmp"):
        assert _mode(folder) == 0o700, folder
    assert _mode(_cached(cache_dir, linked)) == 0o600

    proxy.stop()
    os.chmod(cache_dir / "sha256", 0o777)
    outside = tmp_path / "outside"
    outside.write_bytes(image.layers[0])
    _cached(cache_dir, linked).unlink()
    _cached(cache_dir, linked).symlink_to(outside)
    os.chmod(_cached(cache_dir, writable), 0o666)
    proxy.start()

    assert _mode(cache_dir / "sha256") == 0o700
    upstream.clear_requests()
    async with aiohttp.ClientSession() as session:
        check_pulled(await pull(session, proxy.url, image.name, "v1"), image)
    assert sorted(d["digest"] for d in downloads(upstream)) == sorted([linked, writable])
    for digest, layer in ((linked, image.layers[0]), (writable, image.layers[1])):
        assert _mode(_cached(cache_dir, digest)) == 0o600
        assert _cached(cache_dir, digest).read_bytes() == layer
    assert outside.read_bytes() == image.layers[0]

async def test_truncated_file_is_dropped_and_refetched(
        gateway: GatewayProcess, proxy: GatewayProcess, upstream: EmulatorProcess,
        cache_dir: Path) -> None:
    image = await _image(gateway)
    digest = sha256(image.layers[0])
    url = f"{proxy.url}/v2/{image.name}/blobs/{digest}"
    async with aiohttp.ClientSession() as session:
        assert (await get(session, url))[2] == image.layers[0]
        path = _cached(cache_dir, digest)
        os.truncate(path, 1000)
        upstream.clear_requests()
        status, _, body = await get(session, url)
        assert status == 200 and body == image.layers[0]
    assert len(downloads(upstream)) == 1
    assert path.read_bytes() == image.layers[0]


async def _read_until_cut(session: aiohttp.ClientSession,
                          url: str) -> tuple[int, bytes, BaseException | None]:
    """Status, the body bytes that arrived, and how the transfer broke (None: it did not)."""
    async with session.get(url) as r:
        body = bytearray()
        try:
            async for chunk in r.content.iter_any():
                body += chunk
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError) as exc:
            return r.status, bytes(body), exc
        return r.status, bytes(body), None


@pytest.mark.parametrize("cached", [True, False], ids=["cache", "no-cache"])
async def test_bytes_not_matching_the_digest_are_never_served(
        gateway: GatewayProcess, proxy: GatewayProcess, upstream: EmulatorProcess,
        cache_dir: Path, start_gateway: StartGateway, cached: bool) -> None:
    """Storage hands out corrupted bytes (same size): the gateway streams them but holds the
    last chunk back until the digest matched, so the client sees a broken transfer, never a
    complete body of wrong bytes; the cache keeps nothing. With or without a cache."""
    image = await _image(gateway, sizes=(2 * MiB + 4321,))
    digest = sha256(image.layers[0])
    stored = _find_files(Path(upstream.data_dir), digest.split(":", 1)[1])
    assert stored, "the emulator's copy of the layer was not found"
    original = stored[0].read_bytes()
    stored[0].write_bytes(b"\0" * len(original))
    server = proxy if cached else start_gateway({"blobs": {"mode": "proxy"}})
    url = f"{server.url}/v2/{image.name}/blobs/{digest}"
    try:
        async with aiohttp.ClientSession() as session:
            status, body, broken = await _read_until_cut(session, url)
        assert status == 200
        assert broken is not None
        assert len(body) < len(original)
        assert body == b"\0" * len(body)  # streamed as it came, up to the held-back end
        assert not _cached(cache_dir, digest).exists()
        await _tmp_emptied(cache_dir)
    finally:
        stored[0].write_bytes(original)
    async with aiohttp.ClientSession() as session:
        assert (await _read_until_cut(session, url))[1:] == (image.layers[0], None)
    if cached:
        assert _cached(cache_dir, digest).read_bytes() == image.layers[0]


async def test_a_read_cut_short_leaves_nothing(
        gateway: GatewayProcess, proxy: GatewayProcess, cache_dir: Path) -> None:
    """A client that goes away mid-blob: the partial file is discarded, never served."""
    image = await _image(gateway, sizes=(2 * MiB + 12345,))
    digest = sha256(image.layers[0])
    url = f"{proxy.url}/v2/{image.name}/blobs/{digest}"
    reader, writer = await asyncio.open_connection(proxy.url.split("//")[1].split(":")[0],
                                                   proxy.port)
    writer.write(f"GET /v2/{image.name}/blobs/{digest} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    await reader.read(64 * 1024)
    writer.transport.abort()
    for _ in range(50):
        if not os.listdir(cache_dir / "tmp"):
            break
        await asyncio.sleep(0.1)
    assert os.listdir(cache_dir / "tmp") == []
    path = _cached(cache_dir, digest)
    # Nothing, or (had the kernel buffered the whole blob for the client) a complete copy.
    assert not path.exists() or sha256(path.read_bytes()) == digest
    async with aiohttp.ClientSession() as session:
        assert (await get(session, url))[2] == image.layers[0]
    assert _cached(cache_dir, digest).read_bytes() == image.layers[0]


async def test_stays_under_max_bytes(gateway: GatewayProcess, proxy: GatewayProcess,
                                     upstream: EmulatorProcess, cache_dir: Path) -> None:
    """Least recently read blobs go first; a blob bigger than the whole cache is served but
    not kept."""
    image = await _image(gateway, sizes=(MiB,) * 5 + (MAX_BYTES + 1,))
    async with aiohttp.ClientSession() as session:
        first = f"{proxy.url}/v2/{image.name}/blobs/{sha256(image.layers[0])}"
        for layer in image.layers:
            digest = sha256(layer)
            assert (await get(session, f"{proxy.url}/v2/{image.name}/blobs/{digest}"))[2] \
                == layer
            assert _cached_bytes(cache_dir) <= MAX_BYTES
            if layer is image.layers[2]:
                assert (await get(session, first))[2] == image.layers[0]  # read again: recent
    assert not _cached(cache_dir, sha256(image.layers[-1])).exists()
    assert _cached(cache_dir, sha256(image.layers[0])).exists()
    assert not _cached(cache_dir, sha256(image.layers[1])).exists()
    assert _cached(cache_dir, sha256(image.layers[4])).exists()
    assert _cached_bytes(cache_dir) <= MAX_BYTES
