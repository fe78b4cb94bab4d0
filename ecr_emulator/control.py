"""Which paths are the ``/_emulator/`` control endpoints, and their answer while they are off.

The control endpoints (request log, faults, per-key policies, lifecycle runs) exist only
with ``--admin``: admin.py (their guard and handlers) and faults.py are imported then, or
when ``ECR_EMULATOR_FAULTS`` asks for faults, and nowhere else, so an installation without
them (the production container image) runs the emulator all the same. This module is what
stays: without ``--admin`` every control path answers 404 before any handler.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

FAULTS_ENV = "ECR_EMULATOR_FAULTS"
# Health and the presigned download routes carry checks of their own and are always open.
OPEN_PREFIXES = ("/_emulator/health", "/_emulator/layers/", "/_emulator/public/layers/",
                 "/_emulator/public/logos/", "/_emulator/registries/")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_BODY = 1024 * 1024  # a control request's body (rules, faults) is a few KiB
_BODY = "emulator_control_body"


class BodyTooLarge(ValueError):
    """A control request's body passed MAX_BODY."""


async def read_body(request: web.Request) -> bytes:
    """The request's body, read once; BodyTooLarge past MAX_BODY, counted as the bytes
    arrive (a chunked body announces no length)."""
    kept = request.get(_BODY)
    if isinstance(kept, bytes):
        return kept
    length = request.content_length
    if length is not None and length > MAX_BODY:
        raise BodyTooLarge(f"the body of {length} bytes exceeds {MAX_BODY}")
    body = bytearray()
    while chunk := await request.content.readany():
        body += chunk
        if len(body) > MAX_BODY:
            raise BodyTooLarge(f"the body exceeds {MAX_BODY} bytes")
    request[_BODY] = kept = bytes(body)
    return kept


def is_control(path: str) -> bool:
    return path.startswith("/_emulator/") and not path.startswith(OPEN_PREFIXES)


@web.middleware
async def off(request: web.Request, handler: Handler) -> web.StreamResponse:
    if is_control(request.path):
        return web.json_response({"__type": "NotFound", "message": "the control endpoints "
                                  "are off; start the emulator with --admin"}, status=404)
    return await handler(request)


async def read_json(request: web.Request) -> object:
    """The request's JSON body; ValueError if it is not JSON. orjson refuses nesting past
    1024 levels with a ValueError, where json.loads recurses into a RecursionError (a 500)."""
    body = await read_body(request)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"the body is not JSON: {exc}") from None
