"""GetDownloadUrlForLayer's URLs: served with Range like S3, refused when edited or expired."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

import aiohttp
import pytest

from ecr_emulator.registries import MAX_REGISTRIES
from tests.emulator.api.helpers import digest, push_image
from tests.support.emulator import EmulatorProcess, ecr_client

LAYER = os.urandom(100_000)


@pytest.fixture(scope="module")
def short_lived(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    """URLs valid for one second."""
    env = {"ECR_EMULATOR_DOWNLOAD_URL_EXPIRES": "1"}
    with EmulatorProcess(tmp_path_factory.mktemp("short"), env=env) as emu:
        yield emu


async def layer_url(emulator: EmulatorProcess, repo: str, layer: bytes = LAYER) -> str:
    async with ecr_client(emulator.url) as ecr:
        await ecr.create_repository(repositoryName=repo)
        await push_image(ecr, repo, "v1", layers=[layer])
        answer = await ecr.get_download_url_for_layer(repositoryName=repo,
                                                      layerDigest=digest(layer))
    return str(answer["downloadUrl"])


def edit(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    path = changes.pop("path", parts.path)
    query.update(changes)
    return parts._replace(path=path, query=urlencode(query)).geturl()


async def get(url: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as r:
        return r.status, dict(r.headers), await r.read()


async def test_ranges(shared_emulator: EmulatorProcess, repo: str) -> None:
    url = await layer_url(shared_emulator, repo)
    status, headers, body = await get(url)
    assert (status, body) == (200, LAYER)
    assert headers["Content-Length"] == str(len(LAYER))
    assert headers.get("Accept-Ranges") == "bytes"
    status, headers, body = await get(url, Range="bytes=10-19")
    assert (status, body) == (206, LAYER[10:20])
    assert headers["Content-Range"] == f"bytes 10-19/{len(LAYER)}"
    status, headers, body = await get(url, Range="bytes=99990-")
    assert (status, body) == (206, LAYER[99990:])
    status, headers, body = await get(url, Range="bytes=-5")
    assert (status, body) == (206, LAYER[-5:])
    # Past the end, and a suffix of no bytes (RFC 9110 14.1.1: it selects nothing).
    for unsatisfiable in (f"bytes={len(LAYER)}-", "bytes=-0", "bytes=-00"):
        status, headers, _ = await get(url, Range=unsatisfiable)
        assert status == 416, unsatisfiable
        assert headers["Content-Range"] == f"bytes */{len(LAYER)}", unsatisfiable
    async with aiohttp.ClientSession() as session, session.head(url) as r:
        assert r.status == 200 and r.headers["Content-Length"] == str(len(LAYER))


async def test_downloads_are_logged(shared_emulator: EmulatorProcess, repo: str) -> None:
    url = await layer_url(shared_emulator, repo, b"logged layer")
    shared_emulator.clear_requests()
    await get(url, Range="bytes=0-3")
    await get(edit(url, **{"X-Amz-Signature": "0" * 64}))
    entries = shared_emulator.requests("LayerDownload")
    assert [(e["status"], e["outcome"], e["range"]) for e in entries] == [
        (206, "ok", "bytes=0-3"), (403, "SignatureDoesNotMatch", None)]
    assert entries[0]["digest"] == digest(b"logged layer")


async def test_tampered_urls_are_refused(shared_emulator: EmulatorProcess, repo: str) -> None:
    url = await layer_url(shared_emulator, repo)
    other = digest(b"another layer")
    tampered = [
        edit(url, **{"X-Amz-Signature": "f" * 64}),
        edit(url, **{"X-Amz-Expires": "7200"}),
        edit(url, **{"X-Amz-Date": "20990101T000000Z"}),
        edit(url, path=f"/_emulator/layers/{other}"),
        url.split("?")[0],
        url + "&extra=1",  # S3 signs every parameter of the query
        url + "&X-Amz-Date=20990101T000000Z",
    ]
    for bad in tampered:
        status, headers, body = await get(bad)
        assert status == 403, bad
        assert headers["Content-Type"].startswith("application/xml")
        assert b"<Error><Code>" in body and LAYER[:20] not in body


async def test_signatures_survive_a_restart(emulator: EmulatorProcess) -> None:
    url = await layer_url(emulator, "restart/url")
    # The key that signs them is its user's alone.
    assert (emulator.data_dir / "secret").stat().st_mode & 0o777 == 0o600
    emulator.restart()
    assert (await get(url))[0] == 200


async def test_expired_urls_are_refused(short_lived: EmulatorProcess, repo: str) -> None:
    url = await layer_url(short_lived, repo)
    assert "X-Amz-Expires=1" in url
    await asyncio.sleep(2.1)
    status, _, body = await get(url)
    assert status == 403 and b"expired" in body


async def test_missing_blob_is_404(shared_emulator: EmulatorProcess, repo: str) -> None:
    url = await layer_url(shared_emulator, repo, b"soon gone")
    encoded = digest(b"soon gone").split(":")[1]
    (shared_emulator.data_dir / "blobs" / "sha256" / encoded[:2] / encoded).unlink()
    status, _, body = await get(url)
    assert status == 404 and b"NoSuchKey" in body


async def test_registries_past_the_limit_answer_slow_down_not_500(tmp_path: Path) -> None:
    """An anonymous download URL names an account and region; the registry is opened (from
    disk) before its signature can be checked. With every slot taken the answer is S3's
    503 SlowDown (before: a 500 with a traceback), and the emulator still serves its own."""
    data_dir = tmp_path / "ecr"
    accounts = [f"{100000000000 + i}" for i in range(MAX_REGISTRIES)]
    for account in accounts:
        (data_dir / "registries" / account / "us-east-1").mkdir(parents=True)
    with EmulatorProcess(data_dir) as emulator:
        statuses = []
        async with aiohttp.ClientSession() as http:
            for account in accounts:
                async with http.get(f"{emulator.url}/_emulator/registries/{account}/us-east-1"
                                    f"/layers/{digest(b'x')}") as r:
                    statuses.append((r.status, await r.text()))
        assert {status for status, _ in statuses} <= {403, 503}, statuses[-1]
        assert statuses[-1][0] == 503 and "SlowDown" in statuses[-1][1]
        url = await layer_url(emulator, "emu/limits")
        async with aiohttp.ClientSession() as http, http.get(url) as r:
            assert r.status == 200 and await r.read() == LAYER
