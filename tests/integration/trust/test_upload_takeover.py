"""An upload id shows in access logs, and a client may push to a repository another user
pushes to too. Knowing alice's upload id, bob (allowed to push there) can neither read its
status, continue it, finish it nor cancel it: to him it is unknown, as to a client of
another repository. Alice's upload is untouched and completes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import aiohttp

from tests.integration.auth.helpers import basic, write_htpasswd
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess

ALICE, BOB = basic("alice", "alice-pw"), basic("bob", "bob-pw")


async def test_another_pusher_cannot_take_over_an_upload(upstream: EmulatorProcess,
                                                         tmp_path: Path) -> None:
    users = write_htpasswd(tmp_path / "htpasswd", {"alice": "alice-pw", "bob": "bob-pw"})
    config = {"auth": {"mode": "htpasswd", "htpasswd_file": str(users),
                       "rules": [{"repository": "shared/**", "users": ["*"],
                                  "actions": ["pull", "push", "delete"]}]}}
    name = f"shared/app-{os.urandom(3).hex()}"
    data = os.urandom(3000)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with GatewayProcess(tmp_path / "gw", config, upstream_url=upstream.url) as gw:
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{gw.url}/v2/{name}/blobs/uploads/", headers=ALICE) as r:
                assert r.status == 202
                location = gw.url + r.headers["Location"]
            chunk = {"Content-Type": "application/octet-stream", "Content-Range": "0-999"}
            async with session.patch(location, data=data[:1000], headers={**ALICE, **chunk}) as r:
                assert r.status == 202
                location = gw.url + r.headers["Location"]

            bobs = [session.get(location, headers=BOB),
                    session.patch(location, data=b"x" * 10, headers={
                        **BOB, "Content-Type": "application/octet-stream",
                        "Content-Range": "1000-1009"}),
                    session.put(f"{location}&digest={digest}" if "?" in location
                                else f"{location}?digest={digest}", data=data[1000:],
                                headers=BOB),
                    session.delete(location, headers=BOB)]
            for attempt in bobs:
                async with attempt as r:
                    body = await r.json()
                    assert (r.status, body["errors"][0]["code"]) == (404, "BLOB_UPLOAD_UNKNOWN")

            async with session.get(location, headers=ALICE) as r:
                assert r.status == 204 and r.headers["Range"] == "0-999"
            async with session.put(f"{location}&digest={digest}" if "?" in location
                                   else f"{location}?digest={digest}", data=data[1000:],
                                   headers=ALICE) as r:
                assert r.status == 201, await r.text()
            async with session.get(f"{gw.url}/v2/{name}/blobs/{digest}", headers=BOB) as r:
                assert r.status == 200 and await r.read() == data
