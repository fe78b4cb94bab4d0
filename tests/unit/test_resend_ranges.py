"""The parts an upload ECR ended is sent again in: each within ECR's bounds."""

from __future__ import annotations

from itertools import pairwise

import pytest

from gateway.ecr.part_pipeline import MIN_PART
from gateway.ecr.resend import resend_ranges
from gateway.ecr.uploads import MAX_PART

MiB = 1024 * 1024


@pytest.mark.parametrize("part_size", [MIN_PART, 10 * MiB, 16 * MiB, MAX_PART])
@pytest.mark.parametrize("end", [1, MIN_PART - 1, MIN_PART, MIN_PART + 1, 10 * MiB + 1,
                                 20 * MiB + 3, 20 * MiB + MIN_PART, 45 * MiB + 7])
def test_every_part_is_one_ecr_takes(part_size: int, end: int) -> None:
    ranges = resend_ranges(end, part_size)
    assert ranges[0][0] == 0 and ranges[-1][1] == end
    assert all(stop == start for (_, stop), (start, _) in pairwise(ranges))
    sizes = [stop - start for start, stop in ranges]
    assert all(0 < size <= MAX_PART for size in sizes)
    assert all(size >= MIN_PART for size in sizes) or sizes == [end]


def test_nothing_to_send_is_no_part() -> None:
    assert resend_ranges(0, MIN_PART) == []
