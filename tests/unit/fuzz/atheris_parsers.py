"""Coverage-guided fuzzing (atheris, libFuzzer) of the request parsers.

    python -m tests.unit.fuzz.atheris_parsers [CORPUS_DIR] -runs=100000 -max_len=4096

The first byte of an input picks the parser, the rest is its input. Any exception other
than OciError is a crash that libFuzzer reports with the input that caused it.
test_atheris.py runs it for a bounded number of inputs from a small seed corpus
(``seeds()``: valid manifests, paths, digests and ranges, which the fuzzer then mutates).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable

import aiohttp.web  # noqa: F401  (imported first so that only the gateway is instrumented)
import atheris

with atheris.instrument_imports(include=["gateway"]):
    from gateway.oci import routes
    from gateway.oci.digests import parse_digest
    from gateway.oci.errors import OciError
    from gateway.oci.mediatypes import parse_manifest
    from gateway.oci.names import check_name, check_tag
    from gateway.oci.ranges import (
        parse_content_length,
        parse_content_range,
        parse_file_range,
        parse_read_range,
    )

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"

PARSERS: list[Callable[[bytes], object]] = [
    lambda b: parse_manifest(b, OCI_MANIFEST),
    lambda b: parse_manifest(b, OCI_INDEX),
    lambda b: parse_manifest(b, None),
    lambda b: check_name(b.decode("utf-8", "surrogateescape")),
    lambda b: check_tag(b.decode("utf-8", "surrogateescape")),
    lambda b: parse_digest(b.decode("utf-8", "surrogateescape")),
    lambda b: parse_content_range(b.decode("latin-1")),
    lambda b: parse_content_length(b.decode("latin-1")),
    lambda b: parse_read_range(b.decode("latin-1"), 1000),
    lambda b: parse_file_range(b.decode("latin-1"), 1000),
    lambda b: routes.match(b.decode("utf-8", "surrogateescape"), "GET"),
    lambda b: routes.match(b.decode("utf-8", "surrogateescape"), "PUT"),
]


def one_input(data: bytes) -> None:
    if not data:
        return
    try:
        PARSERS[data[0] % len(PARSERS)](data[1:])
    except OciError:
        pass


def seeds() -> list[bytes]:
    digest = "sha256:" + "a" * 64
    layer = {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest,
             "size": 10, "annotations": {"a": "b"}}
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {
        "mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest, "size": 2},
        "layers": [layer], "subject": layer, "artifactType": "application/x.y"}
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [layer]}
    texts = [json.dumps(manifest), json.dumps(index), json.dumps(manifest), "team/app-1",
             "v1.0", digest, "0-1023", "1024", "bytes=0-99", "bytes=-5",
             f"/v2/team/app/manifests/{digest}", "/v2/team/app/blobs/uploads/abc"]
    return [bytes([i]) + text.encode() for i, text in enumerate(texts)]


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
