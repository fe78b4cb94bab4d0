"""An upload session's record: a tail kept in the staging spool, or the owner the session
counts against, is stated in the record; otherwise the record has the fields every version
of the gateway reads."""

from __future__ import annotations

from typing import Any

from gateway.state.sessions import UploadSession, owner_of


def _session(**fields: Any) -> UploadSession:
    fields.setdefault("id", "u1")
    return UploadSession(name="app", repository="app", registry_id=None, route="",
                         ecr_upload_id="e1", part_size=10, received=7, committed=5,
                         created_at=1.0, updated_at=2.0, **fields)


def test_a_record_without_a_staged_tail_has_the_usual_fields() -> None:
    record = _session().to_dict()
    assert "tail_staged" not in record
    assert UploadSession.from_dict(record) == _session()


def test_a_staged_tail_is_stated_and_read_back() -> None:
    record = _session(tail_staged=True).to_dict()
    assert record["tail_staged"] is True
    assert UploadSession.from_dict(record).tail_staged


def test_an_owner_is_stated_and_read_back() -> None:
    record = _session(owner="ab" * 16).to_dict()
    assert record["owner"] == "ab" * 16
    assert UploadSession.from_dict(record).owner == "ab" * 16


def test_a_record_without_an_owner_counts_for_nobody() -> None:
    """Records from before the per-client cap have no owner, and one without an owner is
    written exactly as before (every version reads it)."""
    assert "owner" not in _session().to_dict()
    old = _session(id="0" * 32).to_dict()
    found = UploadSession.stored(old, "0" * 32)
    assert found is not None and found.owner is None


def test_the_owner_is_a_digest_of_the_client_not_its_name() -> None:
    owner = owner_of("user:alice")
    assert owner == owner_of("user:alice") != owner_of("user:bob")
    assert "alice" not in owner and len(owner) == 32
