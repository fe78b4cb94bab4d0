"""Input the grammar refuses is refused by the gateway, before any upstream call, as the OCI
error of the operation; and nothing of it stays behind: an upload session it named stands
where it stood, a manifest it carried is not stored.

Each case here was once taken: digits of other scripts in a Content-Range (``int()`` reads
them), and a digest or media type ending in a newline (``$`` matches before one), which a
query (``?digest=…%0A``) or a manifest's JSON (``"\\n"``) can carry. Such a digest went to ECR
with the upload's bytes, and such a media type was stored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from tests.support.emulator import EmulatorProcess
from tests.support.gateway import GatewayProcess
from tests.support.oci import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, OciClient, digest_of

BLOB = b"one blob of the hostile input tests"
DIGEST = digest_of(BLOB)
# sha256: and 63 hex digits, then a newline: 64 characters after the colon.
NEWLINE_DIGEST = DIGEST[:-1] + "\n"
CONFIG = b"{}"


@dataclass(frozen=True)
class Case:
    id: str
    method: str
    path: str  # {repo} and {upload} (the open upload session's path) are filled in
    status: int
    code: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    params: dict[str, str] = field(default_factory=dict)


def _manifest(**changes: Any) -> bytes:
    doc: dict[str, Any] = {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": digest_of(CONFIG), "size": len(CONFIG)},
        "layers": [{"mediaType": OCI_LAYER, "digest": DIGEST, "size": len(BLOB)}]}
    for where, value in changes.items():
        if "." in where:
            outer, inner = where.split(".")
            doc[outer] = {**doc[outer], inner: value}
        else:
            doc[where] = value
    return json.dumps(doc).encode()


MANIFEST = {"Content-Type": OCI_MANIFEST}
CASES = [
    Case("content-range-arabic-indic-digits", "PATCH", "{upload}", 416, "BLOB_UPLOAD_INVALID",
         {"Content-Range": "\u0660-\u0660"}, BLOB[:1]),
    Case("content-range-fullwidth-digits", "PATCH", "{upload}", 416, "BLOB_UPLOAD_INVALID",
         {"Content-Range": "\uff10-\uff10"}, BLOB[:1]),
    Case("put-digest-ending-in-newline", "PUT", "{upload}", 400, "DIGEST_INVALID",
         body=BLOB, params={"digest": NEWLINE_DIGEST}),
    Case("monolithic-digest-ending-in-newline", "POST", "/v2/{repo}/blobs/uploads/", 400,
         "DIGEST_INVALID", body=BLOB, params={"digest": NEWLINE_DIGEST}),
    Case("mount-digest-ending-in-newline", "POST", "/v2/{repo}/blobs/uploads/", 400,
         "DIGEST_INVALID", params={"mount": NEWLINE_DIGEST, "from": "{repo}"}),
    Case("descriptor-digest-ending-in-newline", "PUT", "/v2/{repo}/manifests/hostile", 400,
         "MANIFEST_INVALID", MANIFEST, _manifest(**{"config.digest": DIGEST[:-1] + "\n"})),
    Case("subject-digest-ending-in-newline", "PUT", "/v2/{repo}/manifests/hostile", 400,
         "MANIFEST_INVALID", MANIFEST, _manifest(subject={
             "mediaType": OCI_MANIFEST, "digest": NEWLINE_DIGEST, "size": 2})),
    Case("descriptor-media-type-ending-in-newline", "PUT", "/v2/{repo}/manifests/hostile",
         400, "MANIFEST_INVALID", MANIFEST, _manifest(**{"config.mediaType": OCI_CONFIG + "\n"})),
    Case("artifact-type-ending-in-newline", "PUT", "/v2/{repo}/manifests/hostile", 400,
         "MANIFEST_INVALID", MANIFEST, _manifest(artifactType="application/x-sig\n")),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
async def test_hostile_input_is_a_4xx_before_any_upstream_call(
        case: Case, gateway: GatewayProcess, upstream: EmulatorProcess, repo: str,
        session: aiohttp.ClientSession) -> None:
    client = OciClient(session, gateway.url)
    await client.push_blob(repo, CONFIG)
    await client.push_blob(repo, BLOB)
    upload = await client.start(repo)
    upstream.clear_requests()
    path = case.path.format(repo=repo, upload=upload)
    params = {key: value.format(repo=repo) for key, value in case.params.items()}
    async with session.request(case.method, client.url(path), params=params, data=case.body,
                               headers=case.headers, allow_redirects=False) as r:
        status, body = r.status, await r.read()
    assert status == case.status, (status, body[:300])
    error = json.loads(body)["errors"][0]
    assert error["code"] == case.code, error
    assert [e["action"] for e in upstream.requests()] == []

    # Nothing of it stayed: the session takes the blob from its start, no manifest is stored.
    async with session.patch(client.url(upload), data=BLOB,
                             headers={"Content-Range": f"0-{len(BLOB) - 1}"}) as r:
        assert r.status == 202, await r.text()
        location = r.headers["Location"]
    async with session.put(client.url(location), params={"digest": DIGEST}) as r:
        assert r.status == 201, await r.text()
    async with session.get(client.url(f"/v2/{repo}/manifests/hostile")) as r:
        assert r.status == 404



@pytest.mark.parametrize("content_type", [None, OCI_MANIFEST])
async def test_an_error_does_not_repeat_a_huge_media_type(
        content_type: str | None, gateway: GatewayProcess, repo: str,
        session: aiohttp.ClientSession) -> None:
    """A manifest's mediaType of 4 MiB (unknown, or unlike the Content-Type) once came back
    twice in the error: 8 MiB an answer."""
    body = json.dumps({"schemaVersion": 2,
                       "mediaType": "application/" + "x" * (4 * 1024 * 1024 - 100)}).encode()
    headers = {"Content-Type": content_type} if content_type else {}
    async with session.put(f"{gateway.url}/v2/{repo}/manifests/hostile", data=body,
                           headers=headers, skip_auto_headers=["Content-Type"]) as r:
        status, answer = r.status, await r.read()
    assert status == 400
    assert json.loads(answer)["errors"][0]["code"] == "MANIFEST_INVALID"
    assert len(answer) < 4096, len(answer)
