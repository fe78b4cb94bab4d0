"""Referrers answers of many pages at once take at most ``limits.max_referrers_bytes``.

Each read of a referrers page is bounded (about 16 MiB of referrers, gateway/ecr/referrers.py),
and readers of one page at once share its read; but every other page (another subject's, or
another cursor's: a cursor names where a page starts) was a read of its own, so whoever may
read referrers (anyone, where pulls are anonymous) chose how many were held at once, and
for how long: a reader that does not read its answer keeps it.
"""

from __future__ import annotations

import asyncio
import base64
import re
import sys
from urllib.parse import quote

import aiohttp
import orjson

from tests.integration.trust.test_event_loop_stalls import _annotated_referrer
from tests.integration.trust.test_referrers_pages import _push, _subject, _walk
from tests.support.gateway import GatewayProcess
from tests.support.oci import OciClient, digest_of
from tests.support.processes import peak_rss

MiB = 1024 * 1024
REFERRERS = 24  # of about 4 MiB each: 6 pages of 4
ADDRESSES = 8  # clients, by address: 127.0.0.1 to 127.0.0.8

# Readers in a process of their own, each URL asked from its address at once, none read
# until every answer has begun (its page read) or was refused: an attacker holding what it
# asked for. Then each is read whole and its status printed.
_READERS = r"""
import re, socket, sys
from urllib.parse import urlsplit

asked = []
for number, url in enumerate(sys.argv[2:]):
    parts = urlsplit(url)
    source = (f"127.0.0.{number % int(sys.argv[1]) + 1}", 0)
    sock = socket.create_connection((parts.hostname, parts.port), source_address=source)
    sock.sendall(f"GET {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                 "Connection: close\r\n\r\n".encode())
    asked.append(sock)
heads = [sock.recv(12) for sock in asked]
for head, sock in zip(heads, asked):
    while b"\r\n\r\n" not in head:
        head += sock.recv(1 << 16)
    top, _, start = head.partition(b"\r\n\r\n")
    left = int(re.search(rb"(?i)\r\ncontent-length: *(\d+)", top)[1]) - len(start)
    while left > 0:
        left -= len(sock.recv(1 << 20))
    sock.close()
    print(int(top.split()[1]))
"""


def _cursor(token: str | None, skip: int) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([token, skip])).decode().rstrip("=")


async def _tokens(session: aiohttp.ClientSession, url: str) -> list[str | None]:
    """The ECR tokens a walk of ``url`` names in its cursors (nothing secret: each is where
    one ListImageReferrers call starts), None for the first."""
    tokens: list[str | None] = [None]
    following: str | None = url
    while following is not None:
        async with session.get(following) as reply:
            assert reply.status == 200, await reply.text()
            await reply.read()
            link = reply.headers.get("Link")
        following = None
        if link is not None:
            match = re.search(r"[?&]next=([^&>]+)", link)
            assert match is not None, link
            cursor = match[1]
            token, _ = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
            tokens.append(token)
            following = f"{url}?next={cursor}"
    return tokens


async def _read_at_once(urls: list[str]) -> list[int]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _READERS, str(ADDRESSES), *urls, stdout=asyncio.subprocess.PIPE)
    out, _ = await process.communicate()
    assert process.returncode == 0
    return [int(status) for status in out.split()]


async def test_many_pages_held_at_once_stay_within_the_budget(
        gateway: GatewayProcess, repo: str, session: aiohttp.ClientSession) -> None:
    """Every page start of 24 referrers of 4 MiB (6 ECR tokens, 4 counts: 24 pages of up to
    16 MiB), each asked twice, from 8 addresses, and held unread: the default 128 MiB
    bound holds, over the clients' quarters (429) and the total (503)."""
    client = OciClient(session, gateway.url)
    subject = _subject("budget")
    notes = {f"note{n}": _annotated_referrer(subject, n) for n in range(REFERRERS)}
    await _push(session, client, repo, {"subject": subject, **notes})
    listing = client.url(f"/v2/{repo}/referrers/{digest_of(subject)}")
    tokens = await _tokens(session, listing)
    assert len(tokens) == REFERRERS // 4, tokens
    urls = [f"{listing}?next={quote(_cursor(token, skip))}"
            for token in tokens for skip in range(4)] * 2
    assert gateway.process is not None
    before = peak_rss(gateway.process.pid)
    statuses = await _read_at_once(urls)
    grown = peak_rss(gateway.process.pid) - before
    assert set(statuses) <= {200, 429, 503} and 200 in statuses, statuses
    # Each read its own: the gateway grew by 1,220 MiB (all 48 answered). Bounded: by 184 MiB
    # (16 answered, 12 refused with 429, 20 with 503 after their wait); with two CPU hogs
    # beside it on two CPUs, by 191 MiB (16 answered, 32 with 503).
    assert grown < 480 * MiB, f"the gateway grew {grown // MiB} MiB"

    # Every room was given back: the whole list again, from an address that was refused.
    listed, _ = await _walk(session, listing)
    assert sorted(listed) == sorted(digest_of(body) for body in notes.values())
