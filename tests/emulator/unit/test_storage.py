"""The blob store, the database queries, and the repairs made at start-up."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from ecr_emulator import store
from ecr_emulator.blobs import BlobStore
from ecr_emulator.errors import AwsError
from ecr_emulator.settings import Settings
from ecr_emulator.state import EmulatorState
from tests.support.pagecache import resident_pages

ACCOUNT = "123456789012"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_parts_are_written_in_place(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    hasher = hashlib.sha256()
    blobs.write_part("u1", 0, b"hello ", hasher)
    blobs.write_part("u1", 6, b"world!!!", None)
    blobs.write_part("u1", 6, b"world", hasher)  # a retried part replaces what was there
    assert blobs.upload_path("u1").read_bytes() == b"hello world"
    assert blobs.hash_upload("u1", 11) == sha(b"hello world")
    assert "sha256:" + hasher.hexdigest() == sha(b"hello world")
    with pytest.raises(OSError):
        blobs.hash_upload("u1", 12)


def test_publish_links_once(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    blobs.write_part("u1", 0, b"content plus junk", None)
    blobs.publish("u1", sha(b"content"), 7)
    assert blobs.blob_path(sha(b"content")).read_bytes() == b"content"
    blobs.write_part("u2", 0, b"content", None)
    blobs.publish("u2", sha(b"content"), 7)  # already there: nothing changes
    assert list(blobs.blob_digests()) == [sha(b"content")]
    blobs.discard_upload("u1")
    assert blobs.has_blob(sha(b"content"))


async def test_queries(tmp_path: Path) -> None:
    state = EmulatorState(tmp_path, account_id=ACCOUNT, region="us-east-1", public_url=None,
                          settings=Settings())
    await state.start()
    try:
        db = state.db
        repo = store.Repository(name="a/b", created_at=time.time())
        await db.write(store.create_repository, repo, registry_id=ACCOUNT, max_repositories=10)
        with pytest.raises(AwsError, match="RepositoryAlreadyExists"):
            await db.write(store.create_repository, repo, registry_id=ACCOUNT,
                           max_repositories=10)
        await db.write(store.create_upload, "a/b", "u1", 0.0, registry_id=ACCOUNT)
        upload = await db.read(store.get_upload, "a/b", "u1", registry_id=ACCOUNT)
        await db.write(store.record_part, upload, 3, 0.0)
        with pytest.raises(AwsError, match="UploadNotFound"):  # stale view of the upload
            await db.write(store.record_part, upload, 3, 0.0)
        upload = await db.read(store.get_upload, "a/b", "u1", registry_id=ACCOUNT)
        await db.write(store.record_part, upload, 10, 0.0)
        assert (upload.received, upload.parts) == (3, 1)
        assert await db.read(store.undersized_parts, "u1", 5) == 1
        assert await db.read(store.undersized_parts, "u1", 3) == 0
        final = await db.read(store.get_upload, "a/b", "u1", registry_id=ACCOUNT)
        await db.write(store.finish_upload, final, sha(b"x"), 0.0, registry_id=ACCOUNT)
        assert await db.read(store.get_layers, "a/b", [sha(b"x")]) == {
            sha(b"x"): store.Layer(sha(b"x"), 13, None)}
        with pytest.raises(AwsError, match="UploadNotFound"):
            await db.read(store.get_upload, "a/b", "u1", registry_id=ACCOUNT)
        await db.write(store.create_upload, "a/b", "u2", 0.0, registry_id=ACCOUNT)
        second = await db.read(store.get_upload, "a/b", "u2", registry_id=ACCOUNT)
        with pytest.raises(AwsError, match="LayerAlreadyExists"):
            await db.write(store.finish_upload, second, sha(b"x"), 0.0, registry_id=ACCOUNT)
        deleted = await db.write(store.delete_repository, "a/b", force=False,
                                 registry_id=ACCOUNT)
        assert deleted.layer_digests == [sha(b"x")] and deleted.upload_ids == ["u2"]
        assert not await db.read(store.digest_in_use, sha(b"x"))
    finally:
        await state.stop()


async def test_start_up_repairs_what_a_crash_left(tmp_path: Path) -> None:
    def new_state() -> EmulatorState:
        return EmulatorState(tmp_path, account_id=ACCOUNT, region="us-east-1",
                             public_url=None, settings=Settings())

    state = new_state()
    await state.start()
    db, blobs = state.db, state.blobs
    await db.write(store.create_repository, store.Repository(name="a/b", created_at=0.0),
                   registry_id=ACCOUNT, max_repositories=10)
    for upload_id in ("kept", "lost"):
        await db.write(store.create_upload, "a/b", upload_id, 0.0, registry_id=ACCOUNT)
        upload = await db.read(store.get_upload, "a/b", upload_id, registry_id=ACCOUNT)
        blobs.write_part(upload_id, 0, b"accepted", None)
        await db.write(store.record_part, upload, 8, 0.0)
    await state.stop()
    # What a crash can leave: a part written but not accepted, an upload file whose row was
    # already deleted, a blob published without its layer row.
    blobs.upload_path("kept").write_bytes(b"accepted + unaccepted")
    blobs.upload_path("lost").unlink()
    blobs.write_part("finished", 0, b"orphan", None)
    blobs.write_part("orphan-blob", 0, b"blob", None)
    blobs.publish("orphan-blob", sha(b"blob"), 4)

    state = new_state()
    await state.start()
    try:
        assert blobs.upload_path("kept").read_bytes() == b"accepted"
        assert list(blobs.upload_ids()) == ["kept"]
        assert not blobs.upload_path("finished").exists()
        assert not blobs.has_blob(sha(b"blob"))
        with pytest.raises(AwsError, match="UploadNotFound"):
            await state.db.read(store.get_upload, "a/b", "lost", registry_id=ACCOUNT)
        kept = await state.db.read(store.get_upload, "a/b", "kept", registry_id=ACCOUNT)
        assert kept.received == 8
    finally:
        await state.stop()


@pytest.mark.parametrize("durable", [True, False])
def test_parts_go_past_the_page_cache_with_or_without_fsync(tmp_path: Path,
                                                            durable: bool) -> None:
    """The no-fsync mode differs from the durable one by the syncs alone: its parts are not
    written into fresh page-cache pages either (on the VMs measured, 3 CPU-s per GiB)."""
    blobs = BlobStore(tmp_path, durable=durable)
    part = os.urandom(8 * 1024 * 1024 + 100)
    blobs.write_part("u1", 0, part, None)
    path = blobs.upload_path("u1")
    assert resident_pages(path) <= 1  # only the unaligned tail's block
    assert path.read_bytes() == part


def test_every_new_name_is_synced_in_its_folder(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A power cut keeps what fsync wrote: an upload file or a blob whose bytes are synced
    but whose name (its entry in the folder: created, linked, a new blobs/sha256/ab) is not
    comes back without it, while the database, synced too, says the part or layer is there."""
    synced: list[tuple[int, int]] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        info = os.fstat(fd)
        synced.append((info.st_dev, info.st_ino))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)

    def is_synced(folder: Path) -> bool:
        info = folder.stat()
        return (info.st_dev, info.st_ino) in synced

    blobs = BlobStore(tmp_path / "data")
    assert is_synced(tmp_path / "data")  # blobs/ and uploads/ are named there
    # A first part refused after it created the file; the retry names it durably.
    writer = blobs.part_writer("u1", 0, None)
    writer.write(b"half")
    writer.rollback()
    synced.clear()
    blobs.write_part("u1", 0, b"content", None)
    assert is_synced(blobs.upload_root)
    synced.clear()
    blobs.publish("u1", sha(b"content"), 7)
    target = blobs.blob_path(sha(b"content"))
    assert is_synced(target.parent)  # the link
    assert is_synced(target.parent.parent)  # the new blobs/sha256/<first two>
    assert is_synced(blobs.blob_root)  # the new blobs/sha256
