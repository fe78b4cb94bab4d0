"""Small HTTP helpers for end-to-end tests: raw reads from the registry."""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request

MANIFEST_ACCEPT = ", ".join([
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
])


def http_get(url: str, headers: dict[str, str] | None = None,
             timeout: float = 30) -> tuple[int, dict[str, str], bytes]:
    """A GET (redirects followed): status, headers, body; error statuses are returned."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def get_manifest(registry_url: str, name: str, reference: str) -> tuple[str, str, bytes]:
    """A manifest straight from the registry: (Content-Type, Docker-Content-Digest, body)."""
    status, headers, body = http_get(f"{registry_url}/v2/{name}/manifests/{reference}",
                                     {"Accept": MANIFEST_ACCEPT})
    assert status == 200, (status, body[:500])
    return headers.get("Content-Type", ""), headers.get("Docker-Content-Digest", ""), body


def get_tags(registry_url: str, name: str) -> list[str]:
    status, _, body = http_get(f"{registry_url}/v2/{name}/tags/list")
    assert status == 200, (status, body[:500])
    tags: list[str] = json.loads(body)["tags"]
    return tags


def expected_parts(sizes: list[int], part_size: int) -> int:
    """How many UploadLayerPart calls blobs of these sizes take with ``part_size`` parts."""
    return sum(max(1, math.ceil(size / part_size)) for size in sizes)
