"""The emulator's injected faults, and the gateway surviving each of them.

Each replay test injects one fault at a precise point and then reads the emulator's request
log: what was sent twice, what was refused, and whether the client saw success.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from botocore.exceptions import ClientError, ConnectionClosedError

from tests.integration.reliability.helpers import (
    MiB,
    faults_admin,
    image_manifest,
    injected,
    set_faults,
)
from tests.support.emulator import EmulatorProcess, ecr_client
from tests.support.gateway import GatewayProcess
from tests.support.oci import OciClient, digest_of


@pytest.fixture(scope="module")
def faultgw(upstream: EmulatorProcess,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """A gateway that gives up quickly (1 s of retries), whose breaker closes again fast,
    and that caches no manifest (every read reaches the emulator)."""
    config = {"upstream": {"retry_budget_seconds": 1.0, "breaker_open_seconds": 0.5},
              "cache": {"manifest_max_bytes": 0, "tag_ttl_seconds": 0}}  # every read is a call
    with GatewayProcess(tmp_path_factory.mktemp("gw"), config,
                        upstream_url=upstream.url) as gateway:
        yield gateway


@pytest.fixture
async def client(faultgw: GatewayProcess,
                 upstream: EmulatorProcess) -> AsyncIterator[OciClient]:
    faults_admin(upstream, "DELETE")
    upstream.clear_requests()
    async with aiohttp.ClientSession() as session:
        yield OciClient(session, faultgw.url)
    faults_admin(upstream, "DELETE")


def calls(upstream: EmulatorProcess, action: str, repository: str) -> list[dict[str, Any]]:
    return [e for e in upstream.requests(action) if e.get("repository") == repository]


# -- the emulator's side ----------------------------------------------------------------------

async def test_rates_are_reproducible_with_a_seed(upstream: EmulatorProcess) -> None:
    async def outcomes() -> list[str]:
        seen = []
        async with ecr_client(upstream.url, retries={"total_max_attempts": 1}) as ecr:
            for _ in range(40):
                try:
                    await ecr.describe_repositories(maxResults=1)
                    seen.append("ok")
                except ClientError as exc:
                    seen.append(exc.response["Error"]["Code"])
        return seen

    rule = {"action": "DescribeRepositories", "error": "ThrottlingException", "rate": 0.3}
    set_faults(upstream, [rule], seed=7)
    first = await outcomes()
    set_faults(upstream, [rule], seed=7)
    second = await outcomes()
    faults_admin(upstream, "DELETE")
    throttled = first.count("ThrottlingException")
    print(f"\nrate 0.3 over 40 calls: {throttled} throttled, same sequence with the same seed")
    assert first == second
    assert 4 <= throttled <= 24 and set(first) == {"ok", "ThrottlingException"}


async def test_latency_disconnect_and_stored_then_refused(upstream: EmulatorProcess) -> None:
    name = f"faults/kinds-{os.urandom(3).hex()}"
    async with ecr_client(upstream.url, retries={"total_max_attempts": 1}) as ecr:
        set_faults(upstream, [{"action": "DescribeRepositories", "latency": 0.3, "rate": 1.0}],
                   seed=1)
        started = time.monotonic()
        await ecr.describe_repositories(maxResults=1)
        assert time.monotonic() - started >= 0.3

        # Connection closed mid-response: the client sees no answer, yet the action ran.
        set_faults(upstream, [{"action": "CreateRepository", "disconnect": True}], seed=1)
        with pytest.raises(ConnectionClosedError):
            await ecr.create_repository(repositoryName=name)
        await ecr.describe_repositories(repositoryNames=[name])

        # The part is stored, yet the answer is InvalidLayerPartException with the truth.
        set_faults(upstream, [{"action": "UploadLayerPart", "error": "InvalidLayerPartException",
                               "after": True}], seed=1)
        upload = (await ecr.initiate_layer_upload(repositoryName=name))["uploadId"]
        with pytest.raises(ClientError) as refused:
            await ecr.upload_layer_part(repositoryName=name, uploadId=upload, partFirstByte=0,
                                        partLastByte=99, layerPartBlob=b"a" * 100)
        assert refused.value.response["lastValidByteReceived"] == 99
        answer = await ecr.upload_layer_part(repositoryName=name, uploadId=upload,
                                             partFirstByte=100, partLastByte=109,
                                             layerPartBlob=b"b" * 10)
        assert answer["lastByteReceived"] == 109
    stats = injected(upstream)
    assert stats["CreateRepository"] == {"disconnect": 1}
    assert stats["UploadLayerPart"] == {"InvalidLayerPartException (after)": 1}
    faults_admin(upstream, "DELETE")


def test_rules_from_the_environment(tmp_path: Path) -> None:
    rules = {"seed": 3, "rules": [{"action": "PutImage", "error": "ServerException",
                                   "rate": 0.5}]}
    with EmulatorProcess(tmp_path / "ecr", env={"ECR_EMULATOR_FAULTS": json.dumps(rules)}) as emu:
        listed = faults_admin(emu, "GET")
    assert listed["seed"] == 3
    assert [(f["action"], f["error"], f["rate"]) for f in listed["faults"]] == [
        ("PutImage", "ServerException", 0.5)]


# -- the gateway's side -----------------------------------------------------------------------

async def test_a_part_that_landed_is_not_sent_twice(client: OciClient,
                                                    upstream: EmulatorProcess) -> None:
    """The first part is stored but answered with InvalidLayerPartException: the gateway
    reads lastValidByteReceived, counts the part as stored and goes on."""
    name = f"faults/part-{os.urandom(3).hex()}"
    set_faults(upstream, [{"action": "UploadLayerPart", "error": "InvalidLayerPartException",
                           "after": True}], seed=1)
    data = os.urandom(12 * MiB)
    digest = await client.push_blob(name, data)
    parts = calls(upstream, "UploadLayerPart", name)
    print(f"\nUploadLayerPart calls: {[(p['outcome'], p.get('faults')) for p in parts]}")
    assert [p["outcome"] for p in parts] == ["InvalidLayerPartException", "ok"]
    assert await client.get_blob(name, digest) == data


async def test_a_part_whose_answer_was_cut_is_detected(client: OciClient,
                                                       upstream: EmulatorProcess) -> None:
    """The connection closes after the part was stored: the retry is refused as out of order
    with lastValidByteReceived = its last byte, which the gateway takes as stored."""
    name = f"faults/cut-{os.urandom(3).hex()}"
    set_faults(upstream, [{"action": "UploadLayerPart", "disconnect": True}], seed=1)
    data = os.urandom(12 * MiB)
    digest = await client.push_blob(name, data)
    parts = calls(upstream, "UploadLayerPart", name)
    assert [p["outcome"] for p in parts] == ["ok", "InvalidLayerPartException", "ok"]
    assert parts[0]["faults"] == ["disconnect"]
    assert await client.get_blob(name, digest) == data


async def test_a_completion_whose_answer_was_cut_is_success(client: OciClient,
                                                            upstream: EmulatorProcess) -> None:
    name = f"faults/complete-{os.urandom(3).hex()}"
    set_faults(upstream, [{"action": "CompleteLayerUpload", "disconnect": True}], seed=1)
    data = os.urandom(64 * 1024)
    digest = await client.push_blob(name, data)  # asserts 201
    completions = calls(upstream, "CompleteLayerUpload", name)
    assert [c["outcome"] for c in completions] == ["ok", "UploadNotFoundException"]
    async with client.session.head(client.url(f"/v2/{name}/blobs/{digest}")) as head:
        assert head.status == 200 and int(head.headers["Content-Length"]) == len(data)
    assert await client.get_blob(name, digest) == data


async def test_a_put_image_whose_answer_was_cut_is_success(client: OciClient,
                                                           upstream: EmulatorProcess) -> None:
    name = f"faults/image-{os.urandom(3).hex()}"
    layer, config = os.urandom(1000), b'{"architecture":"amd64","os":"linux"}'
    await client.push_blob(name, layer)
    await client.push_blob(name, config)
    manifest = image_manifest(config, [layer])
    set_faults(upstream, [{"action": "PutImage", "disconnect": True}], seed=1)
    async with client.session.put(client.url(f"/v2/{name}/manifests/v1"), data=manifest,
                                  headers={"Content-Type": "application/vnd.oci.image."
                                                           "manifest.v1+json"}) as r:
        assert r.status == 201, await r.text()
        assert r.headers["Docker-Content-Digest"] == digest_of(manifest)
    assert [c["outcome"] for c in calls(upstream, "PutImage", name)] == [
        "ok", "ImageAlreadyExistsException"]
    async with client.session.get(client.url(f"/v2/{name}/manifests/v1")) as r:
        assert r.status == 200 and await r.read() == manifest


@pytest.mark.parametrize("by", ["digest", "tag"])
async def test_a_delete_whose_answer_was_cut_is_success(client: OciClient,
                                                        upstream: EmulatorProcess,
                                                        by: str) -> None:
    """The first BatchDeleteImage lands but its answer is lost; the replay finds nothing to
    delete. The client still gets 202 (DELETE is idempotent), and the image is gone."""
    name = f"faults/delete-{os.urandom(3).hex()}"
    digest, _ = await client.push_image(name, "v1", [os.urandom(1000)])
    reference = digest if by == "digest" else "v1"
    set_faults(upstream, [{"action": "BatchDeleteImage", "disconnect": True}], seed=1)
    async with client.session.delete(client.url(f"/v2/{name}/manifests/{reference}")) as r:
        assert r.status == 202, await r.text()
    replays = calls(upstream, "BatchDeleteImage", name)
    # An untag then deletes the holder that kept the image referenced meanwhile.
    assert len(replays) == (2 if by == "digest" else 3)
    assert replays[0]["faults"] == ["disconnect"]
    async with client.session.get(client.url(f"/v2/{name}/manifests/{reference}")) as r:
        assert r.status == 404
    # Without a lost answer, deleting what is absent stays 404 MANIFEST_UNKNOWN.
    async with client.session.delete(client.url(f"/v2/{name}/manifests/{reference}")) as r:
        assert r.status == 404
        assert (await r.json())["errors"][0]["code"] == "MANIFEST_UNKNOWN"


async def test_throttle_and_server_storms_end_in_retriable_errors(
        client: OciClient, upstream: EmulatorProcess) -> None:
    """Beyond the retry budget a throttle is 429 and a server fault 503, both with
    Retry-After; a dead endpoint opens the breaker (fast 503s) until it answers again."""
    name = f"faults/storm-{os.urandom(3).hex()}"
    set_faults(upstream, [{"action": "BatchGetImage", "error": "ThrottlingException",
                           "rate": 1.0}], seed=1)
    started = time.monotonic()
    async with client.session.get(client.url(f"/v2/{name}/manifests/v1")) as r:
        assert r.status == 429 and "Retry-After" in r.headers
        assert (await r.json())["errors"][0]["code"] == "TOOMANYREQUESTS"
    assert time.monotonic() - started < 5
    throttled = len(calls(upstream, "BatchGetImage", name))
    assert throttled >= 2  # it was retried

    set_faults(upstream, [{"action": "BatchGetImage", "error": "ServerException",
                           "rate": 1.0}], seed=1)
    async with client.session.get(client.url(f"/v2/{name}/manifests/v1")) as r:
        assert r.status == 503 and "Retry-After" in r.headers
        assert (await r.json())["errors"][0]["code"] == "UNAVAILABLE"
    # Five server faults in a row open the breaker: the next request is refused at once.
    before = len(calls(upstream, "BatchGetImage", name))
    async with client.session.get(client.url(f"/v2/{name}/manifests/v2")) as r:
        assert r.status == 503 and "Retry-After" in r.headers
    assert len(calls(upstream, "BatchGetImage", name)) - before <= 1
    faults_admin(upstream, "DELETE")
    await asyncio.sleep(0.6)  # breaker_open_seconds: then one probe closes it
    async with client.session.get(client.url(f"/v2/{name}/manifests/v1")) as r:
        assert r.status == 404  # the upstream answers again: the repository does not exist
    print(f"\nthrottle storm: {throttled} BatchGetImage attempts before 429")


async def test_cut_answers_of_reads_are_retried(client: OciClient,
                                                upstream: EmulatorProcess) -> None:
    name = f"faults/read-{os.urandom(3).hex()}"
    digest, manifest = await client.push_image(name, "v1", [os.urandom(2000)])
    set_faults(upstream, [{"action": "BatchGetImage", "disconnect": True, "count": 2}], seed=1)
    async with client.session.get(client.url(f"/v2/{name}/manifests/{digest}")) as r:
        assert r.status == 200 and await r.read() == manifest
    assert [c["outcome"] for c in calls(upstream, "BatchGetImage", name)][-3:] == ["ok"] * 3


async def test_a_session_behind_ecr_realigns(client: OciClient, upstream: EmulatorProcess) -> None:
    """A part lands but every answer about it is lost (the request ends in 429), so the
    session still counts it as tail; the client then sends the rest in one PATCH, which the
    gateway cuts differently. ECR reports it holds more: the gateway skips what ECR has,
    answers 503 with the Range to continue from, and the upload completes byte-exact."""
    name = f"faults/realign-{os.urandom(3).hex()}"
    data = os.urandom(14 * MiB)
    location = await client.start(name)
    for offset in range(0, 4 * MiB, MiB):  # 4 MiB of tail: under ECR's part minimum
        r = await client.patch(location, data[offset:offset + MiB], offset)
        assert r.status == 202
        location = r.headers["Location"]
    set_faults(upstream, [
        {"action": "UploadLayerPart", "error": "ServerException", "after": True, "count": 1},
        {"action": "UploadLayerPart", "error": "ThrottlingException", "rate": 1.0}], seed=1)
    r = await client.patch(location, data[4 * MiB:6 * MiB], 4 * MiB)  # 6 MiB: a part goes
    assert r.status == 429 and r.headers["Retry-After"]
    faults_admin(upstream, "DELETE")
    async with client.session.get(client.url(location)) as status:
        assert status.headers["Range"] == f"0-{6 * MiB - 1}"  # received, not yet committed
    r = await client.patch(location, data[6 * MiB:], 6 * MiB)
    assert r.status == 503 and r.headers["Retry-After"] == "0", r.body
    received = int(r.headers["Range"].split("-")[1]) + 1
    if received < len(data):
        r = await client.patch(location, data[received:], received)
        assert r.status == 202, r.body
    r = await client.put(location, digest_of(data))
    assert r.status == 201, r.body
    assert await client.get_blob(name, digest_of(data)) == data
    parts = calls(upstream, "UploadLayerPart", name)
    print(f"\nrealign: UploadLayerPart outcomes {[p['outcome'] for p in parts]}")
