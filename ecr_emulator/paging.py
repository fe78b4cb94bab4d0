"""Opaque ``nextToken`` values: the position after the last item of a page.

A token names the action it came from, so that a token passed to another action (or edited)
is an InvalidParameterException rather than a silently wrong page.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, TypeVar, cast

import orjson

from ecr_emulator.errors import AwsError

P = TypeVar("P", int, str, list[Any])
# Positions go to SQLite, whose INTEGER is 64-bit signed: a larger one was a ServerException.
MAX_POSITION = 2**63 - 1


def encode(action: str, position: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([action, position])).decode()


def decode(action: str, token: str | None, start: P) -> P:
    """The position a token carries, ``start`` when there is no token. The position must have
    the shape of ``start`` (an int from 0 to MAX_POSITION, a string, or a list of those):
    the tokens are not sealed as AWS's are, and a caller's forged one is
    InvalidParameterException, never a failure of the action."""
    if token is None:
        return start
    try:
        name, position = orjson.loads(base64.urlsafe_b64decode(token.encode()))
    except (binascii.Error, ValueError, TypeError):
        raise invalid_token() from None
    if name != action or not _shaped_like(position, start):
        raise invalid_token()
    return cast(P, position)


def _shaped_like(value: object, start: object) -> bool:
    if isinstance(start, bool) or isinstance(value, bool):
        return False
    if isinstance(start, int):
        return isinstance(value, int) and 0 <= value <= MAX_POSITION
    if isinstance(start, str):
        return isinstance(value, str)
    if isinstance(start, list):
        return isinstance(value, list) and len(value) == len(start) and all(
            _shaped_like(v, s) for v, s in zip(value, start, strict=True))
    return False


def invalid_token() -> AwsError:
    return AwsError("InvalidParameterException",
                    "Invalid parameter at 'nextToken' failed to satisfy constraint: "
                    "'Invalid pagination token'")


def page_size(params: dict[str, Any], default: int) -> int:
    value = params.get("maxResults")
    return default if value is None else int(value)
