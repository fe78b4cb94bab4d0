"""An upload session's record: a tail kept in the staging spool is stated in the record;
otherwise the record has the fields every version of the gateway reads."""

from __future__ import annotations

from gateway.state.sessions import UploadSession


def _session(**fields: bool) -> UploadSession:
    return UploadSession(id="u1", name="app", repository="app", registry_id=None, route="",
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
