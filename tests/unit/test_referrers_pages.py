"""Referrers pages (gateway/ecr/referrers.py): over ECR calls of a few referrers each, every
referrer is answered once, in order, and no page passes its budget but to hold one."""

from __future__ import annotations

import random

import pytest

from gateway.ecr import referrers
from gateway.ecr.referrers import PAGE_BYTES, PAGE_REFERRERS, PER_CALL, read_page
from gateway.ecr.referrers_budget import Lease, ReferrersBudget
from gateway.oci.backend import Referrer
from gateway.oci.errors import OciError
from gateway.oci.mediatypes import Descriptor

MiB = 1024 * 1024


def _listing(sizes: list[int]) -> list[Descriptor]:
    return [Descriptor("application/vnd.oci.image.manifest.v1+json", f"sha256:{n:064x}", 1,
                       None, {"note": "a" * size} if size else None)
            for n, size in enumerate(sizes)]


def _ecr(listing: list[Descriptor]) -> referrers.Fetch:
    """ListImageReferrers over ``listing``: PER_CALL a call, the token an offset."""
    async def fetch(token: str | None) -> tuple[list[Descriptor], str | None]:
        start = int(token[1:]) if token else 0
        end = start + PER_CALL
        return listing[start:end], (f"t{end}" if end < len(listing) else None)
    return fetch


def _lease() -> Lease:
    return Lease(ReferrersBudget(0), None)


async def _walk(listing: list[Descriptor]) -> list[list[Referrer]]:
    pages = []
    cursor: str | None = None
    while True:
        page = await read_page(_ecr(listing), cursor, _lease())
        pages.append(page.referrers)
        if page.next is None:
            return pages
        cursor = page.next


@pytest.mark.parametrize("sizes", [
    [],
    [0] * 3,
    [0] * 1000,  # small ones: PAGE_REFERRERS a page
    [4 * MiB - 1000] * 17,  # the largest manifests
    [random.Random(seed).choice([0, 100, MiB, 3 * MiB, 4 * MiB - 1000]) for seed in range(90)],
])
async def test_every_referrer_once_in_bounded_pages(sizes: list[int]) -> None:
    listing = _listing(sizes)
    pages = await _walk(listing)
    assert [r for page in pages for r in page] == [Referrer.of(d) for d in listing]
    for page in pages:
        assert len(page) <= PAGE_REFERRERS
        assert len(page) == 1 or sum(len(r.encoded) for r in page) <= PAGE_BYTES


@pytest.mark.parametrize("cursor", ["", "!!", "W251bGwsNF0", "A" * 5000, "WyJ4IiwtMV0"])
async def test_a_cursor_it_did_not_write_is_refused(cursor: str) -> None:
    # W251bGwsNF0: [null,4] (past a call); WyJ4IiwtMV0: ["x",-1]
    with pytest.raises(OciError) as raised:
        await read_page(_ecr(_listing([0] * 10)), cursor, _lease())
    assert raised.value.error.status == 400
