"""The bound of new repositories one upstream's fills may create (a sliding hour)."""

from __future__ import annotations

from gateway.pullthrough.creations import HOUR, Creations


def test_a_sliding_hour_of_creations() -> None:
    now = [0.0]
    creations = Creations(2, clock=lambda: now[0])
    first = creations.take()
    assert first is not None and creations.take() is not None
    assert creations.take() is None and not creations.has_room()
    creations.give_back(first)  # the repository existed: no new one
    now[0] = 10.0
    assert creations.take() is not None and creations.take() is None
    now[0] = HOUR + 1.0  # the first kept creation is more than an hour old
    assert creations.has_room() and creations.take() is not None
    assert creations.take() is None


def test_zero_is_no_bound() -> None:
    creations = Creations(0)
    assert all(creations.take() is not None for _ in range(1000))
    assert creations.has_room()
