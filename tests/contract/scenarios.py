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


async def _pages(call: Callable[..., Awaitable[Any]], key: str, **params: Any) -> list[Any]:
    """Every page of a listing, following nextToken (at most ten pages)."""
    found = []
    for _ in range(10):
        page = await call(**params)
        found.append(page[key])
        if "nextToken" not in page:
            break
        params["nextToken"] = page["nextToken"]
    return found


async def pages(ecr: Any, repo: str) -> Facts:
    """maxResults and nextToken: a page of at most maxResults, a token while more remain,
    none on the last page; a range the model forbids is refused."""
    for tag in ("p1", "p2", "p3"):
        await image(ecr, repo, tag)
    listed = await _pages(ecr.list_images, "imageIds", repositoryName=repo, maxResults=2)
    described = await _pages(ecr.describe_images, "imageDetails", repositoryName=repo,
                             maxResults=2)
    return {"ListImages pages": [len(page) for page in listed],
            "ListImages tags across pages": sorted(i.get("imageTag", "") for page in listed
                                                   for i in page),
            "DescribeImages pages": [len(page) for page in described],
            "ListImages maxResults 1001": await error_of(ecr.list_images(
                repositoryName=repo, maxResults=1001)),
            "DescribeImages imageIds with maxResults": await error_of(ecr.describe_images(
                repositoryName=repo, imageIds=[{"imageTag": "p1"}], maxResults=1)),
            "DescribeRepositories repositoryNames with maxResults": await error_of(
                ecr.describe_repositories(repositoryNames=[repo], maxResults=1))}


async def _digest_of(ecr: Any, repo: str, tag: str) -> str:
    """The digest the target gives the image ``tag`` names."""
    found = await ecr.describe_images(repositoryName=repo, imageIds=[{"imageTag": tag}])
    return str(found["imageDetails"][0]["imageDigest"])


async def tags_and_digests(ecr: Any, repo: str) -> Facts:
    """BatchDeleteImage by tag removes the tag (the image with its last one), by digest the
    image and every tag; a repository with images is deleted only with force."""
    text = await image(ecr, repo, "a")
    await ecr.put_image(repositoryName=repo, imageManifest=text, imageTag="b")
    await image(ecr, repo, "c")
    first, other = await _digest_of(ecr, repo, "a"), await _digest_of(ecr, repo, "c")
    got = await ecr.batch_get_image(repositoryName=repo, imageIds=[
        {"imageTag": "a", "imageDigest": other}])
    facts: Facts = {
        "tag with another image's digest": [f["failureCode"] for f in got["failures"]],
        "DeleteRepository with images": await error_of(ecr.delete_repository(
            repositoryName=repo))}
    untagged = await ecr.batch_delete_image(repositoryName=repo, imageIds=[{"imageTag": "a"}])
    facts["delete by tag"] = [i.get("imageTag") for i in untagged["imageIds"]]
    left = await ecr.describe_images(repositoryName=repo, imageIds=[{"imageDigest": first}])
    facts["tags left"] = [d.get("imageTags") for d in left["imageDetails"]]
    gone = await ecr.batch_delete_image(repositoryName=repo, imageIds=[{"imageDigest": first}])
    facts["delete by digest"] = sorted([i.get("imageDigest") == first, i.get("imageTag")]
                                       for i in gone["imageIds"])
    facts["tag of a deleted image"] = await error_of(ecr.describe_images(
        repositoryName=repo, imageIds=[{"imageTag": "b"}]))
    return facts


async def documents(ecr: Any, repo: str) -> Facts:
    """Lifecycle and repository policies: absent until put, read back as put, absent again
    once deleted; a lifecycle policy ECR's grammar refuses is InvalidParameterException."""
    lifecycle = json.dumps({"rules": [{"rulePriority": 1, "description": "old untagged",
                                       "selection": {"tagStatus": "untagged",
                                                     "countType": "sinceImagePushed",
                                                     "countUnit": "days", "countNumber": 14},
                                       "action": {"type": "expire"}}]})
    tagged_without_filter = json.dumps({"rules": [{
        "rulePriority": 1, "selection": {"tagStatus": "tagged", "countType":
                                         "imageCountMoreThan", "countNumber": 1},
        "action": {"type": "expire"}}]})
    policy = _policy({"Sid": "pull", "Effect": "Allow",
                      "Principal": {"AWS": "arn:aws:iam::210987654321:root"}, "Action": PULL})
    facts: Facts = {
        "lifecycle before put": await error_of(ecr.get_lifecycle_policy(repositoryName=repo)),
        "lifecycle tagged without a tag filter": await error_of(ecr.put_lifecycle_policy(
            repositoryName=repo, lifecyclePolicyText=tagged_without_filter)),
        "policy before set": await error_of(ecr.get_repository_policy(repositoryName=repo))}
    await ecr.put_lifecycle_policy(repositoryName=repo, lifecyclePolicyText=lifecycle)
    got = await ecr.get_lifecycle_policy(repositoryName=repo)
    facts["lifecycle read back"] = json.loads(got["lifecyclePolicyText"]) == json.loads(
        lifecycle)
    await ecr.delete_lifecycle_policy(repositoryName=repo)
    facts["lifecycle after delete"] = await error_of(ecr.get_lifecycle_policy(
        repositoryName=repo))
    await ecr.set_repository_policy(repositoryName=repo, policyText=policy)
    read = await ecr.get_repository_policy(repositoryName=repo)
    facts["policy read back"] = json.loads(read["policyText"]) == json.loads(policy)
    await ecr.delete_repository_policy(repositoryName=repo)
    facts["policy after delete"] = await error_of(ecr.get_repository_policy(
        repositoryName=repo))
    return facts


async def pull_through_rule(ecr: Any, repo: str) -> Facts:
    """A pull through cache rule per prefix: a second one is refused, a deleted one is gone."""
    prefix = "ptc" + repo.rsplit("/", 1)[-1][:20]
    try:
        created = await ecr.create_pull_through_cache_rule(ecrRepositoryPrefix=prefix,
                                                           upstreamRegistryUrl="public.ecr.aws")
    except ClientError as exc:
        return {"created": exc.response["Error"]["Code"]}
    try:
        described = await ecr.describe_pull_through_cache_rules(ecrRepositoryPrefixes=[prefix])
        facts: Facts = {
            "created": [created["ecrRepositoryPrefix"] == prefix,
                        created["upstreamRegistryUrl"]],
            "described": [[r["ecrRepositoryPrefix"] == prefix, r["upstreamRegistryUrl"]]
                          for r in described["pullThroughCacheRules"]],
            "same prefix again": await error_of(ecr.create_pull_through_cache_rule(
                ecrRepositoryPrefix=prefix, upstreamRegistryUrl="public.ecr.aws"))}
    finally:
        await ecr.delete_pull_through_cache_rule(ecrRepositoryPrefix=prefix)
    facts["after delete"] = await error_of(ecr.describe_pull_through_cache_rules(
        ecrRepositoryPrefixes=[prefix]))
    return facts


SCENARIOS["pages"] = pages
SCENARIOS["tags and digests"] = tags_and_digests
SCENARIOS["lifecycle and repository policies"] = documents
SCENARIOS["pull through cache rule"] = pull_through_rule


async def archive_and_push_again(ecr: Any, repo: str) -> Facts:
    """An archived image is not pulled; pushing it again restores it (user guide, "Pushing
    an image": "If you push an image that is currently archived, that image will be
    automatically restored and removed from the archive")."""
    text = await image(ecr, repo, "v1")
    untagged = await image(ecr, repo, None)
    try:
        for image_id in ({"imageTag": "v1"}, {"imageDigest": digest(untagged)}):
            await ecr.update_image_storage_class(repositoryName=repo, imageId=image_id,
                                                 targetStorageClass="ARCHIVE")
    except ClientError as exc:
        return {"archived pull": exc.response["Error"]["Code"]}
    archived = await ecr.batch_get_image(repositoryName=repo, imageIds=[{"imageTag": "v1"}])
    (detail,) = (await ecr.describe_images(repositoryName=repo, imageIds=[
        {"imageTag": "v1"}]))["imageDetails"]
    facts: Facts = {
        "archived pull": [f["failureCode"] for f in archived["failures"]],
        "archived image": [detail.get("imageStatus"), "lastArchivedAt" in detail],
        "same tag pushed again": await error_of(ecr.put_image(
            repositoryName=repo, imageManifest=text, imageTag="v1")),
        "untagged pushed again": await error_of(ecr.put_image(
            repositoryName=repo, imageManifest=untagged))}
    pulled = await ecr.batch_get_image(repositoryName=repo, imageIds=[
        {"imageTag": "v1"}, {"imageDigest": digest(untagged)}])
    facts["pulled after the push"] = len(pulled["images"])
    described = await ecr.describe_images(repositoryName=repo, filter={"imageStatus": "ANY"})
    facts["status after the push"] = sorted(d.get("imageStatus", "")
                                            for d in described["imageDetails"])
    # ImageDetail.lastActivatedAt: when the image was last restored from archive.
    facts["restored after archived"] = [
        "lastActivatedAt" in d and d["lastActivatedAt"] >= d["lastArchivedAt"]
        for d in described["imageDetails"]]
    return facts


SCENARIOS["archive and push again"] = archive_and_push_again


async def last_pull_time(ecr: Any, repo: str) -> Facts:
    """DescribeImages' lastRecordedPullTime: absent until the image is pulled (BatchGetImage),
    then the time of that pull."""
    await image(ecr, repo, "v1")
    (before,) = (await ecr.describe_images(repositoryName=repo))["imageDetails"]
    await ecr.batch_get_image(repositoryName=repo, imageIds=[{"imageTag": "v1"}])
    (after,) = (await ecr.describe_images(repositoryName=repo))["imageDetails"]
    pulled = after.get("lastRecordedPullTime")
    return {"before a pull": before.get("lastRecordedPullTime"),
            "after a pull": None if pulled is None else pulled >= before["imagePushedAt"]}


SCENARIOS["last pull time"] = last_pull_time


async def registry_scan_on_push(ecr: Any, repo: str) -> Facts:
    """A registry scanning rule of frequency SCAN_ON_PUSH whose filter matches a repository
    scans what is pushed there, though the repository's own scanOnPush is false."""
    saved = (await ecr.get_registry_scanning_configuration())["scanningConfiguration"]
    try:
        await ecr.put_registry_scanning_configuration(scanType="BASIC", rules=[{
            "scanFrequency": "SCAN_ON_PUSH",
            "repositoryFilters": [{"filter": repo, "filterType": "WILDCARD"}]}])
        (applied,) = (await ecr.batch_get_repository_scanning_configuration(
            repositoryNames=[repo]))["scanningConfigurations"]
        await image(ecr, repo, "scanned")
        findings = await error_of(ecr.describe_image_scan_findings(
            repositoryName=repo, imageId={"imageTag": "scanned"}))
    finally:
        await ecr.put_registry_scanning_configuration(
            scanType=saved.get("scanType", "BASIC"), rules=saved.get("rules", []))
    return {"scanFrequency": applied.get("scanFrequency"), "findings after a push": findings}


SCENARIOS["registry scan on push"] = registry_scan_on_push


async def _foreign_role(ecr: Any, repo: str) -> str:
    """An IAM role ARN of an account other than the caller's registry."""
    found = await ecr.describe_repositories(repositoryNames=[repo])
    own = found["repositories"][0]["registryId"]
    return f"arn:aws:iam::{'210987654321' if own != '210987654321' else '123456789012'}:role/ecr"


async def _refused(create: Awaitable[Any], delete: Callable[[], Awaitable[Any]]) -> str:
    """The error ``create`` fails with; whatever it created by mistake is deleted again."""
    code = await error_of(create)
    if code == "none":
        await delete()
    return code


async def custom_role_of_another_account(ecr: Any, repo: str) -> Facts:
    """customRoleArn names a role of the registry's own account, for templates and rules."""
    role = await _foreign_role(ecr, repo)
    prefix = "role" + repo.rsplit("/", 1)[-1][:20]
    return {
        "creation template": await _refused(
            ecr.create_repository_creation_template(prefix=prefix, appliedFor=["CREATE_ON_PUSH"],
                                                    customRoleArn=role),
            lambda: ecr.delete_repository_creation_template(prefix=prefix)),
        "pull through cache rule": await _refused(
            ecr.create_pull_through_cache_rule(
                ecrRepositoryPrefix=prefix, upstreamRegistry="ecr", customRoleArn=role,
                upstreamRegistryUrl=f"{role.split(':')[4]}.dkr.ecr.us-east-1.amazonaws.com"),
            lambda: ecr.delete_pull_through_cache_rule(ecrRepositoryPrefix=prefix))}


SCENARIOS["custom role of another account"] = custom_role_of_another_account


async def repeated_references(ecr: Any, repo: str) -> Facts:
    """Each image reference of a batch is answered, a repeated one again; a list member the
    model's limits refuse is InvalidParameterException."""
    await image(ecr, repo, "v1")
    got = await ecr.batch_get_image(repositoryName=repo, imageIds=[
        {"imageTag": "v1"}, {"imageTag": "v1"}, {"imageTag": "nope"}, {"imageTag": "nope"}])
    deleted = await ecr.batch_delete_image(repositoryName=repo, imageIds=[
        {"imageTag": "v1"}, {"imageTag": "v1"}])
    return {"BatchGetImage images of a repeated tag": len(got["images"]),
            "BatchGetImage failures of a repeated absent tag":
                [f["failureCode"] for f in got["failures"]],
            "BatchDeleteImage repeated tag": [len(deleted["imageIds"]),
                                              [f["failureCode"] for f in deleted["failures"]]],
            "BatchDeleteImage 101 imageIds": await error_of(ecr.batch_delete_image(
                repositoryName=repo, imageIds=[{"imageTag": f"t{i}"} for i in range(101)])),
            "GetAuthorizationToken registryId of 11 digits": await error_of(
                ecr.get_authorization_token(registryIds=["12345678901"])),
            "GetAuthorizationToken 11 registryIds": await error_of(
                ecr.get_authorization_token(registryIds=["123456789012"] * 11))}


SCENARIOS["repeated references and list limits"] = repeated_references


async def broken_constraints(ecr: Any, repo: str) -> Facts:
    """A value the model's constraints refuse (and botocore sends: it checks no pattern and
    no maximum) is InvalidParameterException, "Invalid parameter at '<member>' failed to
    satisfy constraint: '<constraint>'", in the actions whose model declares
    ValidationException too."""
    prefix = ecr.create_pull_through_cache_rule(ecrRepositoryPrefix="Bad_Prefix!",
                                                upstreamRegistryUrl="public.ecr.aws")
    try:
        await prefix
        worded: Any = "none"
    except ClientError as exc:
        worded = [exc.response["Error"]["Code"], exc.response["Error"]["Message"].startswith(
            "Invalid parameter at 'ecrRepositoryPrefix' failed to satisfy constraint: 'Member "
            "must satisfy regular expression pattern: ")]
    return {
        "CreatePullThroughCacheRule prefix off its pattern": worded,
        "GetLifecyclePolicy repository name off its pattern": await error_of(
            ecr.get_lifecycle_policy(repositoryName="Not_A_Name!")),
        "ListImageReferrers maxResults 51": await error_of(ecr.list_image_referrers(
            repositoryName=repo, subjectId={"imageDigest": digest(b"none")}, maxResults=51)),
        "DescribeImages maxResults 1001": await error_of(
            ecr.describe_images(repositoryName=repo, maxResults=1001)),
    }


SCENARIOS["broken constraints"] = broken_constraints

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


async def accepted_media_types(ecr: Any, repo: str) -> Facts:
    """An OCI image read as Docker schema 2: converted when read by tag (answered with the
    digest of what is answered), not found when read by digest (user guide, "Container image
    manifest format support in Amazon ECR")."""
    text = await image(ecr, repo, "v1")
    pushed = (await ecr.batch_get_image(repositoryName=repo, imageIds=[{"imageTag": "v1"}],
                                        acceptedMediaTypes=[OCI_MANIFEST]))["images"]
    by_tag = await ecr.batch_get_image(repositoryName=repo, imageIds=[{"imageTag": "v1"}],
                                       acceptedMediaTypes=[DOCKER_MANIFEST])
    by_digest = await ecr.batch_get_image(
        repositoryName=repo, imageIds=[{"imageDigest": i["imageId"]["imageDigest"]}
                                       for i in pushed], acceptedMediaTypes=[DOCKER_MANIFEST])
    return {
        "by tag": [[i["imageManifestMediaType"],
                    i["imageId"]["imageDigest"] == digest(i["imageManifest"])]
                   for i in by_tag["images"]],
        "by digest": [f["failureCode"] for f in by_digest["failures"]],
        "as pushed when accepted": [i["imageManifest"] == text for i in pushed],
    }


SCENARIOS["accepted media types"] = accepted_media_types
