"""Warnings about one upstream are said at most once a minute per kind, with a count of
those left unsaid: an outage must not write a line per request."""

from __future__ import annotations

from gateway.observability.logs import Sparing, unsaid


def test_each_kind_is_said_once_per_period_with_the_count_left_out() -> None:
    now = [100.0]
    sparing = Sparing(60.0, clock=lambda: now[0])
    assert sparing.due("stale") == 0  # the first one is said
    assert sparing.due("stale") is None
    assert sparing.due("credentials") == 0  # another kind has its own period
    now[0] += 30
    assert sparing.due("stale") is None
    now[0] += 31
    assert sparing.due("stale") == 2  # said again, with the two left out
    assert sparing.due("stale") is None
    assert unsaid(2) == " (2 more like it since the last such line)" and unsaid(0) == ""
