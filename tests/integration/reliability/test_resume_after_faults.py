"""Every upload can be finished: an upstream failure at any point of a 60 MiB chunked upload
leaves a session the client continues (from the Range the registry reports) and completes.

Each PATCH is 30 MiB. When ECR refuses a part, the parts that did not reach it must not pile
up in the session's tail: the completion, or the next request, sends the tail upstream, and
ECR takes at most 20 MiB in one part. ECR's own part size (InitiateLayerUpload's partSize) is
tried at 10 MiB and at 20 MiB, the largest the gateway takes.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from tests.integration.reliability.helpers import MiB, faults_admin, set_faults
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess
from tests.support.oci import OciClient, Reply, digest_of

SIZE = 60 * MiB
PATCH = 30 * MiB


@pytest.fixture(scope="module", params=[10 * MiB, 20 * MiB], ids=["part10", "part20"])
def upstream(request: pytest.FixtureRequest,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    with EmulatorProcess(tmp_path_factory.mktemp("emulator"),
                         env={"ECR_EMULATOR_PART_SIZE": str(request.param)}) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def quickgw(upstream: EmulatorProcess,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """Gives up on a failing upstream within a second; its breaker closes again fast."""
    config = {"upstream": {"retry_budget_seconds": 1.0, "breaker_open_seconds": 0.5}}
    with GatewayProcess(tmp_path_factory.mktemp("gw"), config,
                        upstream_url=upstream.url) as gateway:
        yield gateway


@pytest.fixture
async def client(quickgw: GatewayProcess, upstream: EmulatorProcess) -> AsyncIterator[OciClient]:
    faults_admin(upstream, "DELETE")
    async with aiohttp.ClientSession() as session:
        yield OciClient(session, quickgw.url)
    faults_admin(upstream, "DELETE")


async def _received(client: OciClient, location: str) -> int:
    async with client.session.get(client.url(location)) as status:
        assert status.status == 204, await status.text()
        return int(status.headers["Range"].split("-")[1]) + 1


# (ECR action, the request during which it fails, the rule, the OCI error the client sees)
# (None: the gateway absorbs it, the client sees success)
POINTS: list[tuple[str, str, dict[str, Any], tuple[int, str] | None]] = [
    ("UploadLayerPart", "patch 1", {"error": "ServerException", "rate": 1.0},
     (503, "UNAVAILABLE")),
    ("UploadLayerPart", "patch 2", {"error": "ServerException", "rate": 1.0},
     (503, "UNAVAILABLE")),
    ("UploadLayerPart", "patch 2", {"error": "InvalidParameterException", "count": 1},
     (400, "BLOB_UPLOAD_INVALID")),
    ("UploadLayerPart", "patch 2", {"error": "ThrottlingException", "rate": 1.0},
     (429, "TOOMANYREQUESTS")),
    ("CompleteLayerUpload", "put", {"error": "ServerException", "rate": 1.0},
     (503, "UNAVAILABLE")),
    # Completed, then answered with an error: the retry finds the upload gone, the layer there.
    ("CompleteLayerUpload", "put", {"error": "ServerException", "after": True, "count": 50},
     None),
]


@pytest.mark.parametrize("action,when,rule,seen", POINTS,
                         ids=[f"{a}-{w}-{r['error']}{'-after' if r.get('after') else ''}"
                              for a, w, r, _ in POINTS])
async def test_upload_finishes_after_an_upstream_failure(
        client: OciClient, upstream: EmulatorProcess, action: str, when: str,
        rule: dict[str, Any], seen: tuple[int, str] | None) -> None:
    name = f"resume/{os.urandom(4).hex()}"
    data = os.urandom(SIZE)
    digest = digest_of(data)
    location = await client.start(name)
    offset, requests = 0, 0
    failures: list[tuple[int, str]] = []

    async def fails_now(step: str) -> bool:
        if step != when or failures:
            return False
        set_faults(upstream, [{"action": action, **rule}], seed=1)
        return True

    async def recover(reply: Reply) -> None:
        failures.append((reply.status, reply.error_code()))
        assert reply.status < 500 or "Retry-After" in reply.headers
        faults_admin(upstream, "DELETE")
        await asyncio.sleep(0.6)  # the breaker closes again

    while True:
        while offset < SIZE:
            requests += 1
            injected = await fails_now(f"patch {requests}")
            r = await client.patch(location, data[offset:offset + PATCH], offset)
            if r.status == 202:
                assert not injected or rule.get("count") is None, "the fault did not show"
                offset += min(PATCH, SIZE - offset)
                continue
            await recover(r)
            offset = await _received(client, location)
            assert offset <= SIZE
        await fails_now("put")
        r = await client.put(location, digest)
        if r.status == 201:
            break
        await recover(r)
        offset = await _received(client, location)  # the session is still there
        assert len(failures) < 3

    assert failures[:1] == ([seen] if seen else []), failures
    calls = [e for e in upstream.requests(action) if e.get("repository") == name]
    assert any(e.get("faults") for e in calls), "no failure was injected"
    assert await client.get_blob(name, digest) == data
    parts = [e for e in upstream.requests("UploadLayerPart") if e.get("repository") == name]
    assert all(p["outcome"] != "InvalidParameterException" or p.get("faults") for p in parts), \
        "a part ECR cannot take was sent"
