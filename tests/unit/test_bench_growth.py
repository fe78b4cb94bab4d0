"""The growth benchmark shrinks its largest blob to the free disk, and only that one."""

from __future__ import annotations

from bench.growth import DISK_FACTOR, PROFILES, GiB, MiB, fit_to_disk, label

FULL = PROFILES["full"].sizes


def test_plenty_of_disk_keeps_the_sizes() -> None:
    assert fit_to_disk(FULL, 100 * GiB) == FULL


def test_little_disk_halves_the_largest_until_it_fits() -> None:
    free = 9 * GiB
    sizes = fit_to_disk(FULL, free)
    assert sizes[:-1] == FULL[:-1]
    assert sizes[-1] == 2 * GiB
    assert DISK_FACTOR * sum(sizes) <= free


def test_never_below_the_size_before_it() -> None:
    assert fit_to_disk(FULL, 1 * GiB)[-1] == FULL[-2]


def test_labels() -> None:
    assert label(4 * GiB) == "4 GiB"
    assert label(256 * MiB) == "256 MiB"
