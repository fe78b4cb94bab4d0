"""The local session store after a process died in the middle of writing a record: the
record keeps its last complete version, and the half-written copy does not stay behind; a
save whose folder cannot be synced is made all the same, in memory as on disk."""

from __future__ import annotations

import errno
import os
import uuid
from pathlib import Path

import pytest

from gateway.state import local
from gateway.state.local import LocalSessionStore
from gateway.state.sessions import UploadSession


async def test_a_write_cut_before_its_rename_leaves_nothing_behind(tmp_path: Path) -> None:
    folder = tmp_path / "sessions"
    store = LocalSessionStore(folder)
    session = UploadSession(id=uuid.uuid4().hex, name="r", repository="r", registry_id=None,
                            route="", ecr_upload_id="u", part_size=5 << 20)
    await store.create(session)
    session.received = 3  # a tail of 3 bytes, below ECR's minimum part
    await store.save(session, b"abc")
    # What a kill -9 between the write of the next version and its rename leaves: a copy
    # that holds private tail bytes (up to a part's) and that no session names any more.
    cut = folder / f"{session.id}.tmp"
    cut.write_bytes(os.urandom(4096))
    other = folder / f"{uuid.uuid4().hex}.tmp"  # of a session deleted since
    other.write_bytes(os.urandom(4096))

    restarted = LocalSessionStore(folder)
    record = await restarted.get(session.id)
    assert record is not None and record.tail_length == 3
    assert await restarted.tail(session.id) == b"abc"
    assert sorted(p.name for p in folder.iterdir()) == [f"{session.id}.session"]


async def test_a_folder_that_cannot_be_synced_leaves_the_save_made(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rename is done when the folder's sync fails (an I/O error): the file holds the new
    record and tail, so the process must go on from them, not from the record before."""
    store = LocalSessionStore(tmp_path / "sessions")
    session = UploadSession(id=uuid.uuid4().hex, name="r", repository="r", registry_id=None,
                            route="", ecr_upload_id="u", part_size=5 << 20)
    await store.create(session)

    def failing(path: Path) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO), str(path))

    monkeypatch.setattr(local, "fsync_dir", failing)
    session.received = 3
    await store.save(session, b"abc")
    record = await store.get(session.id)
    assert record is not None and record.received == 3 and record.tail_length == 3
    assert await store.tail(session.id) == b"abc"
    assert await LocalSessionStore(tmp_path / "sessions").tail(session.id) == b"abc"


async def test_a_file_cut_short_drops_that_session_only(tmp_path: Path) -> None:
    """A session file shorter than what it says it holds (empty, a header without its
    record, a record without all of its tail) is dropped at start: the others load, and no
    client is told a Range past the bytes the file holds."""
    folder = tmp_path / "sessions"
    store = LocalSessionStore(folder)
    sessions = [UploadSession(id=uuid.uuid4().hex, name="r", repository="r", registry_id=None,
                              route="", ecr_upload_id="u", part_size=5 << 20)
                for _ in range(4)]
    for session in sessions:
        await store.create(session)
        session.received = 3
        await store.save(session, b"abc")
    kept, empty, header, tail = sessions
    (folder / f"{empty.id}.session").write_bytes(b"")
    path = folder / f"{header.id}.session"
    path.write_bytes(path.read_bytes()[:2])
    path = folder / f"{tail.id}.session"
    path.write_bytes(path.read_bytes()[:-1])

    restarted = LocalSessionStore(folder)
    assert await restarted.count() == 1
    record = await restarted.get(kept.id)
    assert record is not None and record.tail_length == 3
    assert await restarted.tail(kept.id) == b"abc"
    assert sorted(p.name for p in folder.iterdir()) == [f"{kept.id}.session"]
