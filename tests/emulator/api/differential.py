"""What the moto differential tests share (emulator/ and emulator_extra/
test_moto_differential.py): the moto server, the list of known differences with the
reference sentence that decides each, and the check that every observed difference is
listed."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import botocore.session
from moto.server import ThreadedMotoServer


@dataclass(frozen=True)
class Known:
    paths: frozenset[str]
    moto: str   # what moto does
    where: str  # "Shape.member", "Shape" or an operation whose documentation decides
    quote: str  # the deciding sentence, verbatim from that documentation


def known(paths: set[str], moto: str, where: str, quote: str) -> Known:
    return Known(frozenset(paths), moto, where, quote)


@contextmanager
def moto_server() -> Iterator[str]:
    """A moto server on 127.0.0.1 for the block; yields its URL."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def model_documentation(where: str) -> str:
    """The documentation of a member ("Shape.member"), an operation or a shape of botocore's
    ECR model, as plain text (tags dropped, white space folded)."""
    model = botocore.session.get_session().get_service_model("ecr")
    owner, _, member = where.partition(".")
    if member:
        doc = model.shape_for(owner).members[member].documentation
    elif owner in model.operation_names:
        doc = model.operation_model(owner).documentation
    else:
        doc = model.shape_for(owner).documentation
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", doc))


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        items: Iterator[tuple[str, Any]] = iter(value.items())
    elif isinstance(value, list):
        items = ((str(i), v) for i, v in enumerate(value))
    else:
        return {prefix: value}
    flat: dict[str, Any] = {}
    for key, item in items:
        flat.update(flatten(item, f"{prefix}.{key}" if prefix else key))
    return flat


def differing_paths(left: Any, right: Any) -> set[str]:
    a, b = flatten(left), flatten(right)
    return {path for path in a.keys() | b.keys() if a.get(path, "<absent>") != b.get(
        path, "<absent>")}


def assert_explained(moto_seen: dict[str, Any], emulator_seen: dict[str, Any],
                     expected: dict[str, frozenset[str]]) -> None:
    """Each step's differing paths are exactly the ones ``expected`` lists for it."""
    unexplained = {}
    for step in emulator_seen:
        paths = differing_paths(moto_seen[step], emulator_seen[step])
        wanted = expected.get(step, frozenset())
        if paths != wanted:
            unexplained[step] = {"paths": sorted(paths ^ wanted), "moto": moto_seen[step],
                                 "emulator": emulator_seen[step]}
    assert not unexplained, json.dumps(unexplained, indent=1, default=str)
