"""Who may use the ``/_emulator/*`` control endpoints (faults, policies, request log,
lifecycle runs).

They are off unless the emulator runs with ``--admin``: a fault rule or a policy change is as
good as write access to every repository, and the request log shows every key's calls. When
on and the emulator has credentials, a control request must be SigV4-signed with one of
them, for the service ``emulator`` in the emulator's region (``curl --aws-sigv4
aws:amz:<region>:emulator --user KEY:SECRET``): the secret never travels, and a captured
request is useless five minutes later. Without credentials the whole emulator is open, and so
are they.

Health (``/_emulator/health``) and the presigned download routes, which carry checks of their
own, stay outside.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from ecr_emulator import sigv4
from ecr_emulator.errors import AwsError

SERVICE = "emulator"
_OPEN_PREFIXES = ("/_emulator/health", "/_emulator/layers/", "/_emulator/public/layers/",
                  "/_emulator/public/logos/", "/_emulator/registries/")
ENABLED = web.AppKey("emulator_admin_enabled", bool)
VERIFIER = web.AppKey("emulator_admin_verifier", sigv4.Verifier)
REGION = web.AppKey("emulator_admin_region", str)
MAX_BODY = 1024 * 1024
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def is_control(path: str) -> bool:
    return path.startswith("/_emulator/") and not path.startswith(_OPEN_PREFIXES)


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not is_control(request.path):
        return await handler(request)
    if not request.app.get(ENABLED, False):
        return web.json_response({"__type": "NotFound", "message": "the control endpoints "
                                  "are off; start the emulator with --admin"}, status=404)
    verifier = request.app.get(VERIFIER)
    if verifier is not None:
        try:
            pending = verifier.begin(request, service=SERVICE, region=request.app[REGION])
            if (request.content_length or 0) > MAX_BODY:
                raise AwsError("RequestEntityTooLargeException", "control request too large",
                               status=413)
            body = await request.read()  # small; aiohttp keeps it for the handler
            pending.update(body)
            pending.finish()
        except AwsError as exc:
            return web.json_response(exc.body(), status=403 if exc.status < 413 else exc.status)
    return await handler(request)
