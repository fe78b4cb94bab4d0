"""Bytes of uploads that ended unfinished, per owner over a window: 429 at the bound, with
Retry-After until enough of them are older than the window."""

from __future__ import annotations

import pytest

from gateway.ecr.abandoned import AbandonedBytes
from gateway.oci.errors import OciError


def test_an_owner_at_its_bound_waits_until_enough_ages_out() -> None:
    now = [1000.0]
    budget = AbandonedBytes(100, 60.0, clock=lambda: now[0])
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
    budget = AbandonedBytes(0, 60.0)
    budget.add("a", 1 << 40)
    budget.check("a")
    assert budget.held("a") == 0
