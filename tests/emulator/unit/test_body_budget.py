"""The budget of body bytes held before their signature is checked (body_budget.py)."""

from __future__ import annotations

import pytest

from ecr_emulator.body_budget import FREE_BYTES, UnverifiedBodies
from ecr_emulator.errors import AwsError

MiB = 1024 * 1024


def test_a_full_budget_refuses_large_bodies_but_not_small_ones() -> None:
    budget = UnverifiedBodies(MiB)
    large = budget.hold()
    large.charge(FREE_BYTES + MiB)  # fills it
    assert budget.held == MiB
    small = budget.hold()
    small.charge(FREE_BYTES)
    another = budget.hold()
    with pytest.raises(AwsError) as refused:
        another.charge(FREE_BYTES + 1)
    assert refused.value.name == "ThrottlingException" and refused.value.status == 400
    large.release()
    large.release()
    assert budget.held == 0
    another = budget.hold()
    another.charge(FREE_BYTES + MiB)
    another.release()
    another.charge(MiB)  # checked: nothing more is charged
    assert budget.held == 0


def test_streamed_bytes_are_not_charged() -> None:
    budget = UnverifiedBodies(MiB)
    part = budget.hold()
    part.charge(FREE_BYTES + 1024)
    part.streaming = True
    part.charge(20 * MiB)
    assert budget.held == 1024
    part.release()
    assert budget.held == 0
