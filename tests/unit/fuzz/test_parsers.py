"""Property-based fuzzing of every parser a request goes through before any upstream call:
whatever the input, the answer is a value that respects the grammar or an OciError with the
spec's code; never another exception (which would be a 500 and a traceback).

Examples per test: 300, or 3000 with ``--long`` / RELIABILITY_LONG=1.
"""

from __future__ import annotations

import json
import re

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ecr_emulator.faults import Faults
from gateway.oci import listings, routes
from gateway.oci.context import SETTINGS, OciSettings
from gateway.oci.digests import parse_digest
from gateway.oci.errors import OciError
from gateway.oci.mediatypes import MANIFEST_TYPES, parse_manifest
from gateway.oci.names import MAX_NAME_LENGTH, check_name, check_tag
from gateway.oci.ranges import (
    parse_content_length,
    parse_content_range,
    parse_file_range,
    parse_read_range,
)
from tests.unit.fuzz.strategies import (
    EXAMPLES,
    digest_like,
    json_values,
    manifest_doc,
    name_like,
    nasty_text,
)

fuzz = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
_NAME = re.compile(r"^[a-z0-9]+([._-]+[a-z0-9]+)*(/[a-z0-9]+([._-]+[a-z0-9]+)*)*$")


@fuzz
@given(name_like)
def test_names(name: str) -> None:
    try:
        check_name(name)
    except OciError as exc:
        assert exc.error.code == "NAME_INVALID" and exc.status == 400
        return
    assert len(name) <= MAX_NAME_LENGTH and _NAME.match(name) and name.isascii()
    assert ".." not in name and "%" not in name and "//" not in name


@fuzz
@given(st.one_of(nasty_text, st.text(max_size=200)))
def test_tags(tag: str) -> None:
    try:
        check_tag(tag)
    except OciError as exc:
        assert exc.error.code == "TAG_INVALID"
        return
    assert 1 <= len(tag) <= 128 and tag.isascii() and tag[0] not in ".-"


@fuzz
@given(digest_like)
def test_digests(text: str) -> None:
    try:
        digest = parse_digest(text)
    except OciError as exc:
        assert exc.error.code == "DIGEST_INVALID" and exc.status == 400
        return
    assert str(digest) == text
    assert digest.algorithm in ("sha256", "sha512")
    assert re.fullmatch(r"[0-9a-f]+", digest.hex)


@fuzz
@given(st.one_of(nasty_text, st.from_regex(r"(bytes )?-?\d{0,22}-?-\d{0,22}", fullmatch=True)))
def test_content_range(value: str) -> None:
    try:
        start, end = parse_content_range(value)
    except OciError as exc:
        assert exc.status == 416
        return
    assert 0 <= start <= end


@fuzz
@given(st.one_of(nasty_text, st.from_regex(r"-?\d{0,25}", fullmatch=True)))
def test_content_length(value: str) -> None:
    try:
        length = parse_content_length(value)
    except OciError as exc:
        assert exc.status == 400
        return
    assert length is not None and length >= 0


@fuzz
@given(st.one_of(nasty_text, st.from_regex(r"(bytes|BYTES|items)=\d{0,25}-\d{0,25}(,\d-\d)?",
                                           fullmatch=True)),
       st.integers(min_value=0, max_value=2**40))
def test_read_ranges(value: str, size: int) -> None:
    for parse in (parse_read_range, parse_file_range):
        try:
            answer = parse(value, size)
        except OciError as exc:
            assert exc.status == 416 and exc.headers["Content-Range"] == f"bytes */{size}"
            continue
        if answer is not None:
            start, end = answer
            assert 0 <= start <= end < size


def _check_manifest(body: bytes, content_type: str | None) -> None:
    try:
        parsed = parse_manifest(body, content_type)
    except OciError as exc:
        assert exc.error.code == "MANIFEST_INVALID" and exc.status == 400
        return
    assert parsed.media_type in MANIFEST_TYPES
    for descriptor in [*parsed.blobs, *parsed.children]:
        parse_digest(descriptor.digest)
        assert 0 <= descriptor.size < 2**63
        assert "/" in descriptor.media_type


@fuzz
@given(manifest_doc, st.sampled_from([None, "application/vnd.oci.image.manifest.v1+json",
                                      "application/vnd.oci.image.index.v1+json", "text/plain",
                                      "application/vnd.docker.distribution.manifest.v2+json"]))
def test_manifest_documents(doc: dict[str, object], content_type: str | None) -> None:
    _check_manifest(json.dumps(doc).encode(), content_type)


@fuzz
@given(st.one_of(st.binary(max_size=300), json_values.map(lambda v: json.dumps(v).encode()),
                 st.integers(1, 50_000).map(lambda n: b"[" * n),
                 st.text(max_size=50).map(lambda t: t.encode("utf-16"))))
def test_manifest_bytes(body: bytes) -> None:
    _check_manifest(body, None)


_APP = web.Application()
_APP[SETTINGS] = OciSettings(max_page_size=50)


@fuzz
@given(st.dictionaries(st.sampled_from(["n", "last", "x"]), st.one_of(nasty_text,
                       st.from_regex(r"-?\d{0,12}", fullmatch=True)), max_size=3),
       st.lists(st.text(alphabet="abcv0123", min_size=1, max_size=4), max_size=80, unique=True))
def test_paging(query: dict[str, str], items: list[str]) -> None:
    from urllib.parse import urlencode

    request = make_mocked_request("GET", "/v2/x/tags/list?" + urlencode(query), app=_APP)
    items = sorted(items)
    try:
        page, _headers = listings._page(request, items, "/v2/x/tags/list")
    except OciError as exc:
        assert exc.error.code == "PAGINATION_NUMBER_INVALID"
        return
    assert len(page) <= 50 and all(item in items for item in page)
    assert page == sorted(page)


@fuzz
@given(st.one_of(nasty_text, st.builds("/v2/{}/{}".format, name_like, nasty_text)),
       st.sampled_from(["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "BREW"]))
def test_route_matching(path: str, method: str) -> None:
    try:
        route, _handler, _action, _params = routes.match(path, method)
    except OciError as exc:
        assert exc.status in (404, 405)
        return
    assert route.pattern.match(path)


@fuzz
@given(st.dictionaries(st.sampled_from(["action", "error", "rate", "count", "latency",
                                        "disconnect", "after", "seed", "status"]),
                       json_values, max_size=6))
def test_emulator_fault_rules(body: dict[str, object]) -> None:
    faults = Faults()
    try:
        faults.add_from_json(body)
    except (ValueError, TypeError):
        return
    for action in ("PutImage", "UploadLayerPart"):
        faults.plan(action)


@pytest.mark.parametrize("depth", [10, 1000, 100_000])
def test_deep_nesting_is_refused_not_crashed(depth: int) -> None:
    with pytest.raises(OciError) as refused:
        parse_manifest(b"[" * depth + b"]" * depth, None)
    assert refused.value.error.code == "MANIFEST_INVALID"
