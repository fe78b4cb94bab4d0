"""Contract scenarios: the same call sequences for every target, each reduced to named facts
(small JSON values) that the suite compares with what the AWS API reference says."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import Awaitable, Callable
from typing import Any

from botocore.exceptions import ClientError

MiB = 1024 * 1024
PART = 5 * MiB  # ECR's smallest part but the last
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
SIGNATURE_TYPE = "application/vnd.example.signature.v1+json"

Facts = dict[str, Any]
Scenario = Callable[[Any, str], Awaitable[Facts]]


def digest(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return "sha256:" + hashlib.sha256(raw).hexdigest()


async def error_of(call: Awaitable[Any]) -> str:
    """The error code ``call`` fails with, or "none"."""
    try:
        await call
    except ClientError as exc:
        return str(exc.response["Error"]["Code"])
    return "none"


async def upload(ecr: Any, repo: str, data: bytes, part: int = PART) -> str:
    upload_id = (await ecr.initiate_layer_upload(repositoryName=repo))["uploadId"]
    for first in range(0, len(data), part):
        chunk = data[first:first + part]
        await ecr.upload_layer_part(repositoryName=repo, uploadId=upload_id,
                                    partFirstByte=first, partLastByte=first + len(chunk) - 1,
                                    layerPartBlob=chunk)
    done = await ecr.complete_layer_upload(repositoryName=repo, uploadId=upload_id,
                                           layerDigests=[digest(data)])
    return str(done["layerDigest"])


def manifest(config: bytes, layers: list[bytes], **extra: Any) -> str:
    doc: dict[str, Any] = {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": digest(config), "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER, "digest": digest(b), "size": len(b)}
                   for b in layers]}
    doc.update(extra)
    return json.dumps(doc, indent=2)


async def image(ecr: Any, repo: str, tag: str | None, **extra: Any) -> str:
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "nonce": os.urandom(6).hex()}).encode()
    layer = os.urandom(512)
    for blob in (config, layer):
        await upload(ecr, repo, blob)
    text = manifest(config, [layer], **extra)
    await ecr.put_image(repositoryName=repo, imageManifest=text,
                        **({"imageTag": tag} if tag else {}))
    return text


async def layer_in_parts(ecr: Any, repo: str) -> Facts:
    data = os.urandom(PART + 1000)
    upload_id = (await ecr.initiate_layer_upload(repositoryName=repo))["uploadId"]
    first = await ecr.upload_layer_part(repositoryName=repo, uploadId=upload_id,
                                        partFirstByte=0, partLastByte=PART - 1,
                                        layerPartBlob=data[:PART])
    await ecr.upload_layer_part(repositoryName=repo, uploadId=upload_id, partFirstByte=PART,
                                partLastByte=len(data) - 1, layerPartBlob=data[PART:])
    done = await ecr.complete_layer_upload(repositoryName=repo, uploadId=upload_id,
                                           layerDigests=[digest(data)])
    checked = await ecr.batch_check_layer_availability(repositoryName=repo,
                                                       layerDigests=[digest(data)])
    return {"lastByteReceived after part 1": first["lastByteReceived"],
            "completed digest is the content's": done["layerDigest"] == digest(data),
            "availability": checked["layers"][0]["layerAvailability"],
            "layerSize": checked["layers"][0].get("layerSize")}


async def resume_after_invalid_part(ecr: Any, repo: str) -> Facts:
    data = os.urandom(PART + 10)
    upload_id = (await ecr.initiate_layer_upload(repositoryName=repo))["uploadId"]
    await ecr.upload_layer_part(repositoryName=repo, uploadId=upload_id, partFirstByte=0,
                                partLastByte=PART - 1, layerPartBlob=data[:PART])
    facts: Facts = {}
    try:  # the first part again: out of sequence
        await ecr.upload_layer_part(repositoryName=repo, uploadId=upload_id, partFirstByte=0,
                                    partLastByte=PART - 1, layerPartBlob=data[:PART])
        facts["repeated part"] = "accepted"
        resume = PART
    except ClientError as exc:
        facts["repeated part"] = exc.response["Error"]["Code"]
        facts["lastValidByteReceived"] = exc.response.get("lastValidByteReceived")
        resume = int(exc.response.get("lastValidByteReceived", PART - 1)) + 1
    await ecr.upload_layer_part(repositoryName=repo, uploadId=upload_id, partFirstByte=resume,
                                partLastByte=len(data) - 1, layerPartBlob=data[resume:])
    facts["completes"] = await error_of(ecr.complete_layer_upload(
        repositoryName=repo, uploadId=upload_id, layerDigests=[digest(data)]))
    return facts


async def put_image_by_tag_and_digest(ecr: Any, repo: str) -> Facts:
    text = await image(ecr, repo, "v1")
    again = await ecr.put_image(repositoryName=repo, imageManifest=text, imageTag="v2",
                                imageDigest=digest(text))
    got = await ecr.batch_get_image(repositoryName=repo, imageIds=[{"imageTag": "v2"}])
    listed = await ecr.list_images(repositoryName=repo)
    return {"digest is the manifest's sha256": again["image"]["imageId"]["imageDigest"]
            == digest(text),
            "manifest byte-exact": [i["imageManifest"] == text for i in got["images"]],
            "tags": sorted(i.get("imageTag", "") for i in listed["imageIds"]),
            "wrong digest": await error_of(ecr.put_image(
                repositoryName=repo, imageManifest=text, imageTag="v3",
                imageDigest="sha256:" + "0" * 64)),
            "same manifest and tag again": await error_of(ecr.put_image(
                repositoryName=repo, imageManifest=text, imageTag="v1"))}


async def referrers(ecr: Any, repo: str) -> Facts:
    subject = await image(ecr, repo, "app")
    await image(ecr, repo, None, artifactType=SIGNATURE_TYPE, subject={
        "mediaType": OCI_MANIFEST, "digest": digest(subject), "size": len(subject.encode())})
    try:
        found = await ecr.list_image_referrers(repositoryName=repo,
                                               subjectId={"imageDigest": digest(subject)})
    except ClientError as exc:
        return {"referrers": exc.response["Error"]["Code"]}
    return {"referrers": [r.get("artifactType") for r in found.get("referrers", [])]}


async def delete(ecr: Any, repo: str) -> Facts:
    text = await image(ecr, repo, "gone")
    deleted = await ecr.batch_delete_image(repositoryName=repo, imageIds=[{"imageTag": "gone"}])
    left = await ecr.list_images(repositoryName=repo)
    missing = await ecr.batch_delete_image(repositoryName=repo, imageIds=[{"imageTag": "gone"}])
    return {"deleted": [[i.get("imageDigest") == digest(text), i.get("imageTag")]
                        for i in deleted["imageIds"]],
            "left": left["imageIds"],
            "second delete failure": [f["failureCode"] for f in missing["failures"]]}


async def lifecycle_preview(ecr: Any, repo: str) -> Facts:
    for tag in ("a", "b", "c"):
        await image(ecr, repo, tag)
    text = json.dumps({"rules": [{"rulePriority": 1, "selection": {
        "tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 1},
        "action": {"type": "expire"}}]})
    try:
        await ecr.start_lifecycle_policy_preview(repositoryName=repo,
                                                 lifecyclePolicyText=text)
    except ClientError as exc:
        return {"preview": exc.response["Error"]["Code"]}
    for _ in range(60):
        preview = await ecr.get_lifecycle_policy_preview(repositoryName=repo)
        if preview["status"] != "IN_PROGRESS":
            break
        await asyncio.sleep(1)
    return {"preview": preview["status"],
            "expiring": preview.get("summary", {}).get("expiringImageTotalCount")}


async def error_cases(ecr: Any, repo: str) -> Facts:
    small = os.urandom(1000)
    upload_id = (await ecr.initiate_layer_upload(repositoryName=repo))["uploadId"]
    await ecr.upload_layer_part(repositoryName=repo, uploadId=upload_id, partFirstByte=0,
                                partLastByte=999, layerPartBlob=small)
    got = await ecr.batch_get_image(repositoryName=repo, imageIds=[{"imageTag": "absent"}])
    return {
        "unknown repository": await error_of(ecr.describe_images(
            repositoryName=repo + "-absent")),
        "wrong layer digest": await error_of(ecr.complete_layer_upload(
            repositoryName=repo, uploadId=upload_id, layerDigests=[digest(b"other")])),
        "manifest naming missing layers": await error_of(ecr.put_image(
            repositoryName=repo, imageTag="x",
            imageManifest=manifest(b"{}", [b"never uploaded"]))),
        "absent image": [f["failureCode"] for f in got["failures"]],
        "unknown upload": await error_of(ecr.upload_layer_part(
            repositoryName=repo, uploadId="00000000-0000-0000-0000-000000000000",
            partFirstByte=0, partLastByte=0, layerPartBlob=b"x")),
    }


SCENARIOS: dict[str, Scenario] = {
    "layer in parts": layer_in_parts,
    "resume after InvalidLayerPartException": resume_after_invalid_part,
    "PutImage by tag and digest": put_image_by_tag_and_digest,
    "referrers": referrers,
    "delete": delete,
    "lifecycle preview": lifecycle_preview,
    "error cases": error_cases,
}


async def mutability_and_scanning(ecr: Any, repo: str) -> Facts:
    await image(ecr, repo, "stable")
    put = await ecr.put_image_tag_mutability(repositoryName=repo,
                                             imageTagMutability="IMMUTABLE")
    facts: Facts = {"mutability": put["imageTagMutability"],
                    "moving an immutable tag": await error_of(image(ecr, repo, "stable"))}
    scanning = await ecr.put_image_scanning_configuration(
        repositoryName=repo, imageScanningConfiguration={"scanOnPush": True})
    facts["scanOnPush"] = scanning["imageScanningConfiguration"]["scanOnPush"]
    facts["findings before a scan"] = await error_of(ecr.describe_image_scan_findings(
        repositoryName=repo, imageId={"imageTag": "absent"}))
    return facts


async def registry_policy(ecr: Any, repo: str) -> Facts:
    text = json.dumps({"Version": "2012-10-17", "Statement": [{
        "Sid": "pull", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::210987654321:root"},
        "Action": ["ecr:CreateRepository", "ecr:ReplicateImage"],
        "Resource": "arn:aws:ecr:us-east-1:123456789012:repository/*"}]})
    put = await ecr.put_registry_policy(policyText=text)
    got = await ecr.get_registry_policy()
    await ecr.delete_registry_policy()
    return {"stored as given": json.loads(put["policyText"]) == json.loads(text),
            "read back": json.loads(got["policyText"]) == json.loads(text),
            "after delete": await error_of(ecr.get_registry_policy())}


SCENARIOS["tag mutability and scanning"] = mutability_and_scanning
SCENARIOS["registry policy"] = registry_policy


PULL = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"]
PUSH = ["ecr:InitiateLayerUpload", "ecr:UploadLayerPart", "ecr:CompleteLayerUpload",
        "ecr:PutImage"]


def _policy(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


async def _pulled(other: Any, registry: str, repo: str, text: str) -> Any:
    """True if the other account reads ``text`` back as ``repo``'s v1, else the error."""
    try:
        got = await other.batch_get_image(registryId=registry, repositoryName=repo,
                                          imageIds=[{"imageTag": "v1"}])
    except ClientError as exc:
        return str(exc.response["Error"]["Code"])
    return [i["imageManifest"] for i in got["images"]] == [text]


async def cross_account(ecr: Any, repo: str, other: Any, other_account: str) -> Facts:
    """Account B reaches account A's repository (``registryId``) only as A's repository
    policy allows; ``ecr`` is A's client, ``other`` B's."""
    (described,) = (await ecr.describe_repositories(repositoryNames=[repo]))["repositories"]
    registry = described["registryId"]
    text = await image(ecr, repo, "v1")
    root = {"AWS": f"arn:aws:iam::{other_account}:root"}
    facts: Facts = {"without a policy": await _pulled(other, registry, repo, text)}
    await ecr.set_repository_policy(repositoryName=repo, policyText=_policy(
        {"Sid": "pull", "Effect": "Allow", "Principal": root, "Action": PULL}))
    facts["pull granted"] = await _pulled(other, registry, repo, text)
    facts["push with a pull grant"] = await error_of(other.initiate_layer_upload(
        registryId=registry, repositoryName=repo))
    await ecr.set_repository_policy(repositoryName=repo, policyText=_policy(
        {"Sid": "all", "Effect": "Allow", "Principal": root, "Action": "ecr:*"},
        {"Sid": "nopull", "Effect": "Deny", "Principal": root, "Action": "ecr:BatchGetImage"}))
    facts["explicit deny over ecr:*"] = await _pulled(other, registry, repo, text)
    facts["ecr:* grants listing"] = await error_of(other.list_images(
        registryId=registry, repositoryName=repo))
    await ecr.set_repository_policy(repositoryName=repo, policyText=_policy(
        {"Sid": "push", "Effect": "Allow", "Principal": root, "Action": PULL + PUSH}))
    facts["push granted"] = await error_of(other.initiate_layer_upload(
        registryId=registry, repositoryName=repo))
    await ecr.delete_repository_policy(repositoryName=repo)
    facts["after the policy is deleted"] = await _pulled(other, registry, repo, text)
    return facts


CROSS_ACCOUNT = "cross-account access"
