"""Digests: parsing against the spec's grammar, and streaming hashers."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from gateway.oci.errors import DIGEST_INVALID, OciError

# distribution-spec "Digests": algorithm ":" encoded, with the registered algorithms' lengths.
# Matched whole: "$" would also take a trailing newline, and a query's ?digest= can end in one.
_GRAMMAR = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")
_HEX_LENGTH = {"sha256": 64, "sha512": 128}
_HEX = re.compile(r"[a-f0-9]+")

EMPTY_SHA256 = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


@dataclass(frozen=True)
class Digest:
    algorithm: str
    hex: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"


def parse_digest(text: str) -> Digest:
    """Parse a digest, refusing unknown algorithms and wrong lengths with DIGEST_INVALID."""
    if len(text) > 256 or not _GRAMMAR.fullmatch(text):
        raise OciError(DIGEST_INVALID, {"digest": text[:300]}, message="invalid digest format")
    algorithm, _, encoded = text.partition(":")
    expected = _HEX_LENGTH.get(algorithm)
    if expected is None:
        raise OciError(DIGEST_INVALID, {"digest": text},
                       message=f"unsupported algorithm {algorithm}")
    if len(encoded) != expected or not _HEX.fullmatch(encoded):
        raise OciError(DIGEST_INVALID, {"digest": text}, message="digest has a malformed hex part")
    return Digest(algorithm, encoded)


def is_digest(text: str) -> bool:
    return ":" in text


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def content_digest(algorithm: str, data: bytes) -> str:
    """``data``'s digest with one of the registered algorithms."""
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"
