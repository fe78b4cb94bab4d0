"""The request log: one JSON object per API call, in ``requests.log`` and, for the control
endpoints (admin.py), in memory.

Tests read it over HTTP (``GET /_emulator/requests``) to see which ECR actions a client made;
without the control endpoints nothing reads it, so nothing is kept in memory.
Lines go through a buffered file that is flushed every half second and on shutdown: the log
is a diagnostic, so a crash may lose its last fraction of a second but never costs a request
an extra system call.

Every request is logged, refused ones included, and some fields are the caller's own text
(the X-Amz-Target header, a Range header, a path): so each text is cut to ``MAX_TEXT``
characters, and the file, once past its size limit (``Settings.request_log_max_bytes``),
becomes ``requests.log.1`` (the one before is dropped). Anyone reaching the port, signed
or not, then grows neither the memory nor the disk without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import deque
from pathlib import Path
from typing import Any, BinaryIO

import orjson

FLUSH_INTERVAL = 0.5
MAX_TEXT = 256


class RequestLog:
    def __init__(self, path: Path, *, max_file_bytes: int) -> None:
        self.path = path
        self._entries: deque[dict[str, Any]] = deque(maxlen=0)
        self._max_file_bytes = max_file_bytes
        self._file = self._open()  # closed by close()
        self._dirty = False
        self._flusher: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._flusher = asyncio.get_running_loop().create_task(self._flush_periodically())

    def remember(self, count: int) -> None:
        """Keep the last ``count`` entries in memory, for ``entries``."""
        self._entries = deque(self._entries, maxlen=count)

    def _open(self) -> BinaryIO:
        # Every caller's key ids and calls: for this user only.
        file = open(os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab",
                    buffering=256 * 1024)
        self._size = file.tell()
        return file

    def record(self, entry: dict[str, Any]) -> None:
        entry = {key: _clipped(value) for key, value in entry.items()}
        self._entries.append(entry)
        line = orjson.dumps(entry) + b"\n"
        if self._size + len(line) > self._max_file_bytes and self._size:
            self._file.close()
            self.path.replace(self.path.with_name(self.path.name + ".1"))
            self._file = self._open()
        self._file.write(line)
        self._size += len(line)
        self._dirty = True

    def entries(self, action: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self._entries if action is None or e["action"] == action]

    def clear(self) -> int:
        """Forget the in-memory view (the file keeps its lines); returns how many were held."""
        count = len(self._entries)
        self._entries.clear()
        return count

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        self._file.close()

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            if self._dirty:
                self._dirty = False
                self._file.flush()


def _clipped(value: Any) -> Any:
    if isinstance(value, str) and len(value) > MAX_TEXT:
        return value[:MAX_TEXT] + "…"
    return value
