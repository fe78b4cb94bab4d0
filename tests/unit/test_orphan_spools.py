"""Which spools the running gateway's sweep drops (UploadManager.drop_orphan_spools): only
files no session names that have not been written for the idle timeout; a spool being
written, or a link StagingStore.promote is making, is never touched."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

from gateway.ecr.retry import RetryPolicy
from gateway.ecr.staging import StagingStore
from gateway.ecr.uploads import UploadManager
from gateway.state.local import LocalSessionStore
from gateway.state.sessions import UploadSession


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


async def test_the_sweep_drops_only_old_spools_no_session_names(tmp_path: Path) -> None:
    store = LocalSessionStore(tmp_path / "sessions")
    staging = StagingStore(tmp_path / "staging", 1 << 30)
    manager = UploadManager(store, staging, RetryPolicy(budget_seconds=1.0),
                            lambda target: None)  # type: ignore[arg-type,return-value]
    live = UploadSession(id=uuid.uuid4().hex, name="r", repository="r", registry_id=None,
                         route="", ecr_upload_id="u", part_size=5 << 20)
    await store.create(live)
    old_orphan, young_orphan = uuid.uuid4().hex, uuid.uuid4().hex
    for upload in (live.id, old_orphan, young_orphan):
        staging.append(upload, 0, b"bytes")
    kept_live = staging.spool_path(live.id).with_name(f"{live.id}.kept")
    os.link(staging.spool_path(live.id), kept_live)  # promote, between its two steps
    kept_orphan = staging.spool_path(old_orphan).with_name(f"{old_orphan}.kept")
    os.link(staging.spool_path(old_orphan), kept_orphan)  # left by a process that died
    foreign = staging.spool_path(live.id).with_name("not-a-session")
    foreign.write_bytes(b"x")
    for path in (staging.spool_path(live.id), staging.spool_path(old_orphan), foreign):
        _age(path, 600)

    assert await manager.drop_orphan_spools(60) == 2
    assert not staging.spool_path(old_orphan).exists() and not kept_orphan.exists()
    assert staging.spool_path(young_orphan).exists()  # maybe written right now
    assert staging.spool_path(live.id).exists() and kept_live.exists()
    assert foreign.exists()  # not a file the gateway makes
    _age(staging.spool_path(young_orphan), 600)
    assert await manager.drop_orphan_spools(60) == 1
    assert not staging.spool_path(young_orphan).exists()
    # At the start (no age rule): every file no session names goes, and every link.
    assert await manager.drop_orphan_spools() == 1
    assert not kept_live.exists() and staging.spool_path(live.id).exists()
    await store.delete(live.id)
    assert await manager.drop_orphan_spools() == 1
    assert sorted(os.listdir(tmp_path / "staging" / "spool")) == ["not-a-session"]
