"""Referrers of pulled-through images: an image imported through a pull through cache rule
brings the manifests whose subject it is (from the upstream's referrers API, or the referrers
tag schema's ``sha256-<hex>`` index that CNCF distribution 2.8 serves in its place), and
ListImageReferrers fetches those the repository still lacks; a referrer's artifactStatus
follows its storage class."""

from __future__ import annotations

import json
import os
from typing import Any

import aiohttp
import pytest

from tests.emulator.model.conftest import Registry
from tests.emulator.model.test_pull_through import dead_url, prefix, push_upstream
from tests.support.oci import OciClient, digest_of

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
EMPTY = "application/vnd.oci.empty.v1+json"
SBOM = "application/vnd.example.sbom.v1+json"
SIGNATURE = "application/vnd.example.signature.v1+json"


async def push_referrer(registry: Registry, name: str, subject: str, subject_size: int,
                        artifact_type: str) -> tuple[str, bytes]:
    """An artifact manifest whose subject is ``subject``, pushed by digest."""
    payload = json.dumps({"nonce": os.urandom(8).hex()}).encode()
    async with aiohttp.ClientSession() as session:
        client = OciClient(session, registry.url)
        config_digest = await client.push_blob(name, b"{}")
        layer_digest = await client.push_blob(name, payload)
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": artifact_type,
            "config": {"mediaType": EMPTY, "digest": config_digest, "size": 2},
            "layers": [{"mediaType": artifact_type, "digest": layer_digest,
                        "size": len(payload)}],
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": subject_size},
        }).encode()
        digest = digest_of(manifest)
        async with session.put(client.url(f"/v2/{name}/manifests/{digest}"), data=manifest,
                               headers={"Content-Type": OCI_MANIFEST}) as r:
            assert r.status == 201, await r.text()
    return digest, manifest


async def publish_referrers_tag(registry: Registry, name: str, subject: str,
                                referrers: list[tuple[str, bytes, str]]) -> None:
    """The referrers tag schema: an index of the referrers under tag ``sha256-<hex>``."""
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": digest, "size": len(manifest),
         "artifactType": artifact_type} for digest, manifest, artifact_type in referrers]})
    async with aiohttp.ClientSession() as session, session.put(
            OciClient(session, registry.url).url(
                f"/v2/{name}/manifests/{subject.replace(':', '-')}"),
            data=index.encode(), headers={"Content-Type": OCI_INDEX}) as r:
        assert r.status == 201, await r.text()


async def test_pulled_image_brings_its_referrers(ecr: Any, upstream: Registry) -> None:
    name = prefix()
    subject, manifest, _ = await push_upstream(upstream, "library/signed", "1.0")
    sbom = (*await push_referrer(upstream, "library/signed", subject, len(manifest), SBOM),
            SBOM)
    await publish_referrers_tag(upstream, "library/signed", subject, [sbom])
    await ecr.create_pull_through_cache_rule(ecrRepositoryPrefix=name,
                                             upstreamRegistryUrl=upstream.url)
    repository = f"{name}/library/signed"
    got = await ecr.batch_get_image(repositoryName=repository, imageIds=[{"imageTag": "1.0"}])
    assert got["failures"] == []

    # The import brought the referrer along: it is an (untagged) image of the repository.
    described = await ecr.describe_images(repositoryName=repository,
                                          imageIds=[{"imageDigest": sbom[0]}])
    (detail,) = described["imageDetails"]
    assert detail["imageManifestMediaType"] == OCI_MANIFEST and "imageTags" not in detail
    referrers = await ecr.list_image_referrers(repositoryName=repository,
                                               subjectId={"imageDigest": subject})
    assert referrers["referrers"] == [{
        "digest": sbom[0], "mediaType": OCI_MANIFEST, "artifactType": SBOM,
        "size": len(sbom[1]), "artifactStatus": "ACTIVE"}]

    # A referrer added upstream later is fetched when the referrers are listed.
    signature = (*await push_referrer(upstream, "library/signed", subject, len(manifest),
                                      SIGNATURE), SIGNATURE)
    await publish_referrers_tag(upstream, "library/signed", subject, [sbom, signature])
    listed = await ecr.list_image_referrers(repositoryName=repository,
                                            subjectId={"imageDigest": subject})
    assert [r["digest"] for r in listed["referrers"]] == [sbom[0], signature[0]]
    only = await ecr.list_image_referrers(repositoryName=repository,
                                          subjectId={"imageDigest": subject},
                                          filter={"artifactTypes": [SIGNATURE]})
    assert [r["digest"] for r in only["referrers"]] == [signature[0]]
    # Its layer follows on demand like any pulled-through layer.
    pulled = await ecr.batch_get_image(repositoryName=repository,
                                       imageIds=[{"imageDigest": signature[0]}])
    layer = json.loads(pulled["images"][0]["imageManifest"])["layers"][0]["digest"]
    url = (await ecr.get_download_url_for_layer(repositoryName=repository,
                                                layerDigest=layer))["downloadUrl"]
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200 and digest_of(await response.read()) == layer


async def test_referrer_status_follows_its_storage_class(ecr: Any, upstream: Registry) -> None:
    name = prefix()
    subject, manifest, _ = await push_upstream(upstream, "library/archived", "1.0")
    sbom = await push_referrer(upstream, "library/archived", subject, len(manifest), SBOM)
    await publish_referrers_tag(upstream, "library/archived", subject, [(*sbom, SBOM)])
    await ecr.create_pull_through_cache_rule(ecrRepositoryPrefix=name,
                                             upstreamRegistryUrl=upstream.url)
    repository = f"{name}/library/archived"
    await ecr.batch_get_image(repositoryName=repository, imageIds=[{"imageTag": "1.0"}])
    await ecr.update_image_storage_class(repositoryName=repository,
                                         imageId={"imageDigest": sbom[0]},
                                         targetStorageClass="ARCHIVE")

    async def listed(**filters: Any) -> list[tuple[str, str]]:
        answer = await ecr.list_image_referrers(repositoryName=repository,
                                                subjectId={"imageDigest": subject},
                                                **({"filter": filters} if filters else {}))
        return [(r["digest"], r["artifactStatus"]) for r in answer["referrers"]]

    assert await listed() == []  # ACTIVE only by default
    assert await listed(artifactStatus="ANY") == [(sbom[0], "ARCHIVED")]
    assert await listed(artifactStatus="ARCHIVED") == [(sbom[0], "ARCHIVED")]
    assert await listed(artifactStatus="ACTIVATING") == []
    await ecr.update_image_storage_class(repositoryName=repository,
                                         imageId={"imageDigest": sbom[0]},
                                         targetStorageClass="STANDARD")
    assert await listed() == [(sbom[0], "ACTIVE")]


async def test_unreachable_upstream_cannot_list_referrers(ecr: Any) -> None:
    name = prefix()
    await ecr.create_pull_through_cache_rule(ecrRepositoryPrefix=name,
                                             upstreamRegistryUrl=dead_url())
    repository = f"{name}/library/gone"
    await ecr.create_repository(repositoryName=repository)
    with pytest.raises(ecr.exceptions.UnableToListUpstreamImageReferrersException):
        await ecr.list_image_referrers(repositoryName=repository,
                                       subjectId={"imageDigest": "sha256:" + "a" * 64})
    # A repository under no rule answers from what it holds, without an upstream.
    await ecr.create_repository(repositoryName=f"plain{name}")
    empty = await ecr.list_image_referrers(repositoryName=f"plain{name}",
                                           subjectId={"imageDigest": "sha256:" + "a" * 64})
    assert empty["referrers"] == []
