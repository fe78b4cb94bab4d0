"""Everything one registry of the emulator owns: settings, database, blob store, log and locks.

The emulator's own account and region is one such state; registries.py holds the others
(other regions and accounts) and ``public/`` the ECR Public registry's.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ecr_emulator import store
from ecr_emulator.blobs import BlobStore
from ecr_emulator.db import Database
from ecr_emulator.requestlog import RequestLog
from ecr_emulator.settings import Settings
from ecr_model.private_files import private_dir

if TYPE_CHECKING:
    from ecr_emulator.faults import Faults
    from ecr_emulator.registries import Registries

log = logging.getLogger(__name__)

LAYER_ROUTE = "/_emulator/layers/{digest}"
# The presigned downloads of the other registries (registries.py).
REGISTRY_LAYER_ROUTE = "/_emulator/registries/{account}/{region}/layers/{digest}"


@dataclass
class HashProgress:
    """sha256 of an upload's first ``position`` bytes, kept so completion need not re-read."""

    hasher: Any
    position: int


class EmulatorState:
    def __init__(self, data_dir: Path, *, account_id: str, region: str,
                 public_url: str | None, settings: Settings,
                 layer_route: str = LAYER_ROUTE) -> None:
        # Layers of private repositories, the signing secret and who called what: this
        # user's alone (NotPrivate, an OSError, for a link or another user's folder).
        private_dir(data_dir)
        self.data_dir = data_dir
        self.account_id = account_id
        self.region = region
        self.public_url = public_url
        self.settings = settings
        self.layer_route = layer_route  # where this registry's presigned downloads are served
        # Every registry of the process (registries.py), for what crosses registries
        # (replication); None for a state standing alone (ECR Public).
        self.registries: Registries | None = None
        self.background: set[asyncio.Task[None]] = set()  # replications under way
        durable = bool(settings.durable)
        self.db = Database(data_dir / "ecr.sqlite3", durable=durable)
        self.blobs = BlobStore(data_dir, durable=durable)
        self.request_log = RequestLog(data_dir / "requests.log",
                                      max_file_bytes=settings.request_log_max_bytes)
        self.secret = _load_secret(data_dir / "secret")
        self.hashes: dict[str, HashProgress] = {}
        # Injected failures (faults.py): set with --admin or ECR_EMULATOR_FAULTS only, so an
        # installation without faults.py runs all the same (see control.py).
        self.faults: Faults | None = None
        self._upload_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary())
        self._digest_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary())

    async def start(self) -> None:
        await self.db.open()
        await self._reconcile()
        self.request_log.start()

    async def stop(self) -> None:
        if self.background:  # let replications under way record their outcome
            await asyncio.wait(self.background, timeout=10)
        await self.request_log.close()
        await self.db.close()

    def spawn(self, work: Any) -> None:
        """Run coroutine ``work`` in the background; stop() waits for it."""
        task = asyncio.create_task(work)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    def upload_lock(self, upload_id: str) -> asyncio.Lock:
        """Serialises the parts and the completion of one upload."""
        return self._lock(self._upload_locks, upload_id)

    def digest_lock(self, digest: str) -> asyncio.Lock:
        """Serialises publishing a blob with removing it when no repository holds it."""
        return self._lock(self._digest_locks, digest)

    @staticmethod
    def _lock(locks: weakref.WeakValueDictionary[str, asyncio.Lock], key: str) -> asyncio.Lock:
        lock = locks.get(key)
        if lock is None:
            lock = asyncio.Lock()
            locks[key] = lock
        return lock

    def registry_id(self, params: dict[str, Any]) -> str:
        """The registry a call addresses; only the emulated account's exists."""
        registry_id = params.get("registryId") or self.account_id
        if registry_id != self.account_id and "repositoryName" in params:
            raise store.repository_not_found(params["repositoryName"], registry_id)
        return str(registry_id)

    def repository_arn(self, name: str) -> str:
        return f"arn:aws:ecr:{self.region}:{self.account_id}:repository/{name}"

    def repository_uri(self, name: str) -> str:
        return f"{self.account_id}.dkr.ecr.{self.region}.amazonaws.com/{name}"

    async def remove_unused_blobs(self, digests: list[str]) -> None:
        """Delete the files of blobs that no repository holds any more."""
        for digest in digests:
            async with self.digest_lock(digest):
                if not await self.db.read(store.digest_in_use, digest):
                    await asyncio.to_thread(self.blobs.remove_blob, digest)

    async def _reconcile(self) -> None:
        """Repair what a crash can leave behind, before the first request."""
        uploads = await self.db.read(store.all_uploads)
        in_use = await self.db.read(store.all_layer_digests)
        lost = await asyncio.to_thread(self._reconcile_files, uploads, in_use)
        for upload_id in lost:
            await self.db.write(store.delete_upload, upload_id)

    def _reconcile_files(self, uploads: dict[str, int], in_use: set[str]) -> list[str]:
        lost = []
        for upload_id in list(self.blobs.upload_ids()):
            if upload_id not in uploads:  # completed or deleted, file not yet unlinked
                self.blobs.discard_upload(upload_id)
        for upload_id, received in uploads.items():
            size = self.blobs.upload_size(upload_id) or 0
            if size > received:  # a part written but never accepted
                self.blobs.truncate_upload(upload_id, received)
            elif size < received:
                log.warning("upload %s lost its data; dropping it", upload_id)
                lost.append(upload_id)
        for digest in list(self.blobs.blob_digests()):
            if digest not in in_use:  # published, but the layer was never committed
                self.blobs.remove_blob(digest)
        return lost


def _load_secret(path: Path) -> bytes:
    """The per-data-dir key that signs download URLs (stable across restarts)."""
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    temp = path.with_suffix(".tmp")
    # Readable by this user only: whoever holds it can sign a download of any layer.
    with open(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write(secrets.token_hex(32))
        f.flush()
        os.fsync(f.fileno())
    os.replace(temp, path)
    return bytes.fromhex(path.read_text().strip())


STATE_KEY = web.AppKey("ecr_emulator_state", EmulatorState)
# The ECR Public registry's own state (its data under <data-dir>/public), see public/.
PUBLIC_STATE_KEY = web.AppKey("ecr_public_emulator_state", EmulatorState)
