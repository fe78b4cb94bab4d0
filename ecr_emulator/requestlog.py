"""The request log: one JSON object per API call, in ``requests.log`` and in memory.

Tests read it over HTTP (``GET /_emulator/requests``) to see which ECR actions a client made.
Lines go through a buffered file that is flushed every half second and on shutdown: the log
is a diagnostic, so a crash may lose its last fraction of a second but never costs a request
an extra system call.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from pathlib import Path
from typing import Any

import orjson

FLUSH_INTERVAL = 0.5


class RequestLog:
    def __init__(self, path: Path, *, keep: int = 100_000) -> None:
        self.path = path
        self._entries: deque[dict[str, Any]] = deque(maxlen=keep)
        self._file = open(path, "ab", buffering=256 * 1024)  # closed by close()
        self._dirty = False
        self._flusher: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._flusher = asyncio.get_running_loop().create_task(self._flush_periodically())

    def record(self, entry: dict[str, Any]) -> None:
        self._entries.append(entry)
        self._file.write(orjson.dumps(entry) + b"\n")
        self._dirty = True

    def entries(self, action: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self._entries if action is None or e["action"] == action]

    def clear(self) -> int:
        """Forget the in-memory view (the file keeps everything); returns how many were held."""
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
