"""The ``/_emulator/*`` control endpoints (faults, policies, request log, lifecycle runs):
who may use them, and the request-log and fault routes.

They are off unless the emulator runs with ``--admin``, and only then is this module imported
(control.py answers 404 otherwise): a fault rule or a policy change is as good as write
access to every repository, and the request log shows every key's calls. When on and the
emulator has credentials, a control request must be SigV4-signed with one of them, for the
service ``emulator`` in the emulator's region (``curl --aws-sigv4
aws:amz:<region>:emulator --user KEY:SECRET``): the secret never travels, and a captured
request is useless fifteen minutes later (ECR's clock window). Only keys of the emulator's
own account (``--account-id``) may: one with another ``aws_account_id`` is
AccessDeniedException (403).
Without credentials the whole emulator is open, and so are they.

Health (``/_emulator/health``) and the presigned download routes, which carry checks of their
own, stay outside (``control.OPEN_PREFIXES``).

Routes added here: ``GET /_emulator/requests`` (``?action=`` filters), ``DELETE
/_emulator/requests`` (empties the in-memory view), ``GET/POST/DELETE /_emulator/faults``
(faults.py).
"""

from __future__ import annotations

from aiohttp import web

from ecr_emulator import sigv4
from ecr_emulator.control import BodyTooLarge, Handler, is_control, read_body, read_json
from ecr_emulator.errors import AwsError
from ecr_emulator.faults import Faults
from ecr_emulator.state import STATE_KEY

SERVICE = "emulator"
VERIFIER = web.AppKey("emulator_admin_verifier", sigv4.Verifier)
REGION = web.AppKey("emulator_admin_region", str)
REQUESTS_KEPT = 100_000  # the request log's entries GET /_emulator/requests can show


def install(app: web.Application, region: str, verifier: sigv4.Verifier | None) -> None:
    """Turn the control endpoints of ``app`` on (its STATE_KEY is set)."""
    app.middlewares.append(guard)
    app[REGION] = region
    if verifier is not None:
        app[VERIFIER] = verifier
    state = app[STATE_KEY]
    state.request_log.remember(REQUESTS_KEPT)
    if state.faults is None:
        state.faults = Faults.from_env()
    app.router.add_get("/_emulator/requests", _get_requests)
    app.router.add_delete("/_emulator/requests", _clear_requests)
    app.router.add_get("/_emulator/faults", _list_faults)
    app.router.add_post("/_emulator/faults", _add_fault)
    app.router.add_delete("/_emulator/faults", _clear_faults)


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not is_control(request.path):
        return await handler(request)
    verifier = request.app.get(VERIFIER)
    if verifier is not None:
        try:
            pending = verifier.begin(request, service=SERVICE, region=request.app[REGION])
            try:
                body = await read_body(request)  # kept for the handler
            except BodyTooLarge as exc:
                raise AwsError("RequestEntityTooLargeException",
                               f"control request too large: {exc}", status=413) from None
            pending.update(body)
            pending.finish()
            # The rules, faults and log cover every account: a key of another account
            # would rule over the emulator's own (as no IAM principal of one account edits
            # another's policies).
            account = pending.credential.account_id
            if account not in (None, request.app[STATE_KEY].account_id):
                raise AwsError("AccessDeniedException",
                               f"User: arn:aws:iam::{account}:user/{pending.scope.access_key_id}"
                               " is not authorized to use the control endpoints: they are "
                               "for keys of the emulator's own account")
        except AwsError as exc:
            return web.json_response(exc.body(), status=403 if exc.status < 413 else exc.status)
    return await handler(request)


async def _get_requests(request: web.Request) -> web.Response:
    entries = request.app[STATE_KEY].request_log.entries(request.query.get("action"))
    return web.json_response({"requests": entries})


async def _clear_requests(request: web.Request) -> web.Response:
    return web.json_response({"cleared": request.app[STATE_KEY].request_log.clear()})


def _faults(request: web.Request) -> Faults:
    faults = request.app[STATE_KEY].faults
    assert faults is not None  # install() made them
    return faults


async def _add_fault(request: web.Request) -> web.Response:
    faults = _faults(request)
    try:
        body = await read_json(request)
        if not isinstance(body, dict):
            raise ValueError("the body must be a JSON object")
        faults.add_from_json(body)
    except ValueError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response({"faults": faults.describe()})


async def _list_faults(request: web.Request) -> web.Response:
    faults = _faults(request)
    return web.json_response({"faults": faults.describe(), "seed": faults.seed,
                              "injected": faults.stats()})


async def _clear_faults(request: web.Request) -> web.Response:
    _faults(request).clear()
    return web.json_response({"faults": []})
