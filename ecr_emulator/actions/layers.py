"""The layer plane: BatchCheckLayerAvailability, InitiateLayerUpload, UploadLayerPart,
CompleteLayerUpload, GetDownloadUrlForLayer.

An upload receives consecutive parts; each is appended to the upload's file as its request
body arrives (StagedPart: decoded and hashed on the way) and fsynced before the database counts
it, so an acknowledged part survives a crash and an upload resumes from
``lastValidByteReceived + 1``; a part refused for any reason (its signature, its offsets, a
limit) is cut off the file again. The sha256 runs over the parts in order (a copy of the
upload's state per part, kept only with the part; after a restart completion reads the file
once), and CompleteLayerUpload checks it against the client's digest and links the file under
that digest: no byte is copied or read again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
import uuid
from collections.abc import Coroutine
from typing import Any

from ecr_emulator import downloads, store
from ecr_emulator.actions import pull_through, templates
from ecr_emulator.actions.common import existing_repository
from ecr_emulator.errors import AwsError
from ecr_emulator.parts import Handoff, PartWriter
from ecr_emulator.protocol import Call, Json, action, streams_blob
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
    # No running hash yet: the first part starts one (an upload never used costs no memory).
    return {"uploadId": upload_id, "partSize": state.settings.part_size}


@action("UploadLayerPart")
async def upload_layer_part(call: Call, params: Json) -> Json:
    data = params["layerPartBlob"]
    if isinstance(data, StagedPart):  # already written, its upload locked
        data.kept = True  # from here on the action keeps or rolls back the part, and unlocks
        return await _unabandoned(_keep_staged(call.state, params, data))
    return await _unabandoned(_upload_part(call.state, params))


async def _unabandoned(work: Coroutine[Any, Any, Json]) -> Json:
    """Run ``work`` to its end even if the request is cancelled: a part write abandoned with
    its lock released would interleave with the retried part (and its running sha256)."""
    return await asyncio.shield(work)


class StagedPart:
    """A part streamed from the request body to the end of its upload's file while the body
    arrives (base64-decoded and hashed on the way), under the upload's lock. It counts only
    once UploadLayerPart keeps it; else ``release`` cuts the file back, the upload unchanged."""

    def __init__(self, state: EmulatorState, lock: asyncio.Lock, upload: store.Upload,
                 registry_id: str, writer: PartWriter) -> None:
        self.state = state
        self.lock = lock
        self.upload = upload
        self.registry_id = registry_id
        self.writer = writer
        self.handoff = Handoff(writer)  # hashed and written beside the event loop
        self.kept = False  # the action took it over: it keeps or rolls back, then unlocks
        self._released = False

    def write(self, piece: bytes) -> None:
        self.handoff.write(piece)

    async def drain(self) -> None:
        await self.handoff.drain()

    def __len__(self) -> int:
        return self.handoff.size

    def release(self) -> None:
        if self.kept or self._released:
            return
        self._released = True
        try:
            with contextlib.suppress(Exception):  # being undone: a failed write changes nothing
                self.handoff.finish()
            self.writer.rollback()
        finally:
            self.lock.release()


@streams_blob("UploadLayerPart")
async def stage_part(state: EmulatorState, head: Json) -> StagedPart | None:
    """Where an UploadLayerPart's bytes go as they arrive: the end of the upload's file, if
    the members before the blob name an upload whose next byte is partFirstByte. Anything
    else is decided by the action from the whole request (the blob kept in memory)."""
    repository, upload_id, first = (head.get("repositoryName"), head.get("uploadId"),
                                    head.get("partFirstByte"))
    if not (isinstance(repository, str) and isinstance(upload_id, str)
            and type(first) is int):
        return None
    try:
        registry_id = state.registry_id(head)
    except AwsError:
        return None
    lock = state.upload_lock(upload_id)
    await lock.acquire()
    try:
        upload = await state.db.read(store.get_upload, repository, upload_id,
                                     registry_id=registry_id)
        if first != upload.received:
            lock.release()
            return None
        writer = state.blobs.part_writer(upload_id, first, _hasher(state, upload_id, first))
    except AwsError:
        lock.release()
        return None
    except BaseException:
        lock.release()
        raise
    return StagedPart(state, lock, upload, registry_id, writer)


def _hasher(state: EmulatorState, upload_id: str, first: int) -> Any | None:
    """The upload's running sha256 continued for a part starting at ``first``, or None when
    it is not known (after a restart: completion then reads the file)."""
    if first == 0:
        return hashlib.sha256()
    progress = state.hashes.get(upload_id)
    if progress is None or progress.position != first:
        return None
    return progress.hasher.copy()


async def _keep_staged(state: EmulatorState, params: Json, part: StagedPart) -> Json:
    upload = part.upload
    try:
        try:
            await asyncio.to_thread(part.handoff.finish)
            if (params["repositoryName"], params["uploadId"], state) != (
                    upload.repository, upload.id, part.state):
                raise AwsError("InvalidParameterException",
                               "repositoryName and uploadId must be given once")
        except BaseException:
            part.writer.rollback()
            raise
        return await _accept(state, params, upload, part.registry_id, part.writer)
    finally:
        part.lock.release()


async def _upload_part(state: EmulatorState, params: Json) -> Json:
    registry_id = state.registry_id(params)
    repository, upload_id = params["repositoryName"], params["uploadId"]
    first, data = params["partFirstByte"], params["layerPartBlob"]
    async with state.upload_lock(upload_id):
        upload = await state.db.read(store.get_upload, repository, upload_id,
                                     registry_id=registry_id)
        writer = None
        if first == upload.received:
            writer = state.blobs.part_writer(upload_id, first, _hasher(state, upload_id, first))
            try:
                await asyncio.to_thread(writer.write, data)
            except BaseException:
                writer.rollback()
                raise
        return await _accept(state, params, upload, registry_id, writer)


async def _accept(state: EmulatorState, params: Json, upload: store.Upload, registry_id: str,
                  writer: PartWriter | None) -> Json:
    """Check the part written by ``writer`` (None: it starts at the wrong byte) and make it
    durable and counted, or roll it back."""
    first, last = params["partFirstByte"], params["partLastByte"]
    try:
        def part_error(message: str) -> AwsError:
            return AwsError("InvalidLayerPartException", message, registryId=registry_id,
                            repositoryName=upload.repository, uploadId=upload.id,
                            lastValidByteReceived=upload.received - 1)

        if writer is None or first != upload.received:
            raise part_error(f"The part starts at byte {first}; the next expected byte is "
                             f"{upload.received}")
        size = writer.size
        if last < first or size != last - first + 1:
            raise part_error(f"partFirstByte {first} and partLastByte {last} do not describe "
                             f"the {size} bytes of layerPartBlob")
        if size > state.settings.max_part_size:
            raise part_error(f"The layer part of {size} bytes is larger than "
                             f"{state.settings.max_part_size} bytes")
        _check_limits(state, upload, size)
        await asyncio.to_thread(writer.commit)
        await state.db.write(store.record_part, upload, size, time.time())
    except BaseException:
        if writer is not None:  # once committed, a no-op: bytes past ``received`` do not count
            writer.rollback()
        raise
    if writer.hasher is not None:
        state.hashes[upload.id] = HashProgress(writer.hasher, last + 1)
    else:
        state.hashes.pop(upload.id, None)
    return {"registryId": registry_id, "repositoryName": upload.repository,
            "uploadId": upload.id, "lastByteReceived": last}


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
