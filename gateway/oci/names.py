"""Repository names and tags: the spec's grammar and limits, checked before any upstream call."""

from __future__ import annotations

import re

from gateway.oci.errors import NAME_INVALID, TAG_INVALID, OciError

# distribution-spec "Pulling manifests": <name> and <tag> grammars (matched whole: "$" alone
# would also take a trailing newline).
_NAME = re.compile(
    r"^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$"
)
_TAG = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$")
# The spec's hostname+name limit; a backend may hold longer names, none holds more.
MAX_NAME_LENGTH = 255


def check_name(name: str) -> str:
    if not is_name(name):
        raise OciError(NAME_INVALID, {"name": name[:300]}, message="invalid repository name")
    return name


def is_name(text: str) -> bool:
    return 0 < len(text) <= MAX_NAME_LENGTH and bool(_NAME.fullmatch(text))


def check_tag(tag: str) -> str:
    if not _TAG.fullmatch(tag):
        raise OciError(TAG_INVALID, {"tag": tag[:300]}, message="invalid tag")
    return tag


def is_tag(text: str) -> bool:
    return bool(_TAG.fullmatch(text))
