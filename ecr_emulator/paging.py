"""Opaque ``nextToken`` values: the position after the last item of a page.

A token names the action it came from, so that a token passed to another action (or edited)
is an InvalidParameterException rather than a silently wrong page.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson

from ecr_emulator.errors import AwsError


def encode(action: str, position: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([action, position])).decode()


def decode(action: str, token: str | None) -> Any:
    """The position a token carries, or None when there is no token."""
    if token is None:
        return None
    try:
        name, position = orjson.loads(base64.urlsafe_b64decode(token.encode()))
    except (binascii.Error, ValueError, TypeError):
        raise invalid_token() from None
    if name != action:
        raise invalid_token()
    return position


def invalid_token() -> AwsError:
    return AwsError("InvalidParameterException",
                    "Invalid parameter at 'nextToken' failed to satisfy constraint: "
                    "'Invalid pagination token'")


def page_size(params: dict[str, Any], default: int) -> int:
    value = params.get("maxResults")
    return default if value is None else int(value)
