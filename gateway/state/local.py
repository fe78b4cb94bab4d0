"""The default session store: records in this process, each session's record and tail in one
file, so idle sessions cost no memory and a restarted gateway can resume them."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from ecr_model.durable_files import fsync_dir
from ecr_model.private_files import NOFOLLOW, private_dir
from gateway.state.sessions import SessionLimit, TailBudget, TailsFull, UploadSession

log = logging.getLogger(__name__)

# File layout: 4-byte big-endian header length, JSON record, then the tail bytes.
_HEADER = struct.Struct(">I")


class LocalSessionStore:
    process_local = True

    def __init__(self, directory: Path, *, max_tail_bytes: int = 0) -> None:
        """``max_tail_bytes``: the tails all sessions' files may hold (0: no bound), on top
        of each owner's bound (the spools' bound leaves tails here, on the same disk)."""
        self._dir = directory
        self._max_tail_bytes = max_tail_bytes
        private_dir(self._dir)  # records hold the tails of uploads: private bytes
        self._records: dict[str, UploadSession] = {}
        # Only locks someone holds or waits for: an id nobody uses costs nothing, so random
        # upload ids sent by a client cannot grow this.
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}
        # Owner -> the ids of its sessions (those being created included).
        self._owned: dict[str, set[str]] = {}
        # Session id -> the tail bytes its file holds (counted before the write).
        self._tails: dict[str, int] = {}
        self._tail_total = 0  # the sum of _tails
        # A write the process died in never reached its rename: its copy (a record and up to
        # a part of private tail bytes) is no session's, and nothing else would remove it.
        for path in self._dir.glob("*.tmp"):
            path.unlink(missing_ok=True)
        for path in self._dir.glob("*.session"):
            try:
                session, tail = self._read(path)
                if not session.tail_staged and len(tail) != session.tail_length:
                    raise ValueError("tail cut short")
            except (OSError, ValueError, TypeError, KeyError, struct.error):
                # A file cut short (empty, or missing tail bytes its record counts: the
                # client would resume past bytes nobody holds) is that session's loss only.
                path.unlink(missing_ok=True)
                continue
            self._records[path.stem] = session
            if not session.tail_staged:
                self._set_tail(path.stem, session.tail_length)
            if session.owner:
                self._owned.setdefault(session.owner, set()).add(path.stem)

    def _set_tail(self, session_id: str, length: int) -> None:
        self._tail_total += length - self._tails.get(session_id, 0)
        self._tails[session_id] = length

    def _path(self, session_id: str) -> Path:
        return self._dir / f"{session_id}.session"

    @staticmethod
    def _read(path: Path) -> tuple[UploadSession, bytes]:
        data = path.read_bytes()
        (length,) = _HEADER.unpack_from(data)
        if len(data) < _HEADER.size + length:
            raise ValueError("record cut short")
        record = json.loads(data[_HEADER.size:_HEADER.size + length])
        return UploadSession.from_dict(record), data[_HEADER.size + length:]

    def _write(self, session: UploadSession, tail: bytes) -> None:
        header = json.dumps(session.to_dict()).encode()
        path = self._path(session.id)
        tmp = path.with_suffix(".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(_HEADER.pack(len(header)))
                handle.write(header)
                handle.write(tail)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except OSError:
            # A full disk, say: the record stays as it was, and the half-written copy does
            # not keep taking space.
            tmp.unlink(missing_ok=True)
            raise
        # The rename itself must outlive a power cut: else the record the client was answered
        # for may come back as the one before it (an older Range). A folder that cannot be
        # synced leaves the save made all the same (the file holds it): failing it now would
        # have this process go on from the record before, against the file's tail.
        try:
            fsync_dir(self._dir)
        except OSError as exc:
            log.warning("upload sessions' folder could not be synced (%s): a power cut may "
                        "bring back a session's previous record", exc.strerror or exc)

    async def create(self, session: UploadSession, *, max_owned: int = 0) -> None:
        owner = session.owner
        if owner:
            # Counted before the write (no await in between): concurrent creates see it.
            ids = self._owned.setdefault(owner, set())
            if max_owned and session.id not in ids and len(ids) >= max_owned:
                raise SessionLimit(max_owned)
            ids.add(session.id)
        try:
            await asyncio.to_thread(self._write, session, b"")
        except BaseException:
            self._disown(owner, session.id)
            raise
        self._records[session.id] = session

    def _disown(self, owner: str | None, session_id: str) -> None:
        ids = self._owned.get(owner) if owner else None
        if owner and ids is not None:
            ids.discard(session_id)
            if not ids:
                del self._owned[owner]

    async def get(self, session_id: str) -> UploadSession | None:
        record = self._records.get(session_id)
        # Hand out a copy so a failed request cannot leave a half-updated record behind.
        return UploadSession.from_dict(record.to_dict()) if record else None

    async def tail(self, session_id: str) -> bytes:
        try:
            return (await asyncio.to_thread(self._read, self._path(session_id)))[1]
        except FileNotFoundError:
            return b""

    async def save(self, session: UploadSession, tail: bytes, *,
                   max_owner_tail: int = 0, bounded: bool = False) -> None:
        assert len(tail) == (0 if session.tail_staged else session.tail_length), \
            "tail must match the record"
        before = self._tails.get(session.id, 0)
        if max_owner_tail and session.owner and len(tail) > before:
            held = sum(self._tails.get(other, 0) for other in self._owned.get(session.owner, ())
                       if other != session.id)
            if held + len(tail) > max_owner_tail:
                raise TailBudget(held)
        if bounded and self._max_tail_bytes and len(tail) > before and \
                self._tail_total - before + len(tail) > self._max_tail_bytes:
            raise TailsFull(self._tail_total)
        self._set_tail(session.id, len(tail))  # before the write: concurrent saves see it
        try:
            await asyncio.to_thread(self._write, session, tail)
        except BaseException:
            self._set_tail(session.id, before)
            raise
        self._records[session.id] = session

    async def delete(self, session_id: str) -> None:
        self._tail_total -= self._tails.pop(session_id, 0)
        session = self._records.pop(session_id, None)
        if session is not None:
            self._disown(session.owner, session_id)
        self._path(session_id).unlink(missing_ok=True)

    @asynccontextmanager
    async def lock(self, session_id: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(session_id) or (asyncio.Lock(), 0)
        self._locks[session_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[session_id]
            if users <= 1:
                del self._locks[session_id]
            else:
                self._locks[session_id] = (lock, users - 1)

    async def idle(self, older_than: float,
                   finished_older_than: float | None = None) -> list[UploadSession]:
        finished = older_than if finished_older_than is None else finished_older_than
        return [s for s in self._records.values() if s.updated_at < older_than
                or (s.completed is not None and s.updated_at < finished)]

    async def count(self) -> int:
        return len(self._records)

    async def owned(self, owner: str) -> int:
        return len(self._owned.get(owner, ()))

    async def ping(self) -> None:
        if not os.access(self._dir, os.W_OK):
            raise OSError(f"session directory {self._dir} is not writable")

    async def close(self) -> None:
        self._locks.clear()
