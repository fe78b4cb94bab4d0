"""A blob read back right after its upload, before any manifest references it (ECR does not
serve it yet), is readable through every replica: the replica that staged it serves its
peers over an internal endpoint that only processes sharing the Redis can use."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import itertools
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from tests.integration.state.conftest import redis_state, replica, replica_pair
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess
from tests.support.hostile import Server
from tests.support.redis import RedisServer, redis_cli

MiB = 1024 * 1024
OCTET = {"Content-Type": "application/octet-stream"}


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def pair(upstream: EmulatorProcess, redis_server: RedisServer,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess,
                                                                     GatewayProcess]]:
    state = redis_state(redis_server)
    with replica_pair(tmp_path_factory.mktemp("peers"), upstream, state) as gateways:
        yield gateways


def _name(tag: str) -> str:
    return f"peers/{tag}-{os.urandom(4).hex()}"


async def _post(session: aiohttp.ClientSession, gateway: GatewayProcess, name: str) -> str:
    async with session.post(f"{gateway.url}/v2/{name}/blobs/uploads/") as r:
        assert r.status == 202, await r.text()
        return r.headers["Location"]


async def _patch(session: aiohttp.ClientSession, gateway: GatewayProcess, location: str,
                 data: bytes) -> str:
    async with session.patch(gateway.url + location, data=data, headers=OCTET) as r:
        assert r.status == 202, await r.text()
        return r.headers["Location"]


async def _put(session: aiohttp.ClientSession, gateway: GatewayProcess, location: str,
               digest: str, data: bytes = b"") -> None:
    sep = "&" if "?" in location else "?"
    async with session.put(f"{gateway.url}{location}{sep}digest={digest}", data=data,
                           headers=OCTET) as r:
        assert r.status == 201, await r.text()


async def _read(session: aiohttp.ClientSession, gateway: GatewayProcess, name: str,
                digest: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    async with session.get(f"{gateway.url}/v2/{name}/blobs/{digest}",
                           headers=headers or {}) as r:
        return r.status, await r.read()


async def test_blob_uploaded_through_one_replica_reads_back_through_the_other(
        pair: tuple[GatewayProcess, GatewayProcess]) -> None:
    a, b = pair
    name = _name("one")
    blob = os.urandom(7 * MiB + 5)
    digest = digest_of(blob)
    async with aiohttp.ClientSession() as session:
        location = await _post(session, a, name)
        location = await _patch(session, a, location, blob)
        await _put(session, a, location, digest)
        async with session.head(f"{b.url}/v2/{name}/blobs/{digest}") as r:
            assert r.status == 200 and r.headers["Content-Length"] == str(len(blob))
        assert await _read(session, b, name, digest) == (200, blob)
        status, part = await _read(session, b, name, digest, {"Range": "bytes=100-1099"})
        assert (status, part) == (206, blob[100:1100])
        # Another repository does not hold the layer: not served from a peer either.
        assert (await _read(session, b, _name("other"), digest))[0] == 404


async def test_patch_on_one_replica_put_on_the_other_reads_back_everywhere(
        pair: tuple[GatewayProcess, GatewayProcess]) -> None:
    """docker's shape: all bytes in one PATCH, then an empty PUT, on different replicas."""
    a, b = pair
    name = _name("split")
    blob = os.urandom(3 * MiB + 11)
    digest = digest_of(blob)
    async with aiohttp.ClientSession() as session:
        location = await _post(session, a, name)
        location = await _patch(session, a, location, blob)
        await _put(session, b, location, digest)
        assert await _read(session, b, name, digest) == (200, blob)
        assert await _read(session, a, name, digest) == (200, blob)


async def test_chunks_on_alternating_replicas_read_back_everywhere(
        pair: tuple[GatewayProcess, GatewayProcess]) -> None:
    """A chunked upload whose PATCHes and closing PUT (with the last chunk) alternate between
    replicas: each replica continuing it takes over the spool of the one before, so the blob
    reads back through both before any manifest references it."""
    a, b = pair
    name = _name("chunks")
    blob = os.urandom(2 * MiB + 13)
    digest = digest_of(blob)
    cuts = [0, MiB, MiB + 4321, 2 * MiB, len(blob)]
    async with aiohttp.ClientSession() as session:
        location = await _post(session, a, name)
        for number, (start, end) in enumerate(itertools.pairwise(cuts[:-1])):
            gateway = (a, b)[number % 2]
            async with session.patch(gateway.url + location, data=blob[start:end], headers={
                    **OCTET, "Content-Range": f"{start}-{end - 1}"}) as r:
                assert r.status == 202, await r.text()
                location = r.headers["Location"]
        await _put(session, b, location, digest, blob[cuts[-2]:])
        assert await _read(session, a, name, digest) == (200, blob)
        assert await _read(session, b, name, digest) == (200, blob)


async def test_a_large_chunked_upload_alternating_replicas_copies_each_byte_once(
        pair: tuple[GatewayProcess, GatewayProcess]) -> None:
    """Over 64 MiB in 16 MiB PATCHes alternating between the replicas, the last chunk with
    the PUT: the blob reads back through both before any manifest references it, and each
    replica continuing the upload copied only what the other received since it last held
    every byte (in all, the blob's size once), not the whole spool per request."""
    a, b = pair
    name = _name("large")
    chunk = 16 * MiB
    blob = os.urandom(5 * chunk + 7)
    digest = digest_of(blob)
    marks = (len(a.log_lines), len(b.log_lines))
    async with aiohttp.ClientSession() as session:
        location = await _post(session, a, name)
        for number, start in enumerate(range(0, 4 * chunk, chunk)):
            gateway = (a, b)[number % 2]
            async with session.patch(gateway.url + location, data=blob[start:start + chunk],
                                     headers={**OCTET, "Content-Range":
                                              f"{start}-{start + chunk - 1}"}) as r:
                assert r.status == 202, await r.text()
                location = r.headers["Location"]
        await _put(session, a, location, digest, blob[4 * chunk:])
        assert await _read(session, b, name, digest) == (200, blob)
        assert await _read(session, a, name, digest) == (200, blob)
    upload = location.split("?", 1)[0].rsplit("/", 1)[-1]
    copied = [entry["bytes_out"] for gateway, mark in zip((a, b), marks, strict=True)
              for entry in _access_since(gateway, mark)
              if entry["path"] == f"/_peer/spool/{upload}" and entry["status"] in (200, 206)]
    assert len(copied) == 4  # b, a, b, then a again with the last chunk: each one adopted
    assert sum(copied) == 4 * chunk  # each chunk copied once, to the replica without it


def _access_since(gateway: GatewayProcess, mark: int) -> list[dict[str, Any]]:
    lines = gateway.log_lines[mark:]
    return [json.loads(line.split(" gateway.access ", 1)[1])
            for line in lines if " gateway.access " in line]


async def test_the_internal_endpoint_refuses_strangers(
        pair: tuple[GatewayProcess, GatewayProcess]) -> None:
    a, _ = pair
    name = _name("stranger")
    blob = os.urandom(1000)
    digest = digest_of(blob)
    async with aiohttp.ClientSession() as session:
        location = await _post(session, a, name)
        await _put(session, a, location, digest, blob)
        in_progress = await _patch(session, a, await _post(session, a, name), blob)
        upload = in_progress.split("?", 1)[0].rsplit("/", 1)[-1]
        for proof in (None, "0" * 64):
            headers = {"X-Peer-Proof": proof} if proof else {}
            for path in (f"staged/{digest}", f"spool/{upload}"):
                async with session.get(f"{a.url}/_peer/{path}", headers=headers) as r:
                    assert r.status == 403
                    assert (await r.json())["errors"][0]["code"] == "DENIED"


async def test_a_proof_of_bytes_outside_ascii_is_refused_like_any_other(
        pair: tuple[GatewayProcess, GatewayProcess]) -> None:
    """A proof header holding UTF-8 or bytes no text encoding has is a stranger's proof
    (403), never a 500 with a traceback (the comparison is of bytes, in constant time)."""
    a, _ = pair
    blob = os.urandom(1000)
    digest = digest_of(blob)
    async with aiohttp.ClientSession() as session:
        await _put(session, a, await _post(session, a, _name("proof")), digest, blob)
    for proof in (b"\xc3\xa9" * 32, b"\xff" * 64):
        reader, writer = await asyncio.open_connection("127.0.0.1", a.port)
        writer.write(b"GET /_peer/staged/" + digest.encode() + b" HTTP/1.1\r\nHost: x\r\n"
                     b"X-Peer-Proof: " + proof + b"\r\nConnection: close\r\n\r\n")
        answer = await reader.read()
        writer.close()
        status_line, _, rest = answer.partition(b"\r\n")
        assert status_line.split()[1] == b"403", answer[:300]
        assert b'"DENIED"' in rest
    assert not any("Traceback" in line for line in a.log_lines)


async def test_staged_blobs_stay_readable_everywhere_after_redis_restarts_empty(
        upstream: EmulatorProcess, tmp_path: Path) -> None:
    """Redis restarts with nothing (no persistence): each replica tells it again what it has
    staged, and the peers' proof key is the new Redis's, also for a replica started since.
    That includes a blob whose PATCH went to one replica and its PUT to another (docker's
    shape): the replica finishing it has the spool's holder keep it as a staged blob at once,
    not only once someone reads it."""
    with RedisServer(tmp_path / "redis") as server:
        state = redis_state(server)
        with replica(tmp_path / "a", upstream, state) as a, \
                replica(tmp_path / "b", upstream, state) as b:
            name = _name("restart")
            read, split = os.urandom(MiB + 7), os.urandom(MiB + 9)
            async with aiohttp.ClientSession() as session:
                location = await _post(session, a, name)
                await _put(session, a, location, digest_of(read), read)
                assert await _read(session, b, name, digest_of(read)) == (200, read)
                location = await _patch(session, a, await _post(session, a, name), split)
                await _put(session, b, location, digest_of(split))
                kept = a.data_dir / "staging" / "blobs" / "sha256" / digest_of(split)[7:]
                await _until(lambda: kept.exists())
                server.stop()
                server.start()
                with replica(tmp_path / "c", upstream, state) as c:
                    for blob in (read, split):
                        digest = digest_of(blob)
                        await _until(functools.partial(_found, session, (b, c), name, digest))
                        assert await _read(session, b, name, digest) == (200, blob)
                        assert await _read(session, c, name, digest) == (200, blob)


async def _found(session: aiohttp.ClientSession, gateways: tuple[GatewayProcess, ...],
                 name: str, digest: str) -> bool:
    return [(await _read(session, g, name, digest))[0] for g in gateways] == [200] * len(gateways)


async def _until(check: Any, seconds: float = 15.0) -> None:
    """Wait until ``check()`` (or its awaited answer) is true, or ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if asyncio.iscoroutine(found):
            found = await found
        if found:
            return
        await asyncio.sleep(0.2)


async def test_attacker_holder_written_into_redis_reaches_no_other_path_or_host(
        pair: tuple[GatewayProcess, GatewayProcess], redis_server: RedisServer) -> None:
    """Someone who can write Redis names the holder of a staged blob: a URL whose query
    swallows the /_peer path (the metadata service's credentials, say), then a "replica"
    that redirects there. A replica asks neither, and relays nothing of theirs."""
    a, b = pair
    name = _name("poisoned")
    blob = os.urandom(1000)
    digest = digest_of(blob)

    async def credentials(request: web.Request) -> web.StreamResponse:
        return web.Response(status=206, body=b"ROLE-CREDENTIALS",
                            headers={"Content-Range": "bytes 0-15/16"})

    async with Server(credentials) as metadata:
        async def bounce(request: web.Request) -> web.StreamResponse:
            raise web.HTTPTemporaryRedirect(f"{metadata.as_localhost}/latest/meta-data/")

        async with Server(bounce) as bouncer, aiohttp.ClientSession() as session:
            await _put(session, a, await _post(session, a, name), digest, blob)
            key = redis_cli(redis_server.port, "--scan", "--pattern", f"*staged:{{{digest}}}")
            assert key, "the staged copy was not announced"
            for holder in (f"{metadata.url}/latest/meta-data/?", bouncer.url):
                redis_cli(redis_server.port, "DEL", key)
                redis_cli(redis_server.port, "HSET", key, holder, "")
                status, body = await _read(session, b, name, digest, {"Range": "bytes=0-15"})
                assert b"ROLE-CREDENTIALS" not in body, holder
                assert status in (404, 503), (status, body[:300])
            assert metadata.seen == []


async def _peer_key(a: GatewayProcess, redis_server: RedisServer) -> str:
    """The replicas' proof key, as whoever can read their Redis finds it."""
    prefix = a.config["state"]["key_prefix"]
    key = redis_cli(redis_server.port, "GET", f"{prefix}peer-key")
    if not key:  # made on first use: a proof checked (even a wrong one) makes it
        async with aiohttp.ClientSession() as session, session.get(
                f"{a.url}/_peer/staged/{digest_of(b'k')}", headers={"X-Peer-Proof": "0.0"}):
            pass
        key = redis_cli(redis_server.port, "GET", f"{prefix}peer-key")
    assert key
    return key


def _proof(key: str, subject: str, expiry: int) -> dict[str, str]:
    mac = hmac.new(key.encode(), f"{expiry}\n{subject}".encode(), hashlib.sha256).hexdigest()
    return {"X-Peer-Proof": f"{expiry}.{mac}"}


async def test_attacker_with_a_proof_names_no_file_outside_the_staging_store(
        pair: tuple[GatewayProcess, GatewayProcess], redis_server: RedisServer) -> None:
    """Even a request proved with the replicas' own key (say one leaked) reads no file but a
    staged blob or spool: a digest is parsed and an upload id matched before any path is
    made of it."""
    a, _ = pair
    (a.data_dir / "staging" / "secret").write_bytes(b"NOT-A-BLOB")
    key = await _peer_key(a, redis_server)

    def proof(subject: str) -> dict[str, str]:
        return _proof(key, subject, int(time.time()) + 60)

    names = ["..", "../secret", "..%2Fsecret", "%2e%2e%2Fsecret", "sha256:..%2F..%2Fsecret"]
    async with aiohttp.ClientSession() as session:
        for name in names:
            for kind, subject in (("staged", name), ("cached", name), ("spool", f"spool:{name}")):
                url = URL(f"{a.url}/_peer/{kind}/{name}", encoded=True)
                async with session.get(url, headers=proof(subject)) as r:
                    body = await r.read()
                assert b"NOT-A-BLOB" not in body, (kind, name)
                assert r.status in (400, 403, 404), (kind, name, r.status)


async def _capture_proof(session: aiohttp.ClientSession, redis_server: RedisServer,
                         reader: GatewayProcess, name: str, digest: str) -> str:
    """The proof ``reader`` sends the holder of a staged ``digest``, as someone watching
    peer traffic in clear sees it (the holder's record points at a listener for it)."""
    seen: list[str] = []

    async def listener(request: web.Request) -> web.StreamResponse:
        seen.append(request.headers.get("X-Peer-Proof", ""))
        return web.Response(status=404)

    key = redis_cli(redis_server.port, "--scan", "--pattern", f"*staged:{{{digest}}}")
    assert key, "the staged copy was not announced"
    held = redis_cli(redis_server.port, "HKEYS", key).split("\n")  # put whole: no upload
    async with Server(listener) as watcher:
        redis_cli(redis_server.port, "DEL", key)
        redis_cli(redis_server.port, "HSET", key, watcher.url, "")
        await _read(session, reader, name, digest)
    redis_cli(redis_server.port, "DEL", key)
    redis_cli(redis_server.port, "HSET", key, *(item for url in held for item in (url, "")))
    assert seen and seen[0], "no proof was sent"
    return seen[0]


async def test_a_proof_seen_on_the_way_is_good_for_a_minute_and_one_blob_only(
        pair: tuple[GatewayProcess, GatewayProcess], redis_server: RedisServer) -> None:
    """A proof is bound to one blob and to a time a minute ahead: a captured one works for
    that blob until then, never for another, nor under another proof's time; a proof past
    its time or good for hours more is refused like a wrong one (403 DENIED)."""
    a, b = pair
    name = _name("expiry")
    first, second = os.urandom(1000), os.urandom(1001)
    key = await _peer_key(a, redis_server)
    async with aiohttp.ClientSession() as session:
        for blob in (first, second):
            await _put(session, a, await _post(session, a, name), digest_of(blob), blob)
        captured = {}
        for blob in (first, second):
            captured[blob] = await _capture_proof(session, redis_server, b, name,
                                                  digest_of(blob))
            await asyncio.sleep(1.1)  # the two proofs' times differ
        now = time.time()
        for blob, proof in captured.items():
            expiry, _, _ = proof.partition(".")
            assert expiry.isdigit(), proof  # the time it is good until goes with it
            assert now < int(expiry) <= now + 61, proof
            assert _proof(key, digest_of(blob), int(expiry))["X-Peer-Proof"] == proof

        async def peer_read(blob: bytes, proof: str) -> int:
            async with session.get(f"{a.url}/_peer/staged/{digest_of(blob)}",
                                   headers={"X-Peer-Proof": proof}) as r:
                if r.status == 403:
                    assert (await r.json())["errors"][0]["code"] == "DENIED"
                return r.status

        # Replayed within its minute, for its own blob only.
        assert await peer_read(first, captured[first]) == 200
        assert await peer_read(second, captured[first]) == 403
        # One blob's MAC under the other's expiry, or under a later one.
        first_expiry, _, first_mac = captured[first].partition(".")
        second_expiry, _, _ = captured[second].partition(".")
        assert first_expiry != second_expiry
        assert await peer_read(first, f"{second_expiry}.{first_mac}") == 403
        assert await peer_read(first, f"{int(first_expiry) - 1}.{first_mac}") == 403
        # Good for hours more: refused, even made with the key.
        assert await peer_read(first, _proof(key, digest_of(first),
                                             int(time.time()) + 3600)["X-Peer-Proof"]) == 403
        # A proof replayed after its time: refused.
        short = _proof(key, digest_of(first), int(time.time()) + 2)["X-Peer-Proof"]
        assert await peer_read(first, short) == 200
        await asyncio.sleep(3.2)
        assert await peer_read(first, short) == 403
        # A proof without its time (what a replica before expiries sends).
        bare = hmac.new(key.encode(), digest_of(first).encode(), hashlib.sha256).hexdigest()
        assert await peer_read(first, bare) == 403
        # Normal reads through the other replica still work.
        assert await _read(session, b, name, digest_of(first)) == (200, first)


async def test_a_replica_refusing_the_proof_is_read_as_an_unreachable_one(
        pair: tuple[GatewayProcess, GatewayProcess], redis_server: RedisServer) -> None:
    """During a rolling upgrade a replica of the other version refuses this one's proofs
    (403): the read is a 503 with Retry-After, as when the holder is unreachable, never a
    client error; the refusal is logged once a minute, naming the replica."""
    a, b = pair
    name = _name("upgrade")
    blob = os.urandom(1000)
    digest = digest_of(blob)

    async def other_version(request: web.Request) -> web.StreamResponse:
        return web.json_response({"errors": [{"code": "DENIED", "message": "denied"}]},
                                 status=403)

    async with Server(other_version) as old, aiohttp.ClientSession() as session:
        await _put(session, a, await _post(session, a, name), digest, blob)
        key = redis_cli(redis_server.port, "--scan", "--pattern", f"*staged:{{{digest}}}")
        redis_cli(redis_server.port, "DEL", key)
        redis_cli(redis_server.port, "HSET", key, old.url, "")
        for _ in range(3):
            async with session.get(f"{b.url}/v2/{name}/blobs/{digest}") as r:
                assert r.status == 503, await r.text()
                assert r.headers["Retry-After"] == "1"
                assert (await r.json())["errors"][0]["code"] == "UNAVAILABLE"
        assert len(old.seen) == 3
    text = f"replica {old.url} refused this replica's proof"
    assert await b.logged(text)
    assert sum(text in line for line in b.log_lines) == 1


async def test_a_peer_read_for_a_mount_follows_no_redirect_with_its_proof(
        pair: tuple[GatewayProcess, GatewayProcess], redis_server: RedisServer) -> None:
    """A mount reads the source's blob from the replica holding it, with a proof: a holder
    (a forged record, a replica's proxy) answering with a redirect does not send the proof,
    nor the read, to the host it names; the mount falls back to an upload."""
    a, b = pair
    source, target = _name("mount-src"), _name("mount-dst")
    blob = os.urandom(2000)
    digest = digest_of(blob)
    elsewhere_seen: list[str] = []

    async def elsewhere(request: web.Request) -> web.StreamResponse:
        elsewhere_seen.append(request.headers.get("X-Peer-Proof", ""))
        return web.Response(body=blob)

    async with aiohttp.ClientSession() as session, Server(elsewhere) as other:
        async def redirecting(request: web.Request) -> web.StreamResponse:
            if request.method == "HEAD":
                return web.Response(headers={"Content-Length": str(len(blob))})
            raise web.HTTPTemporaryRedirect(f"{other.as_localhost}{request.path}")

        await _put(session, a, await _post(session, a, source), digest, blob)
        key = redis_cli(redis_server.port, "--scan", "--pattern", f"*staged:{{{digest}}}")
        assert key, "the staged copy was not announced"
        held = redis_cli(redis_server.port, "HKEYS", key).split("\n")
        async with Server(redirecting) as holder:
            redis_cli(redis_server.port, "DEL", key)
            redis_cli(redis_server.port, "HSET", key, holder.url, "")
            try:
                async with session.post(f"{b.url}/v2/{target}/blobs/uploads/",
                                        params={"mount": digest, "from": source}) as r:
                    status = r.status
            finally:
                redis_cli(redis_server.port, "DEL", key)
                redis_cli(redis_server.port,
                          "HSET", key, *(item for url in held for item in (url, "")))
            asked_holder = [path for path, _ in holder.seen]
    assert asked_holder, "the mount never asked the holder"
    assert elsewhere_seen == [], elsewhere_seen
    assert status == 202, status  # not mounted: the client uploads the blob instead


async def test_a_wrong_upload_of_a_digest_takes_no_other_upload_s_holder_away(
        pair: tuple[GatewayProcess, GatewayProcess], redis_server: RedisServer) -> None:
    """Replicas record a staged blob's holder before ECR checks the bytes, and take the
    record back when they prove wrong. One client's upload claiming a digest for other bytes,
    through the replica holding another client's copy of that blob, took that replica's
    record away with its own: the other replica answered 404 for a blob it had just been told
    was stored (until a manifest referenced it). Now the record stands as it was before."""
    a, b = pair
    victim, other = _name("holder-kept"), _name("wrong-bytes")
    blob = os.urandom(1000)
    digest = digest_of(blob)
    async with aiohttp.ClientSession() as session:
        await _put(session, a, await _post(session, a, victim), digest, blob)
        key = redis_cli(redis_server.port, "--scan", "--pattern", f"*staged:{{{digest}}}")
        assert key, "the staged copy was not recorded"
        recorded = redis_cli(redis_server.port, "HGETALL", key)
        location = await _post(session, a, other)
        sep = "&" if "?" in location else "?"
        async with session.put(f"{a.url}{location}{sep}digest={digest}",
                               data=os.urandom(1000), headers=OCTET) as r:
            assert r.status == 400, await r.text()
            assert (await r.json())["errors"][0]["code"] == "DIGEST_INVALID"
        assert redis_cli(redis_server.port, "HGETALL", key) == recorded
        assert await _read(session, b, victim, digest) == (200, blob)
        # A digest nobody else holds: its record goes with the wrong bytes.
        unheld = digest_of(os.urandom(1000))
        location = await _post(session, a, other)
        sep = "&" if "?" in location else "?"
        async with session.put(f"{a.url}{location}{sep}digest={unheld}",
                               data=os.urandom(1000), headers=OCTET) as r:
            assert r.status == 400, await r.text()
        assert redis_cli(redis_server.port, "--scan", "--pattern", f"*staged:{{{unheld}}}") == ""
