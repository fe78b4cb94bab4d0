"""Bytes ECR holds of a client's unfinished uploads: open ones (given back on completion),
those requests may still send, and those that ended within a window. 429 at the bound, with
Retry-After until enough ended bytes are older than the window."""

from __future__ import annotations

import pytest

from gateway.ecr.abandoned import OPEN_RETRY_SECONDS, UnfinishedBytes
from gateway.oci.errors import OciError, RequestRefused


def test_an_owner_at_its_bound_waits_until_enough_ages_out() -> None:
    now = [1000.0]
    budget = UnfinishedBytes(100, 60.0, clock=lambda: now[0])
    budget.add("a", 60)
    now[0] += 10
    budget.add("a", 40)
    budget.add("b", 99)
    budget.check("b")  # under its own bound
    budget.check(None)  # the gateway's own work
    with pytest.raises(OciError) as refused:
        budget.check("a")
    assert refused.value.status == 429
    assert refused.value.headers["Retry-After"] == "50"  # the first 60 bytes age out then
    now[0] += 50
    budget.check("a")
    assert budget.held("a") == 40


def test_no_bound_keeps_nothing() -> None:
    budget = UnfinishedBytes(0, 60.0)
    budget.add("a", 1 << 40)
    budget.sent("u", "a", 0, 1 << 40)
    budget.check("a")
    assert budget.held("a") == 0


def test_open_uploads_count_until_completed() -> None:
    budget = UnfinishedBytes(100, 60.0)
    budget.sent("u", "a", 0, 40)
    budget.sent("u", "a", 40, 80)
    budget.sent("u", "a", 40, 80)  # the same answer again: counted once
    assert budget.held("a") == 80
    with pytest.raises(OciError) as refused:
        budget.check("a", 21)
    assert refused.value.headers["Retry-After"] == str(OPEN_RETRY_SECONDS)
    budget.completed("u")
    assert budget.held("a") == 0


def test_a_request_reserves_what_it_will_send_and_gives_back_the_rest() -> None:
    budget = UnfinishedBytes(100, 60.0)
    grant = budget.grant("a", 70)
    with pytest.raises(RequestRefused):
        budget.grant("a", 31)  # another request at once: no room
    grant.spent(30)  # a part that failed: nothing stored
    budget.sent("u", "a", 0, 0)
    assert budget.held("a") == 40
    grant.reserve(50)  # more than is left: asks for the difference
    grant.spent(50)
    budget.sent("u", "a", 0, 50)
    grant.close()
    assert budget.held("a") == 50


def test_an_ended_upload_counts_against_who_ended_it_or_each_sender() -> None:
    budget = UnfinishedBytes(1000, 60.0)
    budget.sent("u", "owner", 0, 10)
    budget.sent("u", "other", 10, 30)
    budget.ended("u", 30, charged="canceller", owner="owner")
    assert [budget.held(who) for who in ("owner", "other", "canceller")] == [0, 0, 30]
    # Expired: each sender its own; what another process sent (5..10), the owner's.
    budget.sent("v", "other", 10, 25)
    budget.ended("v", 25, charged=None, owner="owner")
    assert [budget.held(who) for who in ("owner", "other")] == [10, 15]


def test_an_upload_ended_elsewhere_is_forgotten() -> None:
    now = [0.0]
    budget = UnfinishedBytes(100, 60.0, clock=lambda: now[0])
    budget.sent("u", "a", 0, 40)
    now[0] += 30
    budget.touch("u")
    assert budget.unused_since(now[0] - 10) == []
    now[0] += 30
    assert budget.unused_since(now[0] - 10) == ["u"]
    budget.forget("u")
    assert budget.held("a") == 0
