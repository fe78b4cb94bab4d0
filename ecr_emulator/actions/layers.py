"""The layer plane: BatchCheckLayerAvailability, InitiateLayerUpload, UploadLayerPart,
CompleteLayerUpload, GetDownloadUrlForLayer.

An upload receives consecutive parts; each is written and fsynced to the upload's file before
the database counts it, so an acknowledged part survives a crash and an upload resumes from
``lastValidByteReceived + 1``. The sha256 is computed as parts arrive (falling back to reading
the file after a restart), then checked by CompleteLayerUpload against the client's digest.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import Coroutine
from typing import Any

from ecr_emulator import downloads, store
from ecr_emulator.actions import pull_through, templates
from ecr_emulator.actions.common import existing_repository
from ecr_emulator.errors import AwsError
from ecr_emulator.protocol import Call, Json, action
from ecr_emulator.state import EmulatorState, HashProgress
from ecr_emulator.validation import is_image_digest, is_sha256_digest


@action("BatchCheckLayerAvailability")
async def batch_check_layer_availability(call: Call, params: Json) -> Json:
    state = call.state
    _, repository = await existing_repository(call, params)
    digests = list(dict.fromkeys(params["layerDigests"]))
    valid = [d for d in digests if is_image_digest(d)]
    known = await state.db.read(store.get_layers, repository, valid)
    for digest in valid:  # a pull through cache repository fetches what its images name
        if digest not in known and await _imported(state, repository, digest):
            known.update(await state.db.read(store.get_layers, repository, [digest]))
    on_disk = await asyncio.to_thread(lambda: {d: state.blobs.has_blob(d) for d in known})
    layers, failures = [], []
    for digest in digests:
        layer = known.get(digest)
        if layer is not None:
            entry: Json = {"layerDigest": digest,
                           "layerAvailability": "AVAILABLE" if on_disk[digest] else "UNAVAILABLE",
                           "layerSize": layer.size}
            if layer.media_type:
                entry["mediaType"] = layer.media_type
            layers.append(entry)
        elif not digest:
            failures.append({"layerDigest": digest, "failureCode": "MissingLayerDigest",
                             "failureReason": "Layer digest cannot be empty"})
        elif not is_image_digest(digest):
            failures.append({"layerDigest": digest, "failureCode": "InvalidLayerDigest",
                             "failureReason": f"Invalid layer digest '{digest}'"})
        else:
            failures.append({"layerDigest": digest, "failureCode": "MissingLayerDigest",
                             "failureReason": "Could not find layer"})
    return {"layers": layers, "failures": failures}


async def _imported(state: EmulatorState, repository: str, digest: str) -> bool:
    try:
        return await pull_through.import_layer(state, repository, digest)
    except AwsError:  # not modelled here: the layer stays a MissingLayerDigest failure
        return False


@action("InitiateLayerUpload")
async def initiate_layer_upload(call: Call, params: Json) -> Json:
    state = call.state
    upload_id = str(uuid.uuid4())
    registry_id = state.registry_id(params)
    await templates.create_on_push(state, params["repositoryName"], registry_id)
    await state.db.write(store.create_upload, params["repositoryName"], upload_id, time.time(),
                         registry_id=registry_id)
    state.hashes[upload_id] = HashProgress(hashlib.sha256(), 0)
    return {"uploadId": upload_id, "partSize": state.settings.part_size}


@action("UploadLayerPart")
async def upload_layer_part(call: Call, params: Json) -> Json:
    return await _unabandoned(_upload_part(call.state, params))


async def _unabandoned(work: Coroutine[Any, Any, Json]) -> Json:
    """Run ``work`` to its end even if the request is cancelled: a part write abandoned with
    its lock released would interleave with the retried part (and its running sha256)."""
    return await asyncio.shield(work)


async def _upload_part(state: EmulatorState, params: Json) -> Json:
    registry_id = state.registry_id(params)
    repository, upload_id = params["repositoryName"], params["uploadId"]
    first, last, data = params["partFirstByte"], params["partLastByte"], params["layerPartBlob"]
    async with state.upload_lock(upload_id):
        upload = await state.db.read(store.get_upload, repository, upload_id,
                                     registry_id=registry_id)

        def part_error(message: str) -> AwsError:
            return AwsError("InvalidLayerPartException", message, registryId=registry_id,
                            repositoryName=repository, uploadId=upload_id,
                            lastValidByteReceived=upload.received - 1)

        if first != upload.received:
            raise part_error(f"The part starts at byte {first}; the next expected byte is "
                             f"{upload.received}")
        if last < first or len(data) != last - first + 1:
            raise part_error(f"partFirstByte {first} and partLastByte {last} do not describe "
                             f"the {len(data)} bytes of layerPartBlob")
        _check_limits(state, upload, len(data))
        progress = state.hashes.get(upload_id)
        if progress is not None and progress.position != first:
            state.hashes.pop(upload_id)  # out of step: completion re-reads the file
            progress = None
        try:
            await asyncio.to_thread(state.blobs.write_part, upload_id, first, data,
                                    progress.hasher if progress else None)
            await state.db.write(store.record_part, upload, len(data))
        except BaseException:
            state.hashes.pop(upload_id, None)
            raise
        if progress is not None:
            progress.position = last + 1
    return {"registryId": registry_id, "repositoryName": repository, "uploadId": upload_id,
            "lastByteReceived": last}


def _check_limits(state: EmulatorState, upload: store.Upload, size: int) -> None:
    settings = state.settings
    if upload.parts >= settings.max_parts:
        raise AwsError("LimitExceededException",
                       f"An upload has at most {settings.max_parts} parts")
    if upload.received + size > settings.max_layer_size:
        raise AwsError("LimitExceededException",
                       f"A layer has at most {settings.max_layer_size} bytes")


@action("CompleteLayerUpload")
async def complete_layer_upload(call: Call, params: Json) -> Json:
    return await _unabandoned(_complete(call.state, params))


async def _complete(state: EmulatorState, params: Json) -> Json:
    registry_id = state.registry_id(params)
    repository, upload_id = params["repositoryName"], params["uploadId"]
    async with state.upload_lock(upload_id):
        upload = await state.db.read(store.get_upload, repository, upload_id,
                                     registry_id=registry_id)
        try:
            digest = await _finish(state, upload, params["layerDigests"], registry_id)
        except AwsError:
            # A completion that fails ends the upload, as one that succeeds does.
            await state.db.write(store.delete_upload, upload_id)
            await asyncio.to_thread(state.blobs.discard_upload, upload_id)
            raise
        finally:
            state.hashes.pop(upload_id, None)
        await asyncio.to_thread(state.blobs.discard_upload, upload_id)
    return {"registryId": registry_id, "repositoryName": repository, "uploadId": upload_id,
            "layerDigest": digest}


async def _finish(state: EmulatorState, upload: store.Upload, layer_digests: list[str],
                  registry_id: str) -> str:
    if len(layer_digests) != 1:
        raise AwsError("InvalidParameterException",
                       "Invalid parameter at 'layerDigests' failed to satisfy constraint: "
                       "'exactly one digest is expected'")
    (digest,) = layer_digests
    if not is_sha256_digest(digest):
        raise AwsError("InvalidLayerException",
                       f"Invalid layer digest '{digest}': only sha256 digests are supported")
    if upload.received == 0:
        raise AwsError("EmptyUploadException",
                       f"No layer parts were uploaded for upload with id '{upload.id}'")
    small = await state.db.read(store.undersized_parts, upload.id, state.settings.min_part_size)
    if small:
        raise AwsError("LayerPartTooSmallException",
                       f"{small} layer part(s) other than the last are smaller than "
                       f"{state.settings.min_part_size} bytes")
    if await state.db.read(store.get_layers, upload.repository, [digest]):
        raise store.layer_exists_error(digest, upload.repository, registry_id)
    progress = state.hashes.get(upload.id)
    if progress is not None and progress.position == upload.received:
        computed = f"sha256:{progress.hasher.hexdigest()}"
    else:
        computed = await asyncio.to_thread(state.blobs.hash_upload, upload.id, upload.received)
    if computed != digest:
        raise AwsError("InvalidLayerException",
                       f"The layer digest '{digest}' does not match the uploaded content's "
                       f"digest '{computed}'")
    async with state.digest_lock(digest):
        await asyncio.to_thread(state.blobs.publish, upload.id, digest, upload.received)
        await state.db.write(store.finish_upload, upload, digest, time.time(),
                             registry_id=registry_id)
    return digest


@action("GetDownloadUrlForLayer")
async def get_download_url_for_layer(call: Call, params: Json) -> Json:
    state = call.state
    registry_id, repository = await existing_repository(call, params)
    digest = params["layerDigest"]
    layer = await state.db.read(store.referenced_layer, repository, digest)
    if layer is None and await pull_through.import_layer(state, repository, digest):
        layer = await state.db.read(store.referenced_layer, repository, digest)
    if layer is None:
        raise AwsError("LayersNotFoundException",
                       f"The layer with digest '{digest}' is not referenced by any image in the "
                       f"repository with name '{repository}' in registry with id '{registry_id}'")
    if not await asyncio.to_thread(state.blobs.has_blob, digest):
        raise AwsError("LayerInaccessibleException",
                       f"The layer with digest '{digest}' is not available")
    url = downloads.presign(call.base_url, state.secret, digest,
                            expires=state.settings.download_url_expires,
                            route=state.layer_route)
    return {"downloadUrl": url, "layerDigest": digest}
