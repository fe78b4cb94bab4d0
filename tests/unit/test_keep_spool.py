"""A finished spool kept under its digest for a peer (EcrBackend.staged_for_peer): the
replica that finished the upload (gateway/ecr/adopt.py's settle_spool) and the peer reading
the blob ask the spool's holder at the same moment, and both get the staged blob."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
import uuid
from pathlib import Path

import pytest

from gateway.backends.ecr import EcrBackend
from gateway.ecr.retry import RetryPolicy
from gateway.ecr.staging import StagingStore
from gateway.state.local import LocalSessionStore


async def test_requests_at_once_keep_the_spool_once_and_all_get_the_blob(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    staging = StagingStore(tmp_path / "staging", 1 << 30)
    backend = EcrBackend(None, None, None,  # type: ignore[arg-type]
                         LocalSessionStore(tmp_path / "sessions"), staging,
                         RetryPolicy(budget_seconds=1.0), lambda: None,  # type: ignore[arg-type,return-value]
                         downloads=None)  # type: ignore[arg-type]
    blob = os.urandom(300_000)
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    upload = uuid.uuid4().hex
    staging.append(upload, 0, blob)
    link = os.link
    links: list[str] = []

    def slow_link(source: str | Path, target: str | Path) -> None:
        # Holds the link step open: keepings at once would all reach it meanwhile.
        links.append(str(target))
        time.sleep(0.2)
        link(source, target)

    monkeypatch.setattr(os, "link", slow_link)
    found = await asyncio.gather(*(backend.staged_for_peer(digest, upload) for _ in range(3)))
    assert found == [staging.blob_path(digest)] * 3
    assert len(links) == 1
    assert staging.blob_path(digest).read_bytes() == blob
    assert not staging.spool_path(upload).exists()  # the upload is over: its spool went
    assert await backend.staged_for_peer(digest, upload) == staging.blob_path(digest)
