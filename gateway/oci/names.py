"""Repository names and tags: the spec's grammar and limits, checked before any upstream call."""

from __future__ import annotations

import re

from gateway.oci.errors import NAME_INVALID, TAG_INVALID, OciError

# distribution-spec "Pulling manifests": <name> and <tag> grammars.
_NAME = re.compile(
    r"^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$"
)
_TAG = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$")
# The spec's hostname+name limit; a backend may hold longer names, none holds more.
MAX_NAME_LENGTH = 255


def check_name(name: str) -> str:
    if not name or len(name) > MAX_NAME_LENGTH or not _NAME.match(name):
        raise OciError(NAME_INVALID, {"name": name[:300]}, message="invalid repository name")
    return name


def check_tag(tag: str) -> str:
    if not _TAG.match(tag):
        raise OciError(TAG_INVALID, {"tag": tag[:300]}, message="invalid tag")
    return tag


def is_tag(text: str) -> bool:
    return bool(_TAG.match(text))
