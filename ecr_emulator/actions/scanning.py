"""Image scanning without a scanner: PutRegistryScanningConfiguration,
GetRegistryScanningConfiguration, BatchGetRepositoryScanningConfiguration,
PutImageScanningConfiguration, StartImageScan, DescribeImageScanFindings.

Configurations are stored and answered as ECR does. A scan (StartImageScan, or a push to a
repository with scanOnPush) completes at once with an empty, well-formed finding set; as
with basic scanning, an image is scanned at most once a day (LimitExceededException).
Image indexes and artifacts that are not container images are UnsupportedImageTypeException,
archived images ImageArchivedException.
"""

from __future__ import annotations

import sqlite3
import time

from ecr_emulator import image_states, store, wildcards
from ecr_emulator import registry_documents as registry
from ecr_emulator.actions.common import existing_repository
from ecr_emulator.errors import AwsError
from ecr_emulator.protocol import Call, Json, action

SCAN_INTERVAL = 24 * 3600  # basic scanning: one scan per image per 24 hours
IMAGE_CONFIG_TYPES = ("application/vnd.oci.image.config.v1+json",
                      "application/vnd.docker.container.image.v1+json")
COMPLETE = {"status": "COMPLETE", "description": "The scan was completed successfully."}


def _registry_configuration(stored: Json | None) -> Json:
    return stored or {"scanType": "BASIC", "rules": []}


@action("PutRegistryScanningConfiguration")
async def put_registry_scanning_configuration(call: Call, params: Json) -> Json:
    state = call.state
    configuration = {"scanType": params.get("scanType", "BASIC"),
                     "rules": params.get("rules", [])}
    frequencies = [r["scanFrequency"] for r in configuration["rules"]]
    if configuration["scanType"] == "BASIC" and "CONTINUOUS_SCAN" in frequencies:
        raise AwsError("InvalidParameterException",
                       "Invalid parameter at 'rules' failed to satisfy constraint: "
                       "'CONTINUOUS_SCAN is only available with the ENHANCED scan type'")
    if len(frequencies) != len(set(frequencies)):
        raise AwsError("InvalidParameterException",
                       "Invalid parameter at 'rules' failed to satisfy constraint: "
                       "'each scan frequency may appear in one rule only'")
    await state.db.write(registry.put, registry.SCANNING, "", configuration, time.time())
    return {"registryScanningConfiguration": configuration}


@action("GetRegistryScanningConfiguration")
async def get_registry_scanning_configuration(call: Call, params: Json) -> Json:
    state = call.state
    stored = await state.db.read(registry.get, registry.SCANNING)
    return {"registryId": state.account_id,
            "scanningConfiguration": _registry_configuration(stored)}


def _applied(configuration: Json, repo: store.Repository) -> tuple[str, list[Json]]:
    """The scan frequency and filters the registry's rules give ``repo``; without a
    matching rule, the repository's own scanOnPush decides."""
    for rule in configuration["rules"]:
        filters = rule.get("repositoryFilters", [])
        hit = [f for f in filters if wildcards.matches(repo.name, f["filter"])]
        if hit:
            return rule["scanFrequency"], hit
    return ("SCAN_ON_PUSH" if repo.scan_on_push else "MANUAL"), []


def scans_on_push(db: sqlite3.Connection, repo: store.Repository) -> bool:
    """Whether a push to ``repo`` is scanned: a registry rule of frequency SCAN_ON_PUSH (or
    CONTINUOUS_SCAN, which scans on push too) that matches it, else its own scanOnPush."""
    configuration = _registry_configuration(registry.get(db, registry.SCANNING))
    return _applied(configuration, repo)[0] != "MANUAL"


@action("BatchGetRepositoryScanningConfiguration")
async def batch_get_repository_scanning_configuration(call: Call, params: Json) -> Json:
    state = call.state

    def read(db: sqlite3.Connection) -> Json:
        configuration = _registry_configuration(registry.get(db, registry.SCANNING))
        found, failures = [], []
        for name in dict.fromkeys(params["repositoryNames"]):
            try:
                repo = store.get_repository(db, name, state.account_id)
            except AwsError as exc:
                failures.append({"repositoryName": name, "failureCode": "REPOSITORY_NOT_FOUND",
                                 "failureReason": exc.message})
                continue
            frequency, filters = _applied(configuration, repo)
            found.append({"repositoryArn": state.repository_arn(name), "repositoryName": name,
                          "scanOnPush": repo.scan_on_push, "scanFrequency": frequency,
                          "appliedScanFilters": filters})
        return {"scanningConfigurations": found, "failures": failures}

    return await state.db.read(read)


@action("PutImageScanningConfiguration")
async def put_image_scanning_configuration(call: Call, params: Json) -> Json:
    state = call.state
    registry_id, repository = await existing_repository(call, params)
    scan_on_push = bool(params["imageScanningConfiguration"].get("scanOnPush", False))
    await state.db.write(lambda db: db.execute(
        "UPDATE repositories SET scan_on_push = ? WHERE name = ?",
        (int(scan_on_push), repository)))
    return {"registryId": registry_id, "repositoryName": repository,
            "imageScanningConfiguration": {"scanOnPush": scan_on_push}}


def _image_id(image: image_states.Image, asked: Json) -> Json:
    shown: Json = {"imageDigest": image.digest}
    if asked.get("imageTag"):
        shown["imageTag"] = asked["imageTag"]
    return shown


@action("StartImageScan")
async def start_image_scan(call: Call, params: Json) -> Json:
    state = call.state
    registry_id = state.registry_id(params)
    repository, asked = params["repositoryName"], params["imageId"]
    now = time.time()

    def start(db: sqlite3.Connection) -> image_states.Image:
        image = image_states.existing_image(db, repository, registry_id, asked)
        if image_states.storage_class(db, image.id) == "ARCHIVE":
            raise AwsError("ImageArchivedException",
                           "The image is archived; restore it before scanning it")
        if image.media_type.endswith(("index.v1+json", "list.v2+json")) or (
                image.artifact_media_type not in IMAGE_CONFIG_TYPES
                and not image.media_type.endswith("v1+prettyjws")):
            raise AwsError("UnsupportedImageTypeException",
                           f"The image of type '{image.artifact_media_type or image.media_type}'"
                           " cannot be scanned")
        last = image_states.scanned_at(db, image.id)
        if last is not None and now - last < SCAN_INTERVAL:
            raise AwsError("LimitExceededException",
                           "The image was already scanned in the last 24 hours")
        image_states.set_scanned(db, image.id, now)
        return image

    image = await state.db.write(start)
    return {"registryId": registry_id, "repositoryName": repository,
            "imageId": _image_id(image, asked),
            "imageScanStatus": {"status": "IN_PROGRESS"}}


@action("DescribeImageScanFindings")
async def describe_image_scan_findings(call: Call, params: Json) -> Json:
    state = call.state
    registry_id = state.registry_id(params)
    repository, asked = params["repositoryName"], params["imageId"]

    def read(db: sqlite3.Connection) -> tuple[image_states.Image, float | None]:
        image = image_states.existing_image(db, repository, registry_id, asked)
        return image, image_states.scanned_at(db, image.id)

    image, scanned = await state.db.read(read)
    if scanned is None:
        shown = ", ".join(f"{k}={v}" for k, v in asked.items())
        raise AwsError("ScanNotFoundException",
                       f"Image scan does not exist for the image with '{{{shown}}}' in the "
                       f"repository with name '{repository}' in the registry with id "
                       f"'{registry_id}'")
    return {"registryId": registry_id, "repositoryName": repository,
            "imageId": _image_id(image, asked), "imageScanStatus": COMPLETE,
            "imageScanFindings": {"imageScanCompletedAt": scanned,
                                  "vulnerabilitySourceUpdatedAt": scanned,
                                  "findingSeverityCounts": {}, "findings": []}}
