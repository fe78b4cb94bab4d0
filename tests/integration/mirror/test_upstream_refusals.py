"""Pull-through when the upstream registry refuses: what a client hears for each kind of
refusal. The upstream is a second ecr-gateway in htpasswd mode with the docker token flow
that gives anonymous pulls of ``public/**`` only, as Docker Hub does: a name it does not
give anonymously is a 401 after the token flow (the token lacks the scope), a name it cannot
hold a 400 NAME_INVALID. A client's mistake is a 404 without Retry-After; the gateway's own
credentials refused are a 502 without Retry-After (retrying will not fix a password); an
image ECR holds stays pullable whatever the upstream refuses on the tag's re-check."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt
import pytest
import yaml

from tests.integration.mirror.test_sync import sync_config
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess
from tests.support.oci import OCI_MANIFEST, OciClient

PULLER, PULLER_PASSWORD = "puller", "pull-secret-4b9e"
ROTATING, ROTATING_PASSWORD = "rotating", "rotating-secret-81c2"
MIRROR = {"ns": "registry.example.com"}


def _htpasswd(path: Path, rotating_password: str) -> None:
    path.write_text("".join(
        f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()}\n"
        for user, password in ((PULLER, PULLER_PASSWORD), (ROTATING, rotating_password))))


@pytest.fixture(scope="module")
def source(upstream: EmulatorProcess,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """The upstream registry: anonymous pulls of public/** only, users pull and push all."""
    root = tmp_path_factory.mktemp("source")
    _htpasswd(root / "htpasswd", ROTATING_PASSWORD)
    config = {"auth": {"mode": "htpasswd", "htpasswd_file": str(root / "htpasswd"),
                       "rules": [{"repository": "public/**", "anonymous": True,
                                  "actions": ["pull"]},
                                 {"repository": "**", "users": [PULLER, ROTATING],
                                  "actions": ["pull", "push"]}]},
              "routes": [{"prefix": "", "repository_prefix": "source"}],
              # Its blobs from itself: redirect mode would send them to the emulator's
              # plain-http loopback address, a redirect no upstream may lead the gateway to.
              "blobs": {"mode": "proxy"}}
    with GatewayProcess(root / "gw", config, upstream_url=upstream.url) as gw:
        yield gw


@pytest.fixture(scope="module")
def anonymous(upstream: EmulatorProcess, source: GatewayProcess,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """A gateway pulling through ``source`` without credentials: as a mirror and a route."""
    config = {"mirrors": {"registry.example.com": {
                  "repository_prefix": "ex", "upstream": {"url": source.url}}},
              "routes": [{"prefix": "hub", "repository_prefix": "hub-cache",
                          "upstream": {"url": source.url}},
                         {"prefix": "", "repository_prefix": "team"}]}
    with GatewayProcess(tmp_path_factory.mktemp("anonymous"), config,
                        upstream_url=upstream.url) as gw:
        yield gw


async def _push(source: GatewayProcess, name: str) -> tuple[str, bytes]:
    basic = {"Authorization": aiohttp.encode_basic_auth(PULLER, PULLER_PASSWORD)}
    async with aiohttp.ClientSession(headers=basic) as pusher:
        return await OciClient(pusher, source.url).push_image(
            name, "v1", [name.encode() * 2000])


async def _get(http: aiohttp.ClientSession, url: str,
               params: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    async with http.get(url, params=params, headers={"Accept": OCI_MANIFEST}) as r:
        return r.status, dict(r.headers), await r.read()


def _error(body: bytes) -> dict[str, Any]:
    (error,) = json.loads(body)["errors"]
    assert isinstance(error, dict)
    return error


async def _events(gw: GatewayProcess, path: str, count: int = 1) -> list[list[str]]:
    """The pull-through events of the requests whose path ends with ``path``, once there
    are ``count`` (an access-log line is written just after its answer)."""
    found: list[list[str]] = []
    for _ in range(50):
        found = [e["pullthrough"] for e in gw.access_log() if e["path"].endswith(path)]
        if len(found) >= count:
            break
        await asyncio.sleep(0.1)
    return found


async def test_a_name_the_upstream_refuses_without_credentials_is_not_found(
        source: GatewayProcess, anonymous: GatewayProcess,
        http: aiohttp.ClientSession) -> None:
    """Docker Hub's answer for a repository it does not have: the anonymous token flow runs,
    the token lacks the scope, the registry answers 401. The client named something that is
    not there for it: 404, no Retry-After, through a mirror and through a route."""
    _digest, manifest = await _push(source, "public/app")
    status, _headers, body = await _get(http, f"{anonymous.url}/v2/public/app/manifests/v1",
                                        MIRROR)
    assert (status, body) == (200, manifest)  # the anonymous token flow works

    for url, params in ((f"{anonymous.url}/v2/nothing/here/manifests/v1", MIRROR),
                        (f"{anonymous.url}/v2/hub/nothing/here/manifests/v1", {})):
        status, headers, body = await _get(http, url, params)
        assert status == 404, (url, status, body[:300])
        assert "Retry-After" not in headers
        error = _error(body)
        assert error["code"] == "NAME_UNKNOWN", error
        assert error["detail"]["upstream_status"] == 401
        assert "does not hold nothing/here, or it needs credentials" in error["message"], error
    digest = "sha256:" + "0" * 64
    status, headers, body = await _get(
        http, f"{anonymous.url}/v2/nothing/here/blobs/{digest}", MIRROR)
    assert status == 404 and "Retry-After" not in headers, (status, body[:300])
    error = _error(body)
    assert error["code"] == "BLOB_UNKNOWN" and error["detail"]["upstream_status"] == 401

    assert await _events(anonymous, "/v2/nothing/here/manifests/v1") == [["refused"]]
    async with http.get(f"{anonymous.url}/metrics") as r:
        metrics = await r.text()
    registry = source.url.removeprefix("http://")
    assert 'ecr_gateway_pullthrough_events_total{event="refused",registry=' \
           '"registry.example.com"}' in metrics
    assert f'ecr_gateway_pullthrough_events_total{{event="refused",registry="{registry}"}}' \
        in metrics


async def test_a_routes_own_image_stays_pullable_when_the_upstream_answers_401(
        anonymous: GatewayProcess, http: aiohttp.ClientSession) -> None:
    """What clients push under a route is the route's own: the upstream's 401 for that name
    on the tag's re-check (Docker Hub does not have it) serves it from ECR, as a 404 does."""
    _digest, pushed = await OciClient(http, anonymous.url).push_image(
        "hub/team/own", "v1", [b"pushed by a client" * 500])
    status, _headers, body = await _get(http, f"{anonymous.url}/v2/hub/team/own/manifests/v1",
                                        {})
    assert (status, body) == (200, pushed), body[:300]


async def test_a_name_the_upstream_cannot_hold_is_not_found(
        anonymous: GatewayProcess, http: aiohttp.ClientSession) -> None:
    """A name the gateway's ECR holds (ex/ + 250 characters) but the upstream's cannot
    (source/ + 250 characters is past ECR's 256): the upstream answers 400 NAME_INVALID,
    the client hears 404 without Retry-After."""
    name = "public/" + "a" * 243
    status, headers, body = await _get(http, f"{anonymous.url}/v2/{name}/manifests/v1",
                                       MIRROR)
    assert status == 404, (status, body[:300])
    assert "Retry-After" not in headers
    error = _error(body)
    assert error["code"] == "NAME_UNKNOWN" and error["detail"]["upstream_status"] == 400


def _with_credentials(source: GatewayProcess, password: Path, user: str,
                      **settings: object) -> dict[str, Any]:
    return {"mirrors": {"registry.example.com": {
        "repository_prefix": f"as-{user}", "upstream": {
            "url": source.url, "username": user, "password_file": str(password),
            **settings}}}}


async def test_credentials_the_upstream_refuses_are_a_bad_gateway_not_a_retry(
        upstream: EmulatorProcess, source: GatewayProcess, http: aiohttp.ClientSession,
        tmp_path: Path) -> None:
    """The gateway's configured password is wrong: its token realm refuses it. Retrying
    will not fix that: 502 without Retry-After, and a log line for the operator naming the
    registry, never the password."""
    wrong = "not-the-password-93d1"
    password = tmp_path / "password"
    password.write_text(wrong + "\n")
    await _push(source, "team/held")
    with GatewayProcess(tmp_path / "gw", _with_credentials(source, password, PULLER),
                        upstream_url=upstream.url) as gw:
        status, headers, body = await _get(http, f"{gw.url}/v2/team/held/manifests/v1",
                                           MIRROR)
        assert status == 502, (status, body[:300])
        assert "Retry-After" not in headers
        error = _error(body)
        assert error["code"] == "UNAVAILABLE", error
        assert error["detail"]["upstream_status"] == 401
        assert "refuses the gateway's credentials" in error["message"], error
        assert wrong.encode() not in body
        warning = "pull-through registry.example.com: the upstream refuses the configured"
        assert await gw.logged(warning)
        for _ in range(3):  # said once a minute, not on every request
            assert (await _get(http, f"{gw.url}/v2/team/held/manifests/v1", MIRROR))[0] == 502
        await asyncio.sleep(0.3)  # the log arrives through a pipe
        assert sum(warning in line for line in gw.log_lines) == 1
        assert not any(wrong in line for line in gw.log_lines)
        assert await _events(gw, "/v2/team/held/manifests/v1") == [["credentials_refused"]] * 4
        async with http.get(f"{gw.url}/metrics") as r:
            metrics = await r.text()
        assert 'event="credentials_refused",registry="registry.example.com"' in metrics


async def test_an_image_ecr_holds_survives_its_upstream_refusing_the_recheck(
        upstream: EmulatorProcess, source: GatewayProcess, http: aiohttp.ClientSession,
        tmp_path: Path) -> None:
    """The upstream's password for the gateway's user changes under it: every re-check of
    the tag is refused from then on. Only a 404 says a tag is gone; ECR's copy is served
    (stale), and the operator is told."""
    password = tmp_path / "password"
    password.write_text(ROTATING_PASSWORD + "\n")
    _digest, manifest = await _push(source, "team/app")
    config = _with_credentials(source, password, ROTATING, tag_ttl_seconds=0)
    with GatewayProcess(tmp_path / "gw", config, upstream_url=upstream.url) as gw:
        url = f"{gw.url}/v2/team/app/manifests/v1"
        status, _headers, body = await _get(http, url, MIRROR)
        assert (status, body) == (200, manifest), body[:300]
        assert await gw.logged("team/app:v1: stored in ECR")

        _htpasswd(Path(source.config["auth"]["htpasswd_file"]), "changed-elsewhere")
        status, _headers, body = await _get(http, url, MIRROR)
        assert (status, body) == (200, manifest), body[:300]
        assert await _events(gw, "/v2/team/app/manifests/v1", 2) == [["fetched"], ["stale"]]
        assert await gw.logged("pull-through registry.example.com: the upstream refuses "
                                 "the configured username and password_file")
        assert not any(ROTATING_PASSWORD in line for line in gw.log_lines)


async def test_sync_says_which_refusal_it_met(upstream: EmulatorProcess,
                                              source: GatewayProcess, tmp_path: Path) -> None:
    """``ecr-gateway sync``: a name the source does not give is not there (or needs
    credentials), a wrong password is the credentials'; neither is "try again later"."""
    await _push(source, "team/synced")
    password = tmp_path / "password"
    password.write_text("not-the-password-93d1\n")
    images = tmp_path / "images.yaml"
    images.write_text(yaml.safe_dump({"images": [
        {"source": f"{source.url}/nothing/here", "destination": "synced/none"},
        {"source": f"{source.url}/team/synced", "destination": "synced/refused",
         "username": PULLER, "password_file": str(password)}]}))
    result = subprocess.run([sys.executable, "-m", "gateway.cli", "sync", "--config",
                             str(sync_config(upstream, tmp_path)), "--file", str(images)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    host = source.url.removeprefix("http://")
    assert (f"ecr-gateway sync: synced/none (from nothing/here): cannot list the source: "
            f"{host} does not hold the tags of nothing/here, or it needs credentials "
            "(401)") in lines, lines
    assert (f"ecr-gateway sync: synced/refused (from team/synced): cannot list the "
            f"source: {host} refuses the credentials given (401) for a token for "
            "repository:team/synced:pull") in lines, lines
    assert "try again" not in result.stderr
