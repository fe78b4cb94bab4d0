"""Property-based fuzzing of the routes over the wire: generated methods, paths, queries,
headers and bodies (manifests included) sent as raw HTTP to a real gateway on a real
emulator. Whatever arrives: no 5xx (503 included: the upstream is healthy, so any refusal
is the request's fault and a 4xx), an OCI error body on every refusal that has a
body, no ECR state changed by a refused request, and no traceback in either log.

Examples: 120, or 1500 with ``--long`` / RELIABILITY_LONG=1.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.reliability.helpers import MUTATING, http_request, log_text
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess
from tests.support.oci import OciClient
from tests.unit.fuzz.strategies import LONG, digest_like, manifest_doc, name_like, nasty_text

EXAMPLES = 1500 if LONG else 120
REPO = "fuzz/base"


def _send(gateway: GatewayProcess, data: bytes, head: bool) -> tuple[int, dict[str, str], bytes]:
    host, port = gateway.host.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        try:
            sock.sendall(data)
        except OSError:
            pass  # refused mid-body: the answer is still there to read
        received = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
    head_part, _, body = received.partition(b"\r\n\r\n")
    while head_part.startswith(b"HTTP/1.1 100"):
        head_part, _, body = body.partition(b"\r\n\r\n")
    lines = head_part.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/"), received[:200]
    headers = {k.strip().lower(): v.strip() for k, _, v in
               (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, b"" if head else body


@pytest.fixture(scope="module")
def seeded(gateway: GatewayProcess, upstream: EmulatorProcess) -> dict[str, str]:
    """An image to aim at, so that generated requests also hit things that exist."""
    import asyncio

    import aiohttp

    async def push() -> tuple[str, bytes]:
        async with aiohttp.ClientSession() as session:
            return await OciClient(session, gateway.url).push_image(REPO, "v1",
                                                                    [os.urandom(500)])

    digest, manifest = asyncio.run(push())
    doc = json.loads(manifest)
    return {"digest": digest, "layer": doc["layers"][0]["digest"],
            "config": doc["config"]["digest"]}


suffixes = st.one_of(
    st.builds("/manifests/{}".format, st.one_of(st.just("v1"), nasty_text, digest_like)),
    st.builds("/blobs/{}".format, digest_like),
    st.just("/blobs/uploads/"),
    st.builds("/blobs/uploads/{}".format, st.one_of(nasty_text, st.uuids().map(str))),
    st.just("/tags/list"),
    st.builds("/referrers/{}".format, digest_like),
    nasty_text,
)
queries = st.dictionaries(st.sampled_from(["n", "last", "digest", "mount", "from", "ns",
                                           "artifactType"]),
                          st.one_of(nasty_text, digest_like, st.just("-1")), max_size=3)
headers = st.lists(st.tuples(
    st.sampled_from(["Content-Range", "Range", "Content-Type", "Accept", "X-Request-Id"]),
    st.one_of(st.from_regex(r"(bytes[ =])?\d{0,12}-\d{0,12}", fullmatch=True),
              st.sampled_from(["application/vnd.oci.image.manifest.v1+json",
                               "application/vnd.oci.image.index.v1+json", "text/plain"]),
              st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126),
                      max_size=40))), max_size=3)
bodies = st.one_of(st.just(b""), st.binary(max_size=200),
                   manifest_doc.map(lambda d: json.dumps(d).encode()))


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(method=st.sampled_from(["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS"]),
       name=st.one_of(st.just(REPO), name_like), suffix=suffixes, query=queries,
       extra=headers, body=bodies, data=st.data())
def test_generated_requests(gateway: GatewayProcess, upstream: EmulatorProcess,
                            seeded: dict[str, str], method: str, name: str, suffix: str,
                            query: dict[str, str], extra: list[tuple[str, str]], body: bytes,
                            data: Any) -> None:
    from urllib.parse import quote, urlencode

    for key in query:  # sometimes aim at what exists
        if data.draw(st.booleans()):
            query[key] = seeded[data.draw(st.sampled_from(sorted(seeded)))]
    path = "/v2/" + quote(name, safe="/%") + quote(suffix, safe="/%:")
    if query:
        path += "?" + urlencode(query)
    wire = http_request(method, path, gateway.host, [(k, v) for k, v in extra], body)
    upstream.clear_requests()
    status, answer_headers, answer = _send(gateway, wire, head=method == "HEAD")
    assert status < 500, (status, answer[:300], wire[:300])
    if status >= 400 and answer and "json" in answer_headers.get("content-type", ""):
        error = json.loads(answer)["errors"][0]
        assert set(error) == {"code", "message", "detail"}
    if status >= 400:
        changed = [e for e in upstream.requests() if e["action"] in MUTATING
                   and e["outcome"] == "ok"]
        # A refused digest check comes after the bytes went up; nothing else may change ECR.
        allowed = status == 400 and "DIGEST_INVALID" in answer.decode(errors="replace")
        assert not changed or allowed, (status, answer[:300], changed)


def test_no_traceback_after_fuzzing(gateway: GatewayProcess, upstream: EmulatorProcess) -> None:
    assert "Traceback" not in log_text(gateway, upstream)
