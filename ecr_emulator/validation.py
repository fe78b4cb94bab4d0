"""Input validation: the constraints of botocore's ECR model, plus ECR's own grammars.

The model (the same one the clients are generated from) gives every member's type, length,
range, pattern and enum; checking against it keeps the emulator's limits equal to the API
reference's. botocore validates little of this client-side (required members and minimums),
so the server has to. Every constraint broken is found (``Violation``); ECR answers them as
InvalidParameterException naming the first (``constraint_error``), for every action: the
ValidationException some models also declare is not what ECR answers a broken constraint
with. ``validation_exception`` words AWS's generic form, which lists them all.

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
from collections.abc import Callable
from dataclasses import dataclass
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


def digest_error(member: str = "imageDigest") -> AwsError:
    """ECR's refusal of an image digest outside its grammar where an action refuses it whole
    (PutImage, DescribeImages, an ``imageId`` of one image): "Invalid parameter at
    'imageDigest' failed to satisfy constraint: 'must satisfy regular expression
    '[a-zA-Z0-9-_+.]+:[a-fA-F0-9]+''", as DescribeImages answered an empty digest
    (pulumi/pulumi-aws#2466)."""
    return AwsError("InvalidParameterException",
                    f"Invalid parameter at '{member}' failed to satisfy constraint: "
                    f"'must satisfy regular expression '[a-zA-Z0-9-_+.]+:[a-fA-F0-9]+''")


@functools.cache
def service_model(service: str = "ecr") -> ServiceModel:
    """botocore's model of ``ecr`` or ``ecr-public``."""
    return botocore.session.get_session().get_service_model(service)


def is_modelled_action(name: str, service: str = "ecr") -> bool:
    return name in service_model(service).operation_names


@functools.cache
def _operation(name: str, service: str = "ecr") -> OperationModel:
    return service_model(service).operation_model(name)


def serialization_error(message: str) -> AwsError:
    """What JSON services answer for a body that is not JSON, not an object, or holds a value
    of the wrong kind for its member (before any constraint is looked at)."""
    return AwsError("SerializationException", message)


def blob_members(action_name: str, service: str = "ecr") -> tuple[str, ...]:
    """Top-level members of type blob (base64 in JSON), decoded before validation."""
    if not is_modelled_action(action_name, service):
        return ()
    shape = _operation(action_name, service).input_shape
    if shape is None:
        return ()
    return tuple(name for name, member in shape.members.items() if member.type_name == "blob")


def check_repository_name(name: str) -> None:
    """ECR's own rule for the repository name CreateRepository is given (the model's length
    and pattern), worded as ECR words it, without "Member" and with the pattern's "/"
    unescaped: "Invalid parameter at 'repositoryName' failed to satisfy constraint: 'must
    satisfy regular expression '...''" (jenkins-x/jx#1344, stelligent/mu#323 and, with
    today's pattern, CreateRepository of "Bad_Name!" as mulgadc/spinifex captured it) and
    "... 'must have length greater than or equal to 2'" (aws/aws-dotnet-deploy#549). The
    model's own check of that member never answers there."""
    shape = _operation("CreateRepository").input_shape.members["repositoryName"]
    low, high = shape.metadata["min"], shape.metadata["max"]
    pattern = shape.metadata["pattern"].replace("\\/", "/")
    if len(name) < low:
        problem = f"must have length greater than or equal to {low}"
    elif len(name) > high:
        problem = f"must have length less than or equal to {high}"
    elif re.fullmatch(pattern, name, re.ASCII) is None:
        problem = f"must satisfy regular expression '{pattern}'"
    else:
        return
    raise AwsError("InvalidParameterException", f"Invalid parameter at 'repositoryName' "
                                                f"failed to satisfy constraint: '{problem}'")


# Members an action checks with its own rule instead of the model's constraints (after them,
# as a service validates its input's shape before the action runs).
OWN_CHECKS: dict[tuple[str, str], dict[str, Callable[[str], None]]] = {
    ("ecr", "CreateRepository"): {"repositoryName": check_repository_name},
}


def validate_input(action_name: str, params: dict[str, Any],
                   service: str = "ecr") -> dict[str, Any]:
    """``params`` with only the members the model declares, once they satisfy every
    constraint of the action's input shape; else the error ECR answers for the first
    constraint broken (``constraint_error``). A value of the wrong kind is a
    SerializationException whatever else is wrong: the body does not read into the input."""
    shape = _operation(action_name, service).input_shape
    if shape is None:
        return {}
    skipped = OWN_CHECKS.get((service, action_name), {})
    found: list[Violation] = []
    _check(shape, params, "", found, frozenset(skipped))
    if found:
        raise constraint_error(found)
    for member, check in skipped.items():
        if params.get(member) is not None:
            check(params[member])
    modelled: dict[str, Any] = _modelled(shape, params)
    return modelled


@dataclass(frozen=True)
class Violation:
    """One broken constraint, as AWS's validation names it: the member's path
    ('imageIds.1.member.imageTag'), its value as the message shows it (None: not shown) and
    the constraint ("Member must have length less than or equal to 100")."""

    path: str
    shown: str | None
    constraint: str


def constraint_error(found: list[Violation]) -> AwsError:
    """ECR's answer to input that breaks the model's constraints: InvalidParameterException
    naming one member, "Invalid parameter at '<path>' failed to satisfy constraint:
    '<constraint>'", for every action, those whose model also declares ValidationException
    included. That is how ECR answered each case on record: CreatePullThroughCacheRule and
    DeletePullThroughCacheRule ('ecrRepositoryPrefix' ... 'Member must satisfy regular
    expression pattern: ...', both declare ValidationException), PutLifecyclePolicy
    ('lifecyclePolicyText' ... 'Member must have length greater than or equal to 100',
    declares it too), GetAuthorizationToken ('registryIds', aws-actions/amazon-ecr-login#225),
    BatchDeleteImage ('imageIds' ... 'Member must have length greater than or equal to 1'),
    ListImages through the registry endpoint ('maxResults' ... 'Member must have value less
    than or equal to 1000'). Unconfirmed: the wording ECR gives two broken constraints (every
    answer on record names one member); this names the first in the model's order of members,
    and ``validation_exception`` words all of them should ECR turn out to list them."""
    first = found[0]
    return AwsError("InvalidParameterException",
                    f"Invalid parameter at '{first.path}' failed to satisfy constraint: "
                    f"'{first.constraint}'")


def validation_exception(found: list[Violation]) -> AwsError:
    """AWS's generic validation error (ValidationException), which names every broken
    constraint in one message: "2 validation errors detected: Value 'x' at 'a' failed to
    satisfy constraint: Member must ...; Value null at 'b' failed to satisfy constraint:
    Member must not be null"."""
    count = len(found)
    noun = "error" if count == 1 else "errors"
    parts = [f"Value {v.shown + ' ' if v.shown is not None else ''}at '{v.path}' failed to "
             f"satisfy constraint: {v.constraint}" for v in found]
    return AwsError("ValidationException",
                    f"{count} validation {noun} detected: {'; '.join(parts)}")


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


_OBJECT, _LIST, _MAP, _STRING, _NUMBER, _BOOLEAN, _BLOB, _TIMESTAMP = (
    "be an object", "be a list", "be a map", "be a string", "be a number", "be a boolean",
    "be base64-encoded binary data", "be a timestamp in epoch seconds")
# What a Java int and long hold: the service reads integer and long members into them.
_RANGES: dict[str, tuple[str, int, int]] = {
    "integer": ("be a 32-bit integer", -2**31, 2**31 - 1),
    "long": ("be a 64-bit integer", -2**63, 2**63 - 1)}
_SCALARS = frozenset(("string", "integer", "long", "float", "double", "boolean", "blob",
                      "timestamp"))
_UNSHOWN = frozenset(("map", "blob"))  # "Value at 'x' ...": no value printed


def _kind_error(path: str, kind: str) -> AwsError:
    """A JSON value of the wrong kind: the body does not read into the input at all."""
    return serialization_error(f"'{path or 'input'}' must {kind}")


def _check(shape: Shape, value: Any, path: str, found: list[Violation],
           skipped: frozenset[str] = frozenset()) -> None:
    """Append to ``found`` every constraint ``value`` breaks, in the model's order of members
    and, for one value, length, enum, pattern, range (AWS's order across members is not
    published; within one, "Member must have length ...; ... regular expression pattern"
    as Cognito answers). Raise SerializationException for a value of the wrong kind."""
    kind = shape.type_name
    if kind == "structure":
        assert isinstance(shape, StructureShape)
        if not isinstance(value, dict):
            raise _kind_error(path, _OBJECT)
        required = set(shape.required_members)
        for name, member in shape.members.items():
            item = value.get(name)
            if item is None:
                if name in required:
                    found.append(Violation(_join(path, name), "null", "Member must not be null"))
            elif name in skipped:  # the action words this member's constraints itself
                if not isinstance(item, str):
                    raise _kind_error(_join(path, name), _STRING)
            else:
                _check(member, item, _join(path, name), found)
    elif kind == "list":
        assert isinstance(shape, ListShape)
        if not isinstance(value, list):
            raise _kind_error(path, _LIST)
        _length(shape, value, path, found)
        _check_items(shape.member, value, path, found)
    elif kind == "map":
        assert isinstance(shape, MapShape)
        if not isinstance(value, dict):
            raise _kind_error(path, _MAP)
        _length(shape, value, path, found)
        if _scalar_items(shape.key, list(value), path):
            found.append(Violation(path, None, f"Map keys must satisfy constraint: "
                                               f"[{_all_constraints(shape.key)}]"))
        if shape.value.type_name not in _SCALARS:
            for key, item in value.items():
                _check(shape.value, item, f"{path}.{key}.value", found)
        elif _scalar_items(shape.value, list(value.values()), path):
            found.append(Violation(path, None, f"Map value must satisfy constraint: "
                                               f"[{_all_constraints(shape.value)}]"))
    elif kind == "string":
        if not isinstance(value, str):
            raise _kind_error(path, _STRING)
        _length(shape, value, path, found)
        enum = shape.metadata.get("enum")
        if enum and value not in enum:
            found.append(Violation(path, _show(value), f"Member must {_enum(enum)}"))
        pattern = _pattern(shape.metadata.get("pattern"))
        if pattern is not None and pattern.fullmatch(value) is None:
            found.append(Violation(path, _show(value),
                                   f"Member must satisfy regular expression pattern: "
                                   f"{pattern.pattern}"))
    elif kind in ("integer", "long", "float", "double"):
        _check_number(shape, value, path, found)
    elif kind == "boolean":
        if not isinstance(value, bool):
            raise _kind_error(path, _BOOLEAN)
    elif kind == "blob":
        _check_blob(shape, value, path, found)
    elif kind == "timestamp":
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise _kind_error(path, _TIMESTAMP)


def _check_items(member: Shape, items: list[Any], path: str, found: list[Violation]) -> None:
    """A list of structures (or lists) is checked item by item ('imageIds.1.member.imageTag');
    a list of strings or numbers is reported whole, once, with every constraint of its member
    nested: "at 'registryIds' ... 'Member must satisfy constraint: [Member must satisfy
    regular expression pattern: [0-9]{12}]'" (ECR's answer quoted in
    aws-actions/amazon-ecr-login#225; AWS lists the member's constraints whichever broke,
    "[Member must have length less than or equal to 140, Member must have length greater
    than or equal to 1, Member must satisfy regular expression pattern: ...]" as Lambda words
    its layers)."""
    if member.type_name not in _SCALARS:
        for index, item in enumerate(items):
            _check(member, item, f"{path}.{index + 1}.member", found)
        return
    if _scalar_items(member, items, path):
        found.append(Violation(path, _show(items), f"Member must satisfy constraint: "
                                                   f"[{_all_constraints(member)}]"))


def _scalar_items(member: Shape, items: list[Any], path: str) -> bool:
    """Whether any of ``items`` (values of the scalar ``member``) breaks a constraint; a value
    of the wrong kind keeps its own path ('registryIds.2.member' must be a string)."""
    broken = False
    for index, item in enumerate(items):
        own: list[Violation] = []
        _check(member, item, f"{path}.{index + 1}.member", own)
        broken = broken or bool(own)
    return broken


def _all_constraints(member: Shape) -> str:
    """Every constraint of ``member``, as AWS lists them inside "[...]": length (maximum
    first), pattern, enum, range."""
    metadata = member.metadata
    words: list[str] = []
    sized = member.type_name in ("string", "blob", "list", "map")
    low, high = metadata.get("min"), metadata.get("max")
    if sized:
        if high is not None:
            words.append(f"Member must have length less than or equal to {high}")
        if low is not None:
            words.append(f"Member must have length greater than or equal to {low}")
    pattern = _pattern(metadata.get("pattern"))
    if pattern is not None:
        words.append(f"Member must satisfy regular expression pattern: {pattern.pattern}")
    if metadata.get("enum"):
        words.append(f"Member must {_enum(metadata['enum'])}")
    if not sized:
        if high is not None:
            words.append(f"Member must have value less than or equal to {high}")
        if low is not None:
            words.append(f"Member must have value greater than or equal to {low}")
    return ", ".join(words)


def _enum(values: list[str]) -> str:
    return f"satisfy enum value set: [{', '.join(values)}]"


def _check_number(shape: Shape, value: Any, path: str, found: list[Violation]) -> None:
    integral = shape.type_name in ("integer", "long")
    types: tuple[type, ...] = (int,) if integral else (int, float)
    if isinstance(value, bool) or not isinstance(value, types):
        raise _kind_error(path, _NUMBER)
    if shape.type_name in _RANGES:
        kind, lowest, highest = _RANGES[shape.type_name]
        if not lowest <= cast(int, value) <= highest:
            raise _kind_error(path, kind)
    low, high = shape.metadata.get("min"), shape.metadata.get("max")
    if low is not None and value < low:
        found.append(Violation(path, _show(value),
                               f"Member must have value greater than or equal to {low}"))
    if high is not None and value > high:
        found.append(Violation(path, _show(value),
                               f"Member must have value less than or equal to {high}"))


def _check_blob(shape: Shape, value: Any, path: str, found: list[Violation]) -> None:
    if isinstance(value, str):  # a nested blob (only top-level ones are decoded on arrival)
        try:
            value = base64.b64decode(value, validate=True)
        except binascii.Error:
            raise _kind_error(path, _BLOB) from None
    if not isinstance(value, bytes | bytearray | jsonbody.Sink):  # a sink: streamed to disk
        raise _kind_error(path, _BLOB)
    _length(shape, value, path, found)


def _length(shape: Shape, value: Any, path: str, found: list[Violation]) -> None:
    low, high = shape.metadata.get("min"), shape.metadata.get("max")
    size = len(value)
    shown = None if shape.type_name in _UNSHOWN else _show(value)
    if low is not None and size < low:
        found.append(Violation(path, shown,
                               f"Member must have length greater than or equal to {low}"))
    if high is not None and size > high:
        found.append(Violation(path, shown,
                               f"Member must have length less than or equal to {high}"))


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
    """A value as AWS's messages print it: JSON's null unquoted ("Value null at 'subjectId'"),
    anything else quoted as Java prints it, numbers too ("Value '100' at 'maxResults'") and a
    list as "'[a, b]'"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, list):
        text = "[" + ", ".join("null" if item is None else str(item) for item in value) + "]"
    else:
        text = str(value)
    if len(text) > 200:
        text = text[:200] + "..."
    return f"'{text}'"
