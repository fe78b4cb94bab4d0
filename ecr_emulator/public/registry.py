"""The public registry endpoint: the OCI distribution pull API over the ECR Public registry.

public.ecr.aws serves pulls of public repositories as ``/v2/<alias>/<repository>/...``: ECR
Public's API has no BatchGetImage, GetDownloadUrlForLayer nor ListImages. This endpoint does
the same for the emulator's ECR Public registry, on the emulator's own port, read-only:

  GET /token                         bearer tokens (tokens.py; realm of the challenge)
  GET /v2/                           200 with a token, else 401 and the Bearer challenge
  GET|HEAD /v2/<name>/manifests/<r>  the manifest byte-exact (by tag or digest)
  GET|HEAD /v2/<name>/blobs/<digest> HEAD: size; GET: 307 to a presigned download URL
  GET /v2/<name>/tags/list           tags, lexically, with ``n``/``last`` and Link paging
  GET /v2/<name>/referrers/<digest>  an OCI index of the images whose subject it is
  anything else under /v2/           405 UNSUPPORTED

Every /v2/ request needs a token (``Authorization: Bearer``), anonymous or not, as on
public.ecr.aws; manifest reads are rate limited per token holder. Like ECR, only blobs an
image of the repository references are served. Errors are OCI error bodies.
"""

from __future__ import annotations

import base64
import time
from typing import Any
from urllib.parse import urlencode

import orjson
from aiohttp import web

from ecr_emulator import documents, downloads, image_store, store
from ecr_emulator.actions import auth
from ecr_emulator.errors import AwsError
from ecr_emulator.protocol import base_url
from ecr_emulator.public import tokens
from ecr_emulator.state import PUBLIC_STATE_KEY, STATE_KEY, EmulatorState
from ecr_emulator.validation import is_digest

SERVICE_NAME = "public.ecr.aws"
LAYER_ROUTE = "/_emulator/public/layers/{digest}"
LOGO_ROUTE = "/_emulator/public/logos/{name:.+}"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
LIMITS = web.AppKey("ecr_public_pull_limits", tokens.PullLimits)


def _error(status: int, code: str, message: str, detail: Any = None,
           headers: dict[str, str] | None = None) -> web.Response:
    body = {"errors": [{"code": code, "message": message, "detail": detail or {}}]}
    return web.Response(status=status, body=orjson.dumps(body), headers=headers,
                        content_type="application/json")


def _state(request: web.Request) -> EmulatorState:
    return request.app[PUBLIC_STATE_KEY]


def _challenge(request: web.Request) -> web.Response:
    realm = f"{base_url(request, _state(request).public_url)}/token"
    return _error(401, "UNAUTHORIZED", "authentication required",
                  headers={"WWW-Authenticate":
                           f'Bearer realm="{realm}",service="{SERVICE_NAME}",scope="aws"'})


def _grant(request: web.Request) -> tokens.Grant | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    return tokens.verify(_state(request).secret, token.strip())


async def token(request: web.Request) -> web.Response:
    state = _state(request)
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    now = time.time()
    if scheme.lower() == "basic":
        try:
            user, _, password = base64.b64decode(value.strip()).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            user, password = "", ""
        owner = await auth.verify_password(state, password) if user == "AWS" else None
        if owner is None:
            return _error(401, "UNAUTHORIZED", "the credentials are not an ECR Public "
                          "authorization token (user AWS, password from GetAuthorizationToken)")
        grant = tokens.Grant(tokens.AUTHENTICATED, owner.access_key_id or "",
                             min(owner.expires_at, now + tokens.LIFETIME))
    else:
        grant = tokens.Grant(tokens.ANONYMOUS, request.remote or "", now + tokens.LIFETIME)
    issued = tokens.issue(state.secret, grant)
    return web.json_response({
        "token": issued, "access_token": issued, "expires_in": int(grant.expires_at - now),
        "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))})


async def ping(request: web.Request) -> web.Response:
    if _grant(request) is None:
        return _challenge(request)
    return web.json_response({})


async def _repository(request: web.Request) -> str | web.Response:
    """The repository the path names, or the error response to give."""
    state = _state(request)
    name = request.match_info["name"]
    alias, _, repository = name.partition("/")
    if alias != state.settings.public_registry_alias or not repository:
        return _error(404, "NAME_UNKNOWN", "repository name not known to registry",
                      {"name": name})
    try:
        await state.db.read(store.get_repository, repository, state.account_id)
    except AwsError:
        return _error(404, "NAME_UNKNOWN", "repository name not known to registry",
                      {"name": name})
    return repository


async def _granted_repository(request: web.Request) -> str | web.Response:
    """For reads that need any valid token: the challenge without one, else as
    ``_repository``."""
    if _grant(request) is None:
        return _challenge(request)
    return await _repository(request)


async def manifest(request: web.Request) -> web.Response:
    grant = _grant(request)
    if grant is None:
        return _challenge(request)
    wait = request.app[LIMITS].take(grant)
    if wait:
        return _error(429, "TOOMANYREQUESTS", "pull rate limit exceeded",
                      {"kind": grant.kind}, {"Retry-After": str(max(1, round(wait)))})
    repository = await _repository(request)
    if isinstance(repository, web.Response):
        return repository
    state, reference = _state(request), request.match_info["reference"]

    def find(db: Any) -> tuple[image_store.Image, str] | None:
        image = (image_store.find_by_digest(db, repository, reference) if is_digest(reference)
                 else image_store.find_by_tag(db, repository, reference))
        return None if image is None else (image, image_store.manifest_of(db, image.id))

    found = await state.db.read(find)
    if found is None:
        return _error(404, "MANIFEST_UNKNOWN", "manifest unknown", {"reference": reference})
    image, text = found
    return web.Response(body=text.encode(), headers={
        "Content-Type": image.media_type, "Docker-Content-Digest": image.digest})


async def blob(request: web.Request) -> web.Response:
    repository = await _granted_repository(request)
    if isinstance(repository, web.Response):
        return repository
    state, digest = _state(request), request.match_info["digest"]
    layer = (await state.db.read(store.referenced_layer, repository, digest)
             if is_digest(digest) else None)
    if layer is None:
        return _error(404, "BLOB_UNKNOWN", "blob unknown to registry", {"digest": digest})
    headers = {"Docker-Content-Digest": digest, "Content-Type": "application/octet-stream"}
    if request.method == "HEAD":
        return web.Response(headers={**headers, "Content-Length": str(layer.size)})
    url = downloads.presign(base_url(request, state.public_url), state.secret, digest,
                            expires=state.settings.download_url_expires, route=LAYER_ROUTE)
    return web.Response(status=307, headers={**headers, "Location": url})


async def tags_list(request: web.Request) -> web.Response:
    repository = await _granted_repository(request)
    if isinstance(repository, web.Response):
        return repository
    state, name = _state(request), request.match_info["name"]
    rows = await state.db.read(lambda db: [r[0] for r in db.execute(
        "SELECT tag FROM image_tags WHERE repository = ? ORDER BY tag", (repository,))])
    last = request.query.get("last")
    if last:
        rows = [t for t in rows if t > last]
    headers = {}
    n = request.query.get("n")
    if n is not None:
        # ASCII digits only (str.isdigit takes "²", which int() refuses), and no more than an
        # int64 holds (int() refuses past 4300 digits): either was a 500.
        if not (n.isascii() and n.isdigit()) or len(n) > 18:
            return _error(400, "PAGINATION_NUMBER_INVALID", "invalid number of results "
                          "requested", {"n": n})
        if int(n) < len(rows):
            rows = rows[:int(n)]
            query = urlencode({"n": n, "last": rows[-1]}) if rows else urlencode({"n": n})
            headers["Link"] = f'</v2/{name}/tags/list?{query}>; rel="next"'
    return web.json_response({"name": name, "tags": rows}, headers=headers)


async def referrers(request: web.Request) -> web.Response:
    repository = await _granted_repository(request)
    if isinstance(repository, web.Response):
        return repository
    state, subject = _state(request), request.match_info["digest"]
    if not is_digest(subject):
        return _error(400, "DIGEST_INVALID", "provided digest did not match uploaded content",
                      {"digest": subject})
    wanted = request.query.get("artifactType")
    found = await state.db.read(image_store.referrers, repository, subject,
                                [wanted] if wanted else [], 0, 10_000)
    manifests = []
    for image in found:
        entry: dict[str, Any] = {"mediaType": image.media_type, "digest": image.digest,
                                 "size": image.manifest_size}
        if image.artifact_type:
            entry["artifactType"] = image.artifact_type
        if image.annotations:
            entry["annotations"] = image.annotations
        manifests.append(entry)
    headers = {"OCI-Filters-Applied": "artifactType"} if wanted else None
    return web.Response(body=orjson.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                                           "manifests": manifests}),
                        content_type=OCI_INDEX, headers=headers)


async def unsupported(request: web.Request) -> web.Response:
    return _error(405, "UNSUPPORTED", "the public registry endpoint is read-only: push with "
                  "the ECR Public API", {"method": request.method})


async def layer_download(request: web.Request) -> web.StreamResponse:
    return await downloads.serve_blob(request, _state(request))


async def logo(request: web.Request) -> web.Response:
    state = _state(request)
    stored = await state.db.read(documents.get, request.match_info["name"], documents.CATALOG)
    if not stored or not stored.get("logo"):
        return web.Response(status=404, text="no logo")
    data = base64.b64decode(stored["logo"])
    kind = "image/png" if data.startswith(b"\x89PNG") else "application/octet-stream"
    return web.Response(body=data, content_type=kind)


_KINDS = {manifest: "Manifest", blob: "Blob", tags_list: "TagList", referrers: "Referrers",
          ping: "Ping", token: "Token", unsupported: "Unsupported"}


async def log_request(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: the endpoint's requests and public layer downloads in the
    request log, as ``ecr-public:Registry<Kind>`` (with the token's kind and holder) and
    ``ecr-public:LayerDownload``."""
    entry: dict[str, Any] = {"ts": time.time(), "repository": None, "status": response.status,
                             "region": None, "access_key_id": None}
    if request.path.startswith(LAYER_ROUTE.partition("{")[0]):
        entry.update(action="ecr-public:LayerDownload", digest=request.match_info.get("digest"),
                     range=request.headers.get("Range"),
                     outcome="InvalidRange" if response.status == 416
                     else response.get("code", "ok"))
    else:
        kind = _KINDS.get(getattr(request.match_info.route, "handler", None))  # type: ignore
        if kind is None:
            return
        grant = _grant(request)
        name = request.match_info.get("name")
        entry.update(action=f"ecr-public:Registry{kind}", method=request.method,
                     path=request.path, outcome="ok" if response.status < 400 else
                     str(response.status), token=grant.kind if grant else None,
                     repository=name.partition("/")[2] if name else None)
        if grant is not None and grant.kind == tokens.AUTHENTICATED:
            entry["access_key_id"] = grant.subject
    request.app[STATE_KEY].request_log.record(entry)


def add_routes(app: web.Application, limits: tokens.PullLimits) -> None:
    app[LIMITS] = limits
    app.router.add_get("/token", token)
    app.router.add_get("/token/", token)
    app.router.add_get("/v2/", ping)
    app.router.add_get("/v2/{name:.+}/manifests/{reference}", manifest)
    app.router.add_get("/v2/{name:.+}/blobs/{digest}", blob)
    app.router.add_get("/v2/{name:.+}/tags/list", tags_list)
    app.router.add_get("/v2/{name:.+}/referrers/{digest}", referrers)
    app.router.add_route("*", "/v2/{tail:.*}", unsupported)
    app.router.add_get(LAYER_ROUTE, layer_download)
    app.router.add_get(LOGO_ROUTE, logo)
    app.on_response_prepare.append(log_request)
