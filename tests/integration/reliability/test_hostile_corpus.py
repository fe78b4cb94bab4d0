"""The hostile corpus (hostile_corpus.yaml): named malicious or malformed requests sent as raw
bytes on the wire, each with the status and OCI error code it must get. Authentication is on
(htpasswd); requests carry a valid Basic credential unless the entry says otherwise.

For every refusal (4xx) the test also checks that nothing changed: no ECR call that changes
state succeeded, and an upload the request addressed still stands where it stood. At the
end, the gateway's and the emulator's logs hold no traceback, no password, no credential.

Entry fields: ``name``; ``method`` + ``path`` [+ ``headers`` (list of [name, value]),
``body`` | ``body_b64`` | ``body_repeat`` {prefix, text, times, suffix}] or ``raw`` (the
whole request); ``auth``: basic (default), none, or a literal Authorization value;
``expect``: {status: int or list, code: OCI code or null (no OCI body expected),
headers: [names that must be present]}; ``upstream_decides``: true when only ECR's answer
can decide the refusal (a digest mismatch, known once the bytes were uploaded; an image only
ECR knows is absent), so the no-state-change check does not apply. Placeholders: {repo} {tag}
{manifest_digest} {layer} {config} {staged} {missing} {upload} (a fresh upload of
{repo}) {other_upload_id} (the id of one of another repository) {host} {auth} {pad:N}.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import yaml

from tests.integration.reliability.helpers import (
    MUTATING,
    digest_of,
    http_request,
    image_manifest,
    log_text,
    send_raw,
)
from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess

CORPUS = yaml.safe_load((Path(__file__).parent / "hostile_corpus.yaml").read_text())
USER, PASSWORD = "corpus", "c0rpus-Secret-pw!"
CREDENTIAL = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
REPO = "corpus/base"
_PAD = re.compile(r"\{pad:(\d+)\}")


@dataclass
class Fixture:
    gateway: GatewayProcess
    emulator: EmulatorProcess
    values: dict[str, str]


def write_htpasswd(path: Path, users: dict[str, str]) -> Path:
    """An htpasswd file as ``htpasswd -B`` writes it, at a test-friendly bcrypt cost."""
    lines = [f"{name}:$2y${bcrypt.hashpw(pw.encode(), bcrypt.gensalt(4)).decode()[4:]}"
             for name, pw in users.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def corpus_gateway(upstream: EmulatorProcess,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    users = write_htpasswd(tmp_path_factory.mktemp("users") / "htpasswd", {USER: PASSWORD})
    auth = {"mode": "htpasswd", "htpasswd_file": str(users),
            "rules": [{"repository": "**", "users": [USER],
                       "actions": ["pull", "push", "delete", "catalog"]}],
            "rate_limit": {"max_failures_per_user": 1000, "max_failures_per_address": 1000}}
    with GatewayProcess(tmp_path_factory.mktemp("gw"), {"auth": auth, "log_level": "debug"},
                        upstream_url=upstream.url) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def fixture(corpus_gateway: GatewayProcess, upstream: EmulatorProcess) -> Fixture:
    """An image to aim at: {repo}:{tag} with one layer, and a blob uploaded but not yet
    referenced by any image ({staged}, served from the staging store)."""
    gateway = corpus_gateway
    layer, config, staged = os.urandom(1000), b'{"architecture":"amd64","os":"linux"}', \
        os.urandom(4000)
    for blob in (layer, config, staged):
        _send(gateway, "POST", f"/v2/{REPO}/blobs/uploads/?digest={digest_of(blob)}", blob,
              201)
    manifest = image_manifest(config, [layer])
    _send(gateway, "PUT", f"/v2/{REPO}/manifests/v1", manifest, 201,
          "application/vnd.oci.image.manifest.v1+json")
    return Fixture(gateway, upstream, {
        "repo": REPO, "tag": "v1", "manifest_digest": digest_of(manifest),
        "layer": digest_of(layer), "config": digest_of(config), "staged": digest_of(staged),
        "missing": digest_of(b"never uploaded anywhere"), "host": gateway.host,
        "auth": f"Basic {CREDENTIAL}"})


def _send(gateway: GatewayProcess, method: str, path: str, body: bytes, status: int,
          content_type: str = "application/octet-stream") -> None:
    request = urllib.request.Request(f"{gateway.url}{path}", data=body, method=method,
                                     headers={"Authorization": f"Basic {CREDENTIAL}",
                                              "Content-Type": content_type})
    with urllib.request.urlopen(request, timeout=20) as answer:
        assert answer.status == status


def _fill(text: str, values: dict[str, str]) -> str:
    text = _PAD.sub(lambda m: "a" * int(m[1]), text)
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    return text


def _body(entry: dict[str, Any], values: dict[str, str]) -> bytes:
    if "body_b64" in entry:
        return base64.b64decode(entry["body_b64"])
    if "body_repeat" in entry:
        spec = entry["body_repeat"]
        return (_fill(spec.get("prefix", ""), values) + spec["text"] * spec["times"]
                + _fill(spec.get("suffix", ""), values)).encode()
    body = entry.get("body", "")
    if isinstance(body, (dict, list)):
        return _fill(json.dumps(body), values).encode()
    return _fill(str(body), values).encode("utf-8", "surrogateescape")


def _wire(entry: dict[str, Any], values: dict[str, str]) -> bytes:
    if "raw" in entry:
        return _fill(entry["raw"], values).encode("utf-8", "surrogateescape")
    headers = [(k, _fill(str(v), values)) for k, v in entry.get("headers", [])]
    auth = entry.get("auth", "basic")
    if auth == "basic":
        headers.append(("Authorization", values["auth"]))
    elif auth != "none":
        headers.append(("Authorization", _fill(auth, values)))
    return http_request(entry["method"], _fill(entry["path"], values), values["host"], headers,
                        _body(entry, values))


async def _open_upload(fixture: Fixture, name: str) -> str:
    reply = await send_raw(fixture.gateway.host, http_request(
        "POST", f"/v2/{name}/blobs/uploads/", fixture.gateway.host,
        [("Authorization", fixture.values["auth"])]))
    assert reply is not None and reply.status == 202
    location = reply.header("Location")
    assert location
    return location


async def _upload_range(fixture: Fixture, location: str) -> str | None:
    reply = await send_raw(fixture.gateway.host, http_request(
        "GET", location, fixture.gateway.host, [("Authorization", fixture.values["auth"])]))
    assert reply is not None
    return reply.header("Range") if reply.status == 204 else f"status {reply.status}"


def test_the_corpus_is_big_and_well_named() -> None:
    names = [entry["name"] for entry in CORPUS]
    assert len(names) >= 150
    assert len(set(names)) == len(names), "names must be unique"
    for entry in CORPUS:
        assert "expect" in entry and "status" in entry["expect"], entry["name"]


@pytest.mark.parametrize("entry", CORPUS, ids=[entry["name"] for entry in CORPUS])
async def test_hostile_request(entry: dict[str, Any], fixture: Fixture) -> None:
    values = dict(fixture.values)
    text = json.dumps(entry)
    if "{upload}" in text:
        values["upload"] = await _open_upload(fixture, REPO)
    if "{other_upload_id}" in text:
        values["other_upload_id"] = (await _open_upload(fixture, "corpus/other")).rsplit("/", 1)[1]
    fixture.emulator.clear_requests()
    head = entry.get("method") == "HEAD" or entry.get("raw", "").startswith("HEAD ")
    reply = await send_raw(fixture.gateway.host, _wire(entry, values), head=head)
    expect = entry["expect"]
    statuses = expect["status"] if isinstance(expect["status"], list) else [expect["status"]]
    assert reply is not None, "closed without an answer"
    detail = f"{reply.status} {reply.body[:300]!r}"
    assert reply.status in statuses, detail
    # A client's mistake is the client's: never a 5xx, 503 UNAVAILABLE included.
    assert reply.status < 500, detail
    if reply.status >= 400 and not head:
        # Every refusal is OCI JSON, even one aiohttp's HTTP parser makes before routing.
        assert (reply.header("Content-Type") or "").startswith("application/json"), detail
        body = json.loads(reply.body)["errors"][0]
        assert set(body) == {"code", "message", "detail"}, detail
    if expect.get("code"):
        assert reply.error_code() == expect["code"], detail
    for name in expect.get("headers", []):
        assert reply.header(name), f"{name} missing: {reply.headers}"
    if reply.status >= 400 and not entry.get("upstream_decides"):
        await asyncio.sleep(0)
        changed = [e for e in fixture.emulator.requests()
                   if e["action"] in MUTATING and e["outcome"] == "ok"]
        assert not changed, f"a refused request changed upstream state: {changed}"
        if "upload" in values:
            assert await _upload_range(fixture, values["upload"]) == "0-0", \
                "a refused request changed the upload"


async def test_logs_hold_no_secret_and_no_traceback(fixture: Fixture) -> None:
    """Runs after the corpus (same module): every request above carried credentials, some
    of them bad; none of it may reach a log, and nothing may have crashed."""
    await asyncio.sleep(0.5)  # the last lines arrive through a pipe
    text = log_text(fixture.gateway, fixture.emulator)
    assert " gateway.access " in text  # the log is being read at all
    assert "Traceback" not in text
    for secret in (PASSWORD, CREDENTIAL, "gateway-test-secret"):
        assert secret not in text
    assert not re.search(r"(?i)authorization[\"']?\s*[:=]\s*[\"']?(basic|bearer)\s+[A-Za-z0-9]",
                         text)
