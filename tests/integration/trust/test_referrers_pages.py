"""A subject's referrers are answered in bounded pages, and the page cursor reaches nothing else.

Each referrer carries its manifest's annotations, up to 4 MiB, so whoever may push chooses
how large one subject's referrers list is. Answered whole, 40 such referrers were one
answer of 160 MiB, built in memory for each reader at once (8 readers: 1.6 GiB). The spec
lets a registry page the list with a ``Link`` header; each page here is at most about 16 MiB
of referrers, and the cursor in the link is the client's to send back: a made-up or edited
one is a 400, and one taken from another repository's listing still lists only the subject
of the request's path.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from pathlib import Path
from urllib.parse import urljoin

import aiohttp
import orjson

from tests.integration.trust.test_event_loop_stalls import (
    CONFIG,
    LAYER,
    _annotated_referrer,
    _layer,
    _put,
    _read_referrers_at_once,
)
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess
from tests.support.hostile import LateAnswers, Server
from tests.support.oci import OCI_CONFIG, OCI_MANIFEST, OciClient, digest_of
from tests.support.processes import peak_rss

MiB = 1024 * 1024
PAGE_LIMIT = 16 * MiB + 64 * 1024  # a page's referrers, and the index around them


def _subject(label: str) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                       "config": _layer(CONFIG, OCI_CONFIG), "layers": [_layer(LAYER)],
                       "annotations": {"label": label}}).encode()


def _small_referrer(subject: bytes, note: str) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                       "artifactType": "application/vnd.example.note",
                       "config": _layer(CONFIG, OCI_CONFIG), "layers": [_layer(LAYER)],
                       "subject": _layer(subject, OCI_MANIFEST),
                       "annotations": {"note": note}}).encode()


async def _push(session: aiohttp.ClientSession, client: OciClient, repo: str,
                manifests: dict[str, bytes]) -> None:
    for blob in (LAYER, CONFIG):
        await client.push_blob(repo, blob)
    for tag, body in manifests.items():
        await _put(session, client.url(f"/v2/{repo}/manifests/{tag}"), body)


async def _walk(session: aiohttp.ClientSession, url: str) -> tuple[list[str], list[int]]:
    """Every referrer listed from ``url`` on, following the Links; and each page's size."""
    listed: list[str] = []
    sizes: list[int] = []
    following: str | None = url
    while following is not None:
        async with session.get(following) as reply:
            body = await reply.read()
            assert reply.status == 200, body[:300]
            assert reply.headers["Content-Type"] == "application/vnd.oci.image.index.v1+json"
            sizes.append(len(body))
            listed += [m["digest"] for m in orjson.loads(body)["manifests"]]
            following = _next(following, reply.headers.get("Link"))
    return listed, sizes


def _next(url: str, link: str | None) -> str | None:
    if link is None:
        return None
    match = re.fullmatch(r'<([^>]+)>; rel="next"', link)
    assert match is not None, link
    return urljoin(url, match[1])



async def test_a_subjects_large_referrers_come_in_bounded_pages(
        gateway: GatewayProcess, repo: str, session: aiohttp.ClientSession) -> None:
    """20 referrers of 4 MiB of annotations: answered whole, one answer of 84 MB for each
    reader; paged, no page over about 16 MiB, every referrer listed once over the Links."""
    client = OciClient(session, gateway.url)
    subject = _subject("large")
    notes = {f"note{n}": _annotated_referrer(subject, n) for n in range(20)}
    await _push(session, client, repo, {"subject": subject, **notes})
    assert gateway.process is not None
    before = peak_rss(gateway.process.pid)
    first = client.url(f"/v2/{repo}/referrers/{digest_of(subject)}")
    listed, sizes = await _walk(session, first)
    assert sorted(listed) == sorted(digest_of(body) for body in notes.values())
    assert max(sizes) <= PAGE_LIMIT, [size // MiB for size in sizes]

    assert await _read_referrers_at_once(first, 8) == [20] * 8
    grown = peak_rss(gateway.process.pid) - before
    # A walk and 8 readers at once: whole, it grew by 693 MiB; paged, by 172 MiB.
    assert grown < 320 * MiB, f"the gateway grew {grown // MiB} MiB"


def _cursor(token: object, skip: object) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([token, skip])).decode().rstrip("=")


async def test_a_referrers_cursor_lists_only_the_subject_of_the_path(
        gateway: GatewayProcess, repo: str, session: aiohttp.ClientSession) -> None:
    """A cursor from another repository's listing (the attacker's own, say) used on this
    one's path, or one made up, edited or overlong: never another repository's referrers,
    never a header of the cursor's making, never a 5xx."""
    client = OciClient(session, gateway.url)
    theirs = _subject("theirs")
    await _push(session, client, f"{repo}-theirs", {
        "subject": theirs, **{f"note{n}": _annotated_referrer(theirs, n) for n in range(5)}})
    async with session.get(client.url(
            f"/v2/{repo}-theirs/referrers/{digest_of(theirs)}")) as reply:
        assert reply.status == 200
        link = reply.headers["Link"]
    cursor = re.search(r"[?&]next=([^&>]+)", link)
    assert cursor is not None, link

    mine = _subject("mine")
    referrer = _small_referrer(mine, "mine")
    await _push(session, client, repo, {"subject": mine, "note": referrer})
    listing = f"/v2/{repo}/referrers/{digest_of(mine)}"
    async with session.get(client.url(f"{listing}?next={cursor[1]}")) as reply:
        assert reply.status in (200, 400), reply.status
        if reply.status == 200:
            found = [m["digest"] for m in (await reply.json(content_type=None))["manifests"]]
            assert set(found) <= {digest_of(referrer)}, found

    for forged in ["not a cursor", _cursor(None, 99), _cursor(None, -1), _cursor(None, True),
                   _cursor("x\r\nX-Injected: 1", 0), _cursor(["list"], 0), "A" * 5000,
                   _cursor("", 0), "%ff%fe", "é"]:
        async with session.get(client.url(listing), params={"next": forged}) as reply:
            body = await reply.json(content_type=None)
            assert reply.status == 400, (forged, reply.status, body)
            assert body["errors"][0]["code"] == "PAGINATION_NUMBER_INVALID", body
            assert "X-Injected" not in reply.headers


def _escaped_referrer(subject: bytes, number: int) -> bytes:
    """A referrer of ``subject`` of about 4 MiB whose annotations are control characters:
    6 bytes each in JSON (\\u0001), one character once parsed."""
    value = "\x01" * 100_000
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                       "artifactType": "application/vnd.example.note",
                       "config": _layer(CONFIG, OCI_CONFIG), "layers": [_layer(LAYER)],
                       "subject": _layer(subject, OCI_MANIFEST),
                       "annotations": {f"k{number}-{i}": value for i in range(6)}})
    assert 3 * MiB < len(body) < 4 * MiB, len(body)
    return body.encode()


async def test_a_page_is_bounded_by_its_encoded_size(
        gateway: GatewayProcess, repo: str, session: aiohttp.ClientSession) -> None:
    """Annotations that JSON escapes (control characters) or encodes in several bytes
    (non-ASCII) take up to 6 times their length in the answer: the page's bound counts
    what is sent, not the parsed length (8 such referrers were one page of 27 MiB)."""
    client = OciClient(session, gateway.url)
    subject = _subject("escaped")
    notes = {f"note{n}": _escaped_referrer(subject, n) for n in range(8)}
    await _push(session, client, repo, {"subject": subject, **notes})
    listed, sizes = await _walk(session, client.url(f"/v2/{repo}/referrers/"
                                                    f"{digest_of(subject)}"))
    assert sorted(listed) == sorted(digest_of(body) for body in notes.values())
    assert max(sizes) <= PAGE_LIMIT, [size // MiB for size in sizes]


async def test_readers_of_one_page_share_one_read_however_its_cursor_is_spelled(
        upstream: EmulatorProcess, tmp_path: Path, repo: str) -> None:
    """Readers of one page at once share one read of it (each page holds up to about
    32 MiB while it is read and encoded). A cursor is the client's to spell: JSON spaces in
    it name the same page, and each spelling was a read of its own, so concurrent readers
    held as many pages as spellings they made up."""
    late = LateAnswers(upstream.url, "ListImageReferrers")
    async with Server(late) as hop:
        gw = GatewayProcess(tmp_path / "gw", upstream_url=upstream.url)
        gw.config["upstream"]["endpoint_url"] = hop.url  # signed for the emulator's host
        with gw:
            async with aiohttp.ClientSession() as session:
                client = OciClient(session, gw.url)
                subject = _subject("spelled")
                await _push(session, client, repo, {"subject": subject, "note": _small_referrer(
                    subject, "note")})
                listing = client.url(f"/v2/{repo}/referrers/{digest_of(subject)}")
                spellings = [base64.urlsafe_b64encode(
                    b"[" + b" " * spaces + b"null,0]").decode() for spaces in range(6)]
                late.hold, asked = 1.0, late.answered

                async def read(cursor: str) -> int:
                    async with session.get(listing, params={"next": cursor}) as reply:
                        await reply.read()
                        return reply.status

                assert await asyncio.gather(*map(read, spellings)) == [200] * 6
                assert late.answered - asked == 1, "each spelling read the page again"
