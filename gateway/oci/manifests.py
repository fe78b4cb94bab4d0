"""Manifests: GET/HEAD by tag or digest, PUT by tag or digest, DELETE by digest or tag."""

from __future__ import annotations

import contextlib

from aiohttp import web

from gateway.oci.backend import Manifest
from gateway.oci.context import capabilities, check_stored_algorithm, registry, request_context
from gateway.oci.digests import content_digest, is_digest, parse_digest
from gateway.oci.errors import (
    DIGEST_INVALID,
    MANIFEST_INVALID,
    MANIFEST_UNKNOWN,
    TOO_LARGE,
    OciError,
)
from gateway.oci.limits import MANIFEST_BODY_TIMEOUT, body_chunks, limits_of
from gateway.oci.mediatypes import ParsedManifest, accepted_manifest_types, parse_manifest
from gateway.oci.names import check_tag, is_tag
from gateway.oci.offload import off_loop


def check_reference(reference: str) -> str:
    if is_digest(reference):
        parse_digest(reference)
    else:
        check_tag(reference)
    return reference


def _headers(manifest: Manifest) -> dict[str, str]:
    return {"Content-Type": manifest.media_type, "Docker-Content-Digest": manifest.digest,
            "Content-Length": str(len(manifest.body)), "ETag": f'"{manifest.digest}"'}


async def _fetch(request: web.Request, name: str, reference: str) -> Manifest:
    if not is_digest(reference) and not is_tag(reference):
        # Nothing can be stored under such a reference; the conformance suite expects 404.
        raise OciError(MANIFEST_UNKNOWN, {"reference": reference[:300]})
    check_reference(reference)
    accepted = accepted_manifest_types(request.headers.getall("Accept", []))
    return await registry(request).get_manifest(request_context(request), reference, accepted)


async def head_manifest(request: web.Request, name: str, reference: str) -> web.StreamResponse:
    manifest = await _fetch(request, name, reference)
    return web.Response(status=200, headers=_headers(manifest))


async def get_manifest(request: web.Request, name: str, reference: str) -> web.StreamResponse:
    manifest = await _fetch(request, name, reference)
    response = web.Response(status=200, body=manifest.body, headers=_headers(manifest))
    # Content-Type carries the manifest's own media type, not aiohttp's default.
    response.content_type = manifest.media_type
    return response


async def _read_limited(request: web.Request) -> bytes:
    limit = min(limits_of(request).max_manifest_bytes, capabilities(request).max_manifest_bytes)
    declared = request.content_length
    if declared is not None and declared > limit:
        raise OciError(TOO_LARGE, {"limit": limit},
                       message="manifest larger than the registry accepts")
    body = bytearray()
    async with contextlib.aclosing(body_chunks(request,
                                               timeout_error=MANIFEST_BODY_TIMEOUT)) as chunks:
        async for chunk in chunks:
            body += chunk
            if len(body) > limit:
                raise OciError(TOO_LARGE, {"limit": limit},
                               message="manifest larger than the registry accepts")
    return bytes(body)


def _checked(body: bytes, reference: str, content_type: str | None,
              max_bytes: int) -> tuple[ParsedManifest, str | None]:
    """The manifest checked for form, and its digest by the reference's algorithm (if one)."""
    parsed = parse_manifest(body, content_type, max_bytes)
    if not is_digest(reference):
        return parsed, None
    return parsed, content_digest(reference.partition(":")[0], body)


async def put_manifest(request: web.Request, name: str, reference: str) -> web.StreamResponse:
    check_reference(reference)
    body = await _read_limited(request)
    if not body:
        raise OciError(MANIFEST_INVALID, {"reason": "empty body"}, message="manifest is empty")
    parsed, digest = await off_loop(_checked, body, reference,
                                    request.headers.get("Content-Type"),
                                    capabilities(request).max_manifest_bytes)
    if digest is not None:
        check_stored_algorithm(request, reference)
        if reference != digest:
            raise OciError(DIGEST_INVALID, {"expected": reference, "computed": digest},
                           message="manifest digest does not match the reference")
    stored = await registry(request).put_manifest(request_context(request), reference, body, parsed)
    headers = {"Location": f"/v2/{name}/manifests/{stored}", "Docker-Content-Digest": stored,
               "Content-Length": "0"}
    if parsed.subject is not None:
        headers["OCI-Subject"] = parsed.subject.digest
    return web.Response(status=201, headers=headers)


async def delete_manifest(request: web.Request, name: str, reference: str) -> web.StreamResponse:
    check_reference(reference)
    await registry(request).delete_manifest(request_context(request), reference)
    return web.Response(status=202, headers={"Content-Length": "0"})
