"""Web pages in a browser on the gateway's host cannot use a gateway listening on loopback
without authentication: not by pointing a name of their own at 127.0.0.1 (DNS rebinding:
the name comes in ``Host``), nor by a cross-site POST (``Origin``, ``Sec-Fetch-Site``). The
gateway answers them 403 and stores nothing, while clients naming it by address,
``localhost`` or a listed name, and a trusted proxy, go on as before. With authentication
(no anonymous access) nothing changes: a page has no credentials to send."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess

CONFIG = {"mediaType": "application/vnd.oci.empty.v1+json",
          "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
          "size": 2}


async def _status(gateway: GatewayProcess, method: str, path: str, host: str | None,
                  **kwargs: Any) -> tuple[int, str]:
    headers = {"Host": host} if host else {}
    async with aiohttp.ClientSession() as session, session.request(
            method, f"{gateway.url}{path}", headers={**headers, **kwargs.pop("headers", {})},
            **kwargs) as r:
        return r.status, await r.text()


@pytest.fixture(scope="module")
def open_gateway(upstream: EmulatorProcess,
                 tmp_path_factory: pytest.TempPathFactory) -> Any:
    with GatewayProcess(tmp_path_factory.mktemp("open"),
                        {"auth": {"local_host_names": ["registry.test"]}},
                        upstream_url=upstream.url) as gateway:
        yield gateway


async def test_a_rebound_name_gets_nothing(open_gateway: GatewayProcess, repo: str) -> None:
    page = f"attacker.example:{open_gateway.port}"
    status, body = await _status(open_gateway, "GET", "/v2/", page)
    assert status == 403 and json.loads(body)["errors"][0]["code"] == "DENIED", body
    # the empty config blob (2 bytes) as a monolithic upload, then a manifest naming it
    blob = f"/v2/{repo}/blobs/uploads/?digest={CONFIG['digest']}"
    status, _ = await _status(open_gateway, "POST", blob, page, data=b"{}",
                              headers={"Content-Type": "application/octet-stream"})
    assert status == 403
    manifest = json.dumps({"schemaVersion": 2,
                           "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": CONFIG, "layers": []}).encode()
    kind = {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
    status, _ = await _status(open_gateway, "PUT", f"/v2/{repo}/manifests/v1", page,
                              data=manifest, headers=kind)
    assert status == 403
    for host in (page, "Attacker.Example.", "127.0.0.1.attacker.example", "localhost.evil"):
        assert (await _status(open_gateway, "GET", "/v2/_catalog", host))[0] == 403, host
    # nothing was stored: the same push by address finds no blob
    status, _ = await _status(open_gateway, "HEAD", f"/v2/{repo}/blobs/{CONFIG['digest']}", None)
    assert status == 404


async def test_a_cross_site_write_gets_nothing(open_gateway: GatewayProcess,
                                              repo: str) -> None:
    blob = f"/v2/{repo}/blobs/uploads/?digest={CONFIG['digest']}"
    for headers in ({"Origin": "https://attacker.example"}, {"Origin": "null"},
                    {"Sec-Fetch-Site": "cross-site"}):
        status, body = await _status(open_gateway, "POST", blob, None, data=b"{}",
                                     headers={"Content-Type": "text/plain", **headers})
        assert status == 403 and "web pages" in body, (headers, body)
    status, _ = await _status(open_gateway, "HEAD", f"/v2/{repo}/blobs/{CONFIG['digest']}", None)
    assert status == 404


async def test_clients_naming_this_host_go_on(open_gateway: GatewayProcess) -> None:
    port = open_gateway.port
    for host in (None, f"127.0.0.1:{port}", f"localhost:{port}", "LOCALHOST",
                 f"app.localhost:{port}", f"[::1]:{port}", f"registry.test:{port}",
                 "Registry.Test."):
        status, body = await _status(open_gateway, "GET", "/v2/", host)
        assert status == 200, (host, body)


async def test_a_trusted_proxy_answers_for_its_names(upstream: EmulatorProcess,
                                                     tmp_path: Path) -> None:
    config = {"trusted_proxies": ["127.0.0.1"],
              "auth": {"allow_anonymous_on_public_address": True}}
    with GatewayProcess(tmp_path / "gw", config, upstream_url=upstream.url) as gateway:
        assert (await _status(gateway, "GET", "/v2/", "registry.example.com"))[0] == 200


async def test_with_logins_a_name_is_only_a_name(upstream: EmulatorProcess,
                                                 tmp_path: Path) -> None:
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("alice:$2y$05$Hr3MFL3ZdE7TePPGKpDhhOr2fN1yD3Jm8YJkzN5eC6a0v7K6HI5Ta\n")
    config = {"auth": {"mode": "htpasswd", "htpasswd_file": str(htpasswd)}}
    with GatewayProcess(tmp_path / "gw", config, upstream_url=upstream.url) as gateway:
        status, _ = await _status(gateway, "GET", "/v2/", f"attacker.example:{gateway.port}")
        assert status == 401
