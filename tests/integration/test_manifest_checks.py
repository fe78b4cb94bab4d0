"""A pushed manifest is checked against what the repository holds before PutImage.

Every descriptor must name stored content at its stored size (index children: a stored
manifest of that media type); the manifest's own type must be stated. A push through the
gateway costs no more ECR calls than before: the sizes are known from its own uploads.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess
from tests.support.oci import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, OciClient, Reply, digest_of

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
CONFIG = b'{"architecture":"amd64","os":"linux"}'


@pytest.fixture
async def client(gateway: GatewayProcess) -> AsyncIterator[OciClient]:
    async with aiohttp.ClientSession() as session:
        yield OciClient(session, gateway.url)


def _descriptor(data: bytes, media_type: str = OCI_LAYER) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest_of(data), "size": len(data)}


def _image(layers: list[dict[str, Any]], config: bytes = CONFIG) -> dict[str, Any]:
    return {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": _descriptor(config, OCI_CONFIG), "layers": layers}


async def _put(client: OciClient, repo: str, reference: str, doc: dict[str, Any] | bytes,
               content_type: str | None = OCI_MANIFEST) -> Reply:
    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    headers = {"Content-Type": content_type} if content_type else {}
    async with client.session.put(client.url(f"/v2/{repo}/manifests/{reference}"), data=body,
                                  headers=headers, skip_auto_headers=["Content-Type"]) as r:
        return Reply(r.status, r.headers, await r.read())


def _error(reply: Reply, code: str) -> dict[str, Any]:
    assert reply.status == 400, (reply.status, reply.body)
    error: dict[str, Any] = json.loads(reply.body)["errors"][0]
    assert error["code"] == code, error
    return error


def _calls(upstream: EmulatorProcess, repo: str) -> list[str]:
    return [e["action"] for e in upstream.requests() if e.get("repository") == repo]


async def test_a_pushed_image_costs_no_extra_call(client: OciClient, upstream: EmulatorProcess,
                                                  repo: str) -> None:
    layers = [os.urandom(1000 + i) for i in range(3)]
    for blob in [*layers, CONFIG]:
        await client.push_blob(repo, blob)
    upstream.clear_requests()
    reply = await _put(client, repo, "v1", _image([_descriptor(layer) for layer in layers]))
    assert reply.status == 201, reply.body
    assert _calls(upstream, repo) == ["PutImage"]


async def test_wrong_size_is_refused_naming_the_descriptor(
        client: OciClient, upstream: EmulatorProcess, repo: str) -> None:
    layer = os.urandom(1000)
    for blob in (layer, CONFIG):
        await client.push_blob(repo, blob)
    wrong = {**_descriptor(layer), "size": 999}
    upstream.clear_requests()
    error = _error(await _put(client, repo, "v1", _image([_descriptor(layer), wrong])),
                   "MANIFEST_INVALID")
    assert error["detail"]["field"] == "layers[1]"
    assert error["detail"]["descriptor"] == wrong and error["detail"]["stored_size"] == 1000
    assert "PutImage" not in _calls(upstream, repo)


async def test_sizes_not_known_locally_take_one_call(client: OciClient, gateway: GatewayProcess,
                                                     upstream: EmulatorProcess,
                                                     repo: str) -> None:
    """Blobs uploaded through another gateway: one BatchCheckLayerAvailability for all."""
    layers = [os.urandom(500 + i) for i in range(3)]
    with GatewayProcess(gateway.data_dir.with_name(gateway.data_dir.name + "-other"),
                        upstream_url=upstream.url) as other:
        async with aiohttp.ClientSession() as session:
            for blob in [*layers, CONFIG]:
                await OciClient(session, other.url).push_blob(repo, blob)
    upstream.clear_requests()
    bad = [_descriptor(layers[0]), {**_descriptor(layers[1]), "size": 1}, _descriptor(layers[2])]
    _error(await _put(client, repo, "v1", _image(bad)), "MANIFEST_INVALID")
    assert _calls(upstream, repo) == ["BatchCheckLayerAvailability"]
    upstream.clear_requests()
    reply = await _put(client, repo, "v1", _image([_descriptor(layer) for layer in layers]))
    assert reply.status == 201, reply.body
    assert _calls(upstream, repo) == ["PutImage"]  # learned from the first check


async def test_missing_blob_is_manifest_blob_unknown(client: OciClient, repo: str) -> None:
    await client.push_blob(repo, CONFIG)
    absent = _descriptor(os.urandom(100))
    error = _error(await _put(client, repo, "v1", _image([absent])), "MANIFEST_BLOB_UNKNOWN")
    assert error["detail"] == {"field": "layers[0]", "descriptor": absent}
    other = os.urandom(100)
    error = _error(await _put(client, repo, "v1", _image([], config=other)),
                   "MANIFEST_BLOB_UNKNOWN")
    assert error["detail"]["field"] == "config"


async def test_index_children_are_checked(client: OciClient, upstream: EmulatorProcess,
                                          repo: str) -> None:
    digest, manifest = await client.push_image(repo, "amd64", [os.urandom(300)])
    child = {"mediaType": OCI_MANIFEST, "digest": digest, "size": len(manifest)}

    def index(*children: dict[str, Any]) -> dict[str, Any]:
        return {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": list(children)}

    upstream.clear_requests()
    reply = await _put(client, repo, "multi", index(child), OCI_INDEX)
    assert reply.status == 201, reply.body
    assert _calls(upstream, repo) == ["PutImage"]  # the child was just pushed: cached

    error = _error(await _put(client, repo, "bad", index({**child, "size": 1}), OCI_INDEX),
                   "MANIFEST_INVALID")
    assert error["detail"]["field"] == "manifests[0]"
    error = _error(await _put(client, repo, "bad", index(
        {**child, "mediaType": "application/vnd.docker.distribution.manifest.v2+json"}),
        OCI_INDEX), "MANIFEST_INVALID")
    assert error["detail"]["stored_media_type"] == OCI_MANIFEST
    absent = {**child, "digest": digest_of(b"no such manifest")}
    error = _error(await _put(client, repo, "bad", index(absent), OCI_INDEX),
                   "MANIFEST_BLOB_UNKNOWN")
    assert error["detail"]["descriptor"] == absent


async def test_a_subject_need_not_exist(client: OciClient, repo: str) -> None:
    for blob in (CONFIG, b"sig"):
        await client.push_blob(repo, blob)
    doc = {**_image([_descriptor(b"sig")]),
           "subject": {"mediaType": OCI_MANIFEST, "digest": digest_of(b"elsewhere"), "size": 9}}
    reply = await _put(client, repo, digest_of(json.dumps(doc).encode()), doc)
    assert reply.status == 201, reply.body


async def test_the_manifest_type_must_be_stated(client: OciClient, repo: str) -> None:
    await client.push_blob(repo, CONFIG)
    doc = _image([])
    del doc["mediaType"]
    _error(await _put(client, repo, "v1", doc, content_type=None), "MANIFEST_INVALID")
    reply = await _put(client, repo, "v1", doc, content_type=OCI_MANIFEST)
    assert reply.status == 201, reply.body


async def test_thousands_of_absent_descriptors_cost_one_call(
        client: OciClient, upstream: EmulatorProcess, repo: str) -> None:
    """A pusher's 4 MiB manifest names 20,000 blobs (or child manifests) the repository does
    not hold: refused after the first batch of 100 that lacks one, not after 200 calls
    spent of the identity every client shares."""
    await client.push_blob(repo, CONFIG)
    absent = [_descriptor(f"absent {i}".encode()) for i in range(20_000)]
    upstream.clear_requests()
    error = _error(await _put(client, repo, "v1", _image(absent)), "MANIFEST_BLOB_UNKNOWN")
    assert error["detail"]["field"] == "layers[0]"
    assert _calls(upstream, repo) == ["BatchCheckLayerAvailability"]

    children = [{**child, "mediaType": OCI_MANIFEST} for child in absent]
    upstream.clear_requests()
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children}
    error = _error(await _put(client, repo, "v1", index, OCI_INDEX), "MANIFEST_BLOB_UNKNOWN")
    assert error["detail"]["field"] == "manifests[0]"
    assert _calls(upstream, repo) == ["BatchGetImage"]
