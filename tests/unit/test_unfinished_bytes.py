"""Bytes ECR holds of a client's unfinished uploads: open ones (given back on completion),
those requests may still send, and those that ended within a window. 429 at the bound, with
Retry-After until enough ended bytes are older than the window."""

from __future__ import annotations

import pytest

from gateway.ecr.unfinished import OPEN_RETRY_SECONDS, UnfinishedBytes
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


def test_open_uploads_of_a_refused_owner_are_looked_up_at_most_once_in_a_while() -> None:
    """A client at its bound asking again and again costs the store one lookup per open
    upload per ``OPEN_RETRY_SECONDS``, not one per request."""
    now = [1000.0]
    budget = UnfinishedBytes(100, 60.0, clock=lambda: now[0])
    budget.sent("u1", "a", 0, 60)
    budget.sent("u2", "a", 0, 40)
    budget.sent("u3", "b", 0, 10)
    assert budget.doubtful("b") == []  # under its bound: nothing to ask
    assert budget.doubtful("a") == ["u1", "u2"]
    assert budget.doubtful("a") == []
    now[0] += OPEN_RETRY_SECONDS
    budget.forget("u1")  # the store no longer has it
    budget.check("a")
    assert budget.doubtful("a", 61) == ["u2"]


def test_a_request_larger_than_the_bound_is_too_large_not_too_many() -> None:
    """Waiting never makes it fit: 413 without Retry-After, rather than 429 for ever."""
    budget = UnfinishedBytes(100, 60.0)
    with pytest.raises(RequestRefused) as refused:
        budget.reserve("a", 101)
    assert refused.value.status == 413
    assert "Retry-After" not in refused.value.headers
    budget.reserve("a", 100)  # the bound itself fits


def test_what_other_replicas_hold_counts_toward_the_bound() -> None:
    budget = UnfinishedBytes(100, 60.0)
    budget.add("a", 40)
    budget.elsewhere["a"] = 60
    assert budget.held_here("a") == 40
    with pytest.raises(OciError) as refused:
        budget.check("a")
    assert refused.value.status == 429
    with pytest.raises(RequestRefused):
        budget.reserve("a", 1)
    budget.elsewhere.pop("a")
    budget.check("a")


def test_changes_are_kept_for_a_listener_only() -> None:
    """Without Redis nobody takes the changed clients: none are kept (one per client ever
    seen would grow without end)."""
    alone = UnfinishedBytes(100, 60.0)
    alone.add("a", 1)
    alone.sent("u", "b", 0, 5)
    assert alone.changed == set()

    woken: list[int] = []
    shared = UnfinishedBytes(100, 60.0)
    shared.on_change(lambda: woken.append(1))
    shared.add("a", 1)
    shared.sent("u", "b", 0, 5)
    shared.reserve("c", 3)
    assert shared.changed == {"a", "b", "c"} and len(woken) == 3
    shared.changed.clear()
    shared.completed("u")
    shared.unreserve("c", 3)
    assert shared.changed == {"b", "c"}


async def test_open_uploads_left_quiet_are_confirmed_with_the_store() -> None:
    now = [1000.0]
    budget = UnfinishedBytes(100, 60.0, clock=lambda: now[0])
    budget.sent("done-elsewhere", "a", 0, 30)
    budget.sent("still-open", "a", 0, 30)
    assert budget.unconfirmed(quiet=1.0) == []  # used just now
    now[0] += 2
    asked: list[str] = []

    async def still_open(upload_id: str) -> bool:
        asked.append(upload_id)
        return upload_id == "still-open"

    await budget.recount(budget.unconfirmed(quiet=1.0), still_open)
    assert sorted(asked) == ["done-elsewhere", "still-open"]
    assert budget.held("a") == 30
    assert budget.unconfirmed(quiet=1.0) == []  # asked about at most every few seconds
    now[0] += OPEN_RETRY_SECONDS
    assert budget.unconfirmed(quiet=1.0) == ["still-open"]
