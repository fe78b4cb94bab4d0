"""A subject's referrers read from ListImageReferrers a page at a time, each page bounded.

Every referrer comes with its manifest's annotations, up to 4 MiB apiece, so a subject's
whole list can be hundreds of MiB: held whole in memory, for each reader at once, it is
the process's memory an attacker with push rights chooses. Instead ECR is asked
``PER_CALL`` referrers at a time (one call's answer is at most that many manifests'
worth), and an OCI page ends once its referrers' encoded size reaches ``PAGE_BYTES`` or
it holds ``PAGE_REFERRERS`` of them; the client follows the ``Link`` header to the next.
Each referrer is encoded once, as the answer carries it, and the page keeps only that.

Reads of different pages at once share ``limits.max_referrers_bytes``
(gateway/ecr/referrers_budget.py): each call first takes room for the most its answer can
be, and the page then keeps room for what it holds. A call after the first that finds no
room ends the page early.

The cursor in that link is the nextToken of the call the page stopped in and how many of
that call's referrers were already answered. It only ever goes back to ListImageReferrers
of the repository and subject of the request's path, with the request's identity: a token
of another listing is ECR's to refuse (a 400), and it reaches nothing the caller could not.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable

import orjson

from gateway.ecr.referrers_budget import Lease
from gateway.oci.backend import Referrer, ReferrersPage
from gateway.oci.errors import PAGINATION_INVALID, OciError
from gateway.oci.mediatypes import Descriptor
from gateway.oci.offload import off_loop

# ListImageReferrers' maxResults. ECR takes 1 to 50 (20 when not given), and answers each
# referrer with its manifest's annotations, up to ECR's 4 MiB manifest bound: an answer is
# read whole before any of it can be measured, so 4 keeps one at most 16 MiB (50 would be
# 200 MiB), the room each call takes in the budget while it is read.
PER_CALL = 4
MAX_REFERRER_BYTES = 4 * 1024 * 1024  # one referrer in an answer, as encoded: ECR's manifests
CALL_BYTES = PER_CALL * MAX_REFERRER_BYTES
PAGE_BYTES = 16 * 1024 * 1024  # one OCI page's referrers, encoded (the first always goes)
PAGE_REFERRERS = 100  # and at most this many of them
MAX_CALLS = PAGE_REFERRERS // PER_CALL  # per page, even if ECR's pages come back empty
MAX_CURSOR = 4096  # characters; ECR's nextToken are a few hundred

# One call: the referrers after ``token`` (None: the first) and the nextToken after them.
Fetch = Callable[[str | None], Awaitable[tuple[list[Descriptor], str | None]]]


async def read_page(fetch: Fetch, cursor: str | None, lease: Lease) -> ReferrersPage:
    """The page ``cursor`` names (None: the first), its room in the budget held by ``lease``
    when it returns (a call's failure leaves the lease to its owner)."""
    token, skip = position(cursor)
    page: list[Referrer] = []
    size = calls = 0
    while True:
        if not calls:
            await lease.take(CALL_BYTES)  # waits for room, or refused
        elif not lease.try_take(CALL_BYTES):  # the budget is busy: the rest is the next page's
            return ReferrersPage(page, _encode(token, skip))
        found, following = await fetch(token)
        calls += 1
        # Encoding MiBs of annotations is work for beside the loop.
        answered = await off_loop(encode_all, found) if found else []
        del found  # the parsed answer goes: the page keeps the encoding alone
        for index in range(skip, len(answered)):
            cost = len(answered[index].encoded)
            if page and (size + cost > PAGE_BYTES or len(page) >= PAGE_REFERRERS):
                lease.keep(size)
                return ReferrersPage(page, _encode(token, index))
            page.append(answered[index])
            size += cost
        lease.keep(size)
        if not following:
            return ReferrersPage(page)
        if size >= PAGE_BYTES or len(page) >= PAGE_REFERRERS or calls >= MAX_CALLS:
            return ReferrersPage(page, _encode(following, 0))
        token, skip = following, 0


def position(cursor: str | None) -> tuple[str | None, int]:
    """The nextToken and count ``cursor`` names, however it is spelled (JSON's spaces, the
    padding): readers of one page at once share one read by it, not one each for every
    spelling a client makes up."""
    return _decode(cursor) if cursor is not None else (None, 0)


def encode_all(found: list[Descriptor]) -> list[Referrer]:
    """``found`` as an answer carries them: a page is measured by that, not by its strings'
    length (a control character is 6 bytes there, a non-ASCII one up to 4)."""
    return [Referrer.of(referrer) for referrer in found]


def _encode(token: str | None, skip: int) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([token, skip])).decode().rstrip("=")


def _decode(cursor: str) -> tuple[str | None, int]:
    """The nextToken and count a cursor names; a cursor this module did not write (or one
    edited to a count a call never has) is the client's mistake."""
    try:
        if len(cursor) > MAX_CURSOR:
            raise ValueError
        token, skip = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, TypeError):
        raise invalid_cursor(cursor) from None
    if not (token is None or (isinstance(token, str) and token)) or isinstance(skip, bool) \
            or not isinstance(skip, int) or not 0 <= skip < PER_CALL:
        raise invalid_cursor(cursor)
    return token, skip


def invalid_cursor(cursor: str) -> OciError:
    return OciError(PAGINATION_INVALID, {"next": cursor[:50]},
                    message="invalid referrers page cursor")
