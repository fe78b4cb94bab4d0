"""Tails (an upload's last bytes under ECR's 5 MiB part minimum) that the staging spools'
bound leaves to the local session store were bounded per client only: many clients (logins,
or addresses as a trusted proxy gives them) each at its own bound filled the gateway's disk
(10,000 sessions of up to 5 MiB: about 50 GB). Past ``limits.max_upload_tail_bytes`` over
all clients, a PATCH that would keep more gets 429 with the upload's Range (its bytes not
received) and the session files hold no more. Operators learn why pushers get 429: one
warning line a minute, naming the bound, and every refusal counted in
``ecr_gateway_upload_refusals_total{bound="tail_total"}``."""

from __future__ import annotations

import os
import re
from pathlib import Path

import aiohttp

from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess

MiB = 1024 * 1024
TAIL = MiB
PER_CLIENT = 4 * MiB
TOTAL = 12 * MiB
CLIENTS = 8


def _stored(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.glob("*.session"))


async def test_tails_of_many_clients_stop_at_the_gateways_bound(
        tmp_path: Path, repo: str, session: aiohttp.ClientSession) -> None:
    config = {"trusted_proxies": ["127.0.0.1/32"],
              "auth": {"allow_anonymous_on_public_address": True},
              "blobs": {"staging": {"spools_max_bytes": 1}},  # every tail goes to the store
              "limits": {"max_upload_tail_bytes_per_client": PER_CLIENT,
                         "max_upload_tail_bytes": TOTAL}}
    with EmulatorProcess(tmp_path / "ecr") as upstream, \
            GatewayProcess(tmp_path / "gateway", config, upstream_url=upstream.url) as gateway:
        sessions = gateway.data_dir / "sessions"
        refused: list[tuple[str, dict[str, str]]] = []
        kept: list[tuple[str, dict[str, str]]] = []
        for i in range(CLIENTS):
            headers = {"X-Forwarded-For": f"203.0.113.{i + 1}"}
            for _ in range(PER_CLIENT // TAIL):
                async with session.post(f"{gateway.url}/v2/{repo}/blobs/uploads/",
                                        headers=headers) as opened:
                    assert opened.status == 202, await opened.text()
                    location = opened.headers["Location"]
                async with session.patch(f"{gateway.url}{location}", data=os.urandom(TAIL),
                                         headers={**headers,
                                                  "Content-Type": "application/octet-stream",
                                                  "Content-Range": f"0-{TAIL - 1}"}) as reply:
                    if reply.status == 202:
                        kept.append((location, headers))
                        continue
                    assert reply.status == 429, await reply.text()
                    assert (await reply.json())["errors"][0]["code"] == "TOOMANYREQUESTS"
                    assert reply.headers["Retry-After"]
                    assert reply.headers["Range"] == "0-0"  # nothing of it received
                    refused.append((location, headers))

        assert _stored(sessions) < TOTAL + MiB, f"{_stored(sessions)} bytes of tails on disk"
        assert len(kept) == TOTAL // TAIL
        assert refused
        async with session.get(f"{gateway.url}/metrics") as metrics:
            counted = re.search(r'^ecr_gateway_upload_refusals_total\{bound="tail_total"\} (\S+)$',
                                await metrics.text(), re.M)
        assert counted and float(counted[1]) == len(refused), counted
        said = [line for line in gateway.log_lines if "limits.max_upload_tail_bytes)" in line]
        assert len(said) == 1, said  # once, however many PATCHes it refused
        assert "203.0.113." not in said[0] and "/v2/" not in said[0]

        # A cancelled upload's tail makes room for another's.
        location, headers = kept[0]
        async with session.delete(f"{gateway.url}{location}", headers=headers) as cancel:
            assert cancel.status == 204
        location, headers = refused[0]
        async with session.patch(f"{gateway.url}{location}", data=os.urandom(TAIL),
                                 headers={**headers, "Content-Type": "application/octet-stream",
                                          "Content-Range": f"0-{TAIL - 1}"}) as reply:
            assert reply.status == 202, await reply.text()  # sent again from its Range
        assert _stored(sessions) < TOTAL + MiB
