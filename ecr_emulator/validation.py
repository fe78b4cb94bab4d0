"""Input validation: the constraints of botocore's ECR model, plus ECR's own grammars.

The model (the same one the clients are generated from) gives every member's type, length,
range, pattern and enum; checking against it keeps the emulator's limits equal to the API
reference's. botocore validates little of this client-side (required members and minimums),
so the server has to. Shape violations are InvalidParameterException, or ValidationException
for the newer operations that declare it (ListImageReferrers).

As AWS's JSON protocol reads a body into the action's input shape, an integer member takes
a 32-bit and a long member a 64-bit signed value (more is SerializationException), and
members the model does not declare are dropped at every level: the actions never see, store
or answer them back.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from typing import Any, cast

import botocore.session
from botocore.model import ListShape, MapShape, OperationModel, ServiceModel, Shape, StructureShape

from ecr_emulator import jsonbody
from ecr_emulator.errors import AwsError

SHA256_DIGEST = re.compile(r"sha256:[a-f0-9]{64}")
# OCI image-spec digest grammar: algorithm ":" encoded.
DIGEST = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")
# ECR's own digest grammar (the model's LayerDigest pattern, quoted in its failure reasons).
ECR_DIGEST = re.compile(r"[a-zA-Z0-9_+.-]+:[a-fA-F0-9]+")
# ECR's tag grammar, wider than OCI's (any of these characters first, up to 300): the
# model gives only the length, ECR's error text the characters ("must satisfy regular
# expression '[a-zA-Z0-9-_.]+'"). The gateway holds its clients to OCI's own grammar.
TAG = re.compile(r"[a-zA-Z0-9._-]{1,300}")


def is_digest(value: str) -> bool:
    return DIGEST.fullmatch(value) is not None


def is_sha256_digest(value: str) -> bool:
    return SHA256_DIGEST.fullmatch(value) is not None


def is_image_digest(value: str) -> bool:
    """A digest as ECR accepts one in an image or layer id; sha256 needs 64 hex digits."""
    if ECR_DIGEST.fullmatch(value) is None:
        return False
    algorithm, _, encoded = value.partition(":")
    return algorithm != "sha256" or len(encoded) == 64


def is_tag(value: str) -> bool:
    return TAG.fullmatch(value) is not None


def tag_error() -> AwsError:
    """ECR's refusal of a tag outside its grammar, where an action (PutImage, DescribeImages,
    an ``imageId`` of one image) refuses it whole: the text users quote from ECR
    (alexjurkiewicz/ecr-scan-image#40, datawire/forge#99)."""
    return AwsError("InvalidParameterException",
                    "Invalid parameter at 'imageTag' failed to satisfy constraint: "
                    "'must satisfy regular expression '[a-zA-Z0-9-_.]+''")


@functools.cache
def service_model(service: str = "ecr") -> ServiceModel:
    """botocore's model of ``ecr`` or ``ecr-public``."""
    return botocore.session.get_session().get_service_model(service)


def is_modelled_action(name: str, service: str = "ecr") -> bool:
    return name in service_model(service).operation_names


@functools.cache
def _operation(name: str, service: str = "ecr") -> OperationModel:
    return service_model(service).operation_model(name)


@functools.cache
def _error_name(action_name: str, service: str = "ecr") -> str:
    if not is_modelled_action(action_name, service):
        return "InvalidParameterException"
    declared = {shape.name for shape in _operation(action_name, service).error_shapes}
    if "ValidationException" in declared:
        return "ValidationException"
    return "InvalidParameterException"


def serialization_error(message: str) -> AwsError:
    """What JSON services answer for a body that is not JSON, not an object, or holds a value
    of the wrong kind for its member (before any constraint is looked at)."""
    return AwsError("SerializationException", message)


def input_error(action_name: str, message: str, service: str = "ecr") -> AwsError:
    """The error this action reports for malformed input."""
    return AwsError(_error_name(action_name, service), message)


def blob_members(action_name: str, service: str = "ecr") -> tuple[str, ...]:
    """Top-level members of type blob (base64 in JSON), decoded before validation."""
    if not is_modelled_action(action_name, service):
        return ()
    shape = _operation(action_name, service).input_shape
    if shape is None:
        return ()
    return tuple(name for name, member in shape.members.items() if member.type_name == "blob")


def validate_input(action_name: str, params: dict[str, Any],
                   service: str = "ecr") -> dict[str, Any]:
    """Raise the action's validation error for the first constraint ``params`` breaks;
    else ``params`` with only the members the model declares."""
    shape = _operation(action_name, service).input_shape
    if shape is None:
        return {}
    problem = _check(shape, params, "")
    if problem is not None:
        path, value, constraint = problem
        if constraint in _TYPES:  # a JSON value of the wrong kind: the body does not parse
            raise serialization_error(f"'{path}' must {constraint}")
        if _error_name(action_name, service) == "ValidationException":
            message = (f"1 validation error detected: Value {_show(value)} at '{path}' "
                       f"failed to satisfy constraint: Member must {constraint}")
        else:  # ECR's own form, as it answers (e.g. "... 'Member must have length less
            # than or equal to 100'" for 101 imageIds, aws-actions/amazon-ecr-login#225 for
            # registryIds)
            message = (f"Invalid parameter at '{path}' failed to satisfy constraint: "
                       f"'Member must {constraint}'")
        raise AwsError(_error_name(action_name, service), message)
    modelled: dict[str, Any] = _modelled(shape, params)
    return modelled


def _modelled(shape: Shape, value: Any) -> Any:
    """``value`` (already checked against ``shape``) without the members ``shape`` does not
    declare. Unknown members used to be stored and answered back as sent: one nested past
    the JSON encoder's depth made the action a ServerException."""
    if isinstance(shape, StructureShape) and isinstance(value, dict):
        return {name: _modelled(shape.members[name], item) for name, item in value.items()
                if name in shape.members}
    if isinstance(shape, ListShape) and isinstance(value, list):
        return [_modelled(shape.member, item) for item in value]
    if isinstance(shape, MapShape) and isinstance(value, dict):
        return {key: _modelled(shape.value, item) for key, item in value.items()}
    return value


Problem = tuple[str, Any, str]

_OBJECT, _LIST, _MAP, _STRING, _NUMBER, _BOOLEAN, _BLOB, _TIMESTAMP = (
    "be an object", "be a list", "be a map", "be a string", "be a number", "be a boolean",
    "be base64-encoded binary data", "be a timestamp in epoch seconds")
# What a Java int and long hold: the service reads integer and long members into them.
_RANGES: dict[str, tuple[str, int, int]] = {
    "integer": ("be a 32-bit integer", -2**31, 2**31 - 1),
    "long": ("be a 64-bit integer", -2**63, 2**63 - 1)}
_SCALARS = frozenset(("string", "integer", "long", "float", "double", "boolean", "blob",
                      "timestamp"))
_TYPES = frozenset((_OBJECT, _LIST, _MAP, _STRING, _NUMBER, _BOOLEAN, _BLOB, _TIMESTAMP,
                    *(kind for kind, _, _ in _RANGES.values())))


def _check(shape: Shape, value: Any, path: str) -> Problem | None:
    kind = shape.type_name
    checker = _CHECKERS.get(kind)
    if checker is None:
        return None
    return checker(shape, value, path)


def _check_structure(shape: Shape, value: Any, path: str) -> Problem | None:
    assert isinstance(shape, StructureShape)
    if not isinstance(value, dict):
        return path or "input", value, _OBJECT
    for name in shape.required_members:
        if value.get(name) is None:
            return _join(path, name), None, "not be null"
    for name, member in shape.members.items():
        if name in value and value[name] is not None:
            problem = _check(member, value[name], _join(path, name))
            if problem is not None:
                return problem
    return None


def _check_list(shape: Shape, value: Any, path: str) -> Problem | None:
    assert isinstance(shape, ListShape)
    if not isinstance(value, list):
        return path, value, _LIST
    problem = _length(shape, value, path)
    if problem is not None:
        return problem
    for index, item in enumerate(value):
        problem = _check(shape.member, item, f"{path}.{index + 1}.member")
        if problem is None:
            continue
        if shape.member.type_name in _SCALARS and problem[2] not in _TYPES:
            # A list of strings or numbers is reported whole, its item's constraint nested:
            # "at 'registryIds' ... 'Member must satisfy constraint: [Member must satisfy
            # regular expression pattern: [0-9]{12}]'" (ECR's answer quoted in
            # aws-actions/amazon-ecr-login#225).
            return path, value, f"satisfy constraint: [Member must {problem[2]}]"
        return problem
    return None


def _check_map(shape: Shape, value: Any, path: str) -> Problem | None:
    assert isinstance(shape, MapShape)
    if not isinstance(value, dict):
        return path, value, _MAP
    problem = _length(shape, value, path)
    if problem is not None:
        return problem
    for key, item in value.items():
        problem = _check(shape.key, key, f"{path}.{key}.key") or _check(
            shape.value, item, f"{path}.{key}.value")
        if problem is not None:
            return problem
    return None


def _check_string(shape: Shape, value: Any, path: str) -> Problem | None:
    if not isinstance(value, str):
        return path, value, _STRING
    problem = _length(shape, value, path)
    if problem is not None:
        return problem
    enum = shape.metadata.get("enum")
    if enum and value not in enum:
        return path, value, f"satisfy enum value set: [{', '.join(enum)}]"
    pattern = _pattern(shape.metadata.get("pattern"))
    if pattern is not None and pattern.fullmatch(value) is None:
        return path, value, f"satisfy regular expression pattern: {pattern.pattern}"
    return None


def _check_number(shape: Shape, value: Any, path: str) -> Problem | None:
    integral = shape.type_name in ("integer", "long")
    types: tuple[type, ...] = (int,) if integral else (int, float)
    if isinstance(value, bool) or not isinstance(value, types):
        return path, value, _NUMBER
    if shape.type_name in _RANGES:
        kind, lowest, highest = _RANGES[shape.type_name]
        if not lowest <= cast(int, value) <= highest:
            return path, value, kind
    low, high = shape.metadata.get("min"), shape.metadata.get("max")
    if low is not None and value < low:
        return path, value, f"have value greater than or equal to {low}"
    if high is not None and value > high:
        return path, value, f"have value less than or equal to {high}"
    return None


def _check_boolean(shape: Shape, value: Any, path: str) -> Problem | None:
    return None if isinstance(value, bool) else (path, value, _BOOLEAN)


def _check_blob(shape: Shape, value: Any, path: str) -> Problem | None:
    if isinstance(value, str):  # a nested blob (only top-level ones are decoded on arrival)
        try:
            value = base64.b64decode(value, validate=True)
        except binascii.Error:
            return path, "<blob>", _BLOB
    if not isinstance(value, bytes | bytearray | jsonbody.Sink):  # a sink: streamed to disk
        return path, "<blob>", _BLOB
    return _length(shape, value, path)


def _check_timestamp(shape: Shape, value: Any, path: str) -> Problem | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    return None if ok else (path, value, _TIMESTAMP)


_CHECKERS = {
    "structure": _check_structure,
    "list": _check_list,
    "map": _check_map,
    "string": _check_string,
    "integer": _check_number,
    "long": _check_number,
    "float": _check_number,
    "double": _check_number,
    "boolean": _check_boolean,
    "blob": _check_blob,
    "timestamp": _check_timestamp,
}


def _length(shape: Shape, value: Any, path: str) -> Problem | None:
    low, high = shape.metadata.get("min"), shape.metadata.get("max")
    size = len(value)
    shown = "<blob>" if isinstance(value, bytes | bytearray | jsonbody.Sink) else value
    if low is not None and size < low:
        return path, shown, f"have length greater than or equal to {low}"
    if high is not None and size > high:
        return path, shown, f"have length less than or equal to {high}"
    return None


@functools.cache
def _pattern(source: str | None) -> re.Pattern[str] | None:
    if not source:
        return None
    try:  # as Java reads it: \w, \d and \s are ASCII (no UNICODE_CHARACTER_CLASS)
        return re.compile(source, re.ASCII)
    except re.error:  # a Java-only construct: leave that constraint to the handler
        return None


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _show(value: Any) -> str:
    """A value as AWS's messages print it: JSON's null, true and false ("Value null at
    'subjectId' ..."), a string quoted."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    text = repr(value) if not isinstance(value, str) else f"'{value}'"
    return text if len(text) <= 200 else text[:200] + "..."
