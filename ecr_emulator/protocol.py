"""The AWS JSON 1.1 protocol: one ``POST /`` route, the action in ``X-Amz-Target``.

Two services share the route: ECR (``AmazonEC2ContainerRegistry_V20150921.<Action>``) and
ECR Public (``SpencerFrontendService.<Action>``, handlers registered with
``@action(name, service="ecr-public")``, run on the ECR Public registry's own state; their
request-log and fault names are ``ecr-public:<Action>``).
A request is signed with SigV4. With credentials (``VERIFIER`` set, see sigv4.py) the
signature is verified as AWS does, the body's hash computed while the body streams in and
checked before the action runs; without, any key is accepted and only read from the
credential scope. Then the per-key rules of access.py and the repository policies of
repository_policy.py apply; a call naming another account's repositories (``registryId``)
reaches that account's registry only as cross_account.py allows.
Errors travel as ``{"__type": name, "message": ...}`` with the HTTP status AWS uses, which is
what botocore turns into ``client.exceptions.<name>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import orjson
from aiohttp import web

from ecr_emulator import (
    access,
    body_budget,
    cross_account,
    jsonbody,
    repository_policy,
    sigv4,
    throttle,
    validation,
)
from ecr_emulator.errors import AwsError, server_error
from ecr_emulator.registries import REGISTRIES_KEY
from ecr_emulator.state import PUBLIC_STATE_KEY, STATE_KEY, EmulatorState
from ecr_model.body_reads import BodyReads

if TYPE_CHECKING:  # faults.py is imported only when faults are asked for (control.py)
    from ecr_emulator.faults import Plan

log = logging.getLogger(__name__)

TARGET_PREFIX = "AmazonEC2ContainerRegistry_V20150921."
PUBLIC_TARGET_PREFIX = "SpencerFrontendService."
CONTENT_TYPE = "application/x-amz-json-1.1"
# A 20 MiB part is 27,962,028 bytes of base64; a 4 MiB manifest escaped as JSON fits too.
MAX_REQUEST_BYTES = 32 * 1024 * 1024

Json = dict[str, Any]
VERIFIER = web.AppKey("emulator_sigv4_verifier", sigv4.Verifier)  # absent: any key is accepted


@dataclass(frozen=True)
class Identity:
    """Who signed a request, read from ``Credential=AKID/date/region/service/aws4_request``."""

    access_key_id: str
    region: str
    service: str
    account_id: str | None = None  # the key's account, if the credentials file names it


_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/(\d{8})/([^/,\s]+)/([^/,\s]+)/aws4_request")


def parse_identity(request: web.Request) -> Identity:
    header = request.headers.get("Authorization")
    scope = header if header is not None else request.query.get("X-Amz-Credential")
    if scope is None:
        raise AwsError("MissingAuthenticationTokenException", "Missing Authentication Token",
                       status=403)
    if header is not None and not header.startswith("AWS4-HMAC-SHA256 "):
        raise AwsError("IncompleteSignatureException",
                       "Authorization header requires the AWS4-HMAC-SHA256 scheme")
    match = _CREDENTIAL.search(scope if header is not None else f"Credential={scope}")
    if match is None:
        raise AwsError("IncompleteSignatureException",
                       "Authorization header requires a valid Credential scope")
    return Identity(access_key_id=match[1], region=match[3], service=match[4])


@dataclass
class Call:
    """One API call as an action handler sees it."""

    state: EmulatorState
    action: str
    identity: Identity
    base_url: str
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    service: str = "ecr"  # or "ecr-public"


Handler = Callable[[Call, Json], Awaitable[Json]]


@dataclass(frozen=True)
class ActionSpec:
    name: str  # as logged and as faults name it: "PutImage", "ecr-public:PutImage"
    handler: Handler
    blob_members: tuple[str, ...]
    service: str = "ecr"
    operation: str = ""  # the bare action name ("PutImage")


ACTIONS: dict[str, ActionSpec] = {}  # ECR
PUBLIC_ACTIONS: dict[str, ActionSpec] = {}  # ECR Public


class StreamedBlob(jsonbody.Sink, Protocol):
    """A blob member written to its place as it arrives (see ``streams_blob``)."""

    def release(self) -> None:
        """Undo what was written unless the action kept it; called once the request ends."""
        ...


# Given the state and the members before the blob: where an ECR action's blob streams to.
BlobOpener = Callable[[EmulatorState, Json], Awaitable[StreamedBlob | None]]
BLOB_OPENERS: dict[str, BlobOpener] = {}


def streams_blob(name: str) -> Callable[[BlobOpener], BlobOpener]:
    """Stream ECR action ``name``'s blob member to what ``opener`` returns (None: memory)."""

    def register(opener: BlobOpener) -> BlobOpener:
        BLOB_OPENERS[name] = opener
        return opener

    return register


def action(name: str, service: str = "ecr") -> Callable[[Handler], Handler]:
    """Register ``handler`` as the implementation of action ``name`` of ``service``."""

    def register(handler: Handler) -> Handler:
        table, logged = (ACTIONS, name) if service == "ecr" else (
            PUBLIC_ACTIONS, f"{service}:{name}")
        table[name] = ActionSpec(logged, handler, validation.blob_members(name, service),
                                 service, name)
        return handler

    return register


async def _chunks(request: web.Request, pending: sigv4.Pending | None = None,
                  hold: body_budget.Hold | None = None) -> AsyncGenerator[bytes, None]:
    """The body's chunks as they arrive (hashed for the signature check, charged to
    ``hold``), refusing more than MAX_REQUEST_BYTES."""
    length = request.content_length
    if length is not None and length > MAX_REQUEST_BYTES:
        raise AwsError("RequestEntityTooLargeException",
                       f"Request of {length} bytes exceeds {MAX_REQUEST_BYTES}", status=413)
    reads = BodyReads(request.transport, length)  # large socket reads (ecr_model/body_reads.py)
    try:
        while True:
            reads.before_wait(request.content.total_bytes)
            chunk = await request.content.readany()
            if not chunk:
                return
            # Every byte the connection has delivered of the body (read or still buffered).
            if request.content.total_bytes > MAX_REQUEST_BYTES:
                raise AwsError("RequestEntityTooLargeException",
                               f"Request exceeds {MAX_REQUEST_BYTES} bytes", status=413)
            if pending is not None:
                pending.update(chunk)
            if hold is not None:
                hold.charge(len(chunk))
            yield chunk
    finally:
        reads.close()


async def read_params(request: web.Request, spec: ActionSpec,
                      pending: sigv4.Pending | None = None,
                      open_sink: jsonbody.SinkOpener | None = None,
                      hold: body_budget.Hold | None = None) -> Json:
    """The decoded JSON input; a blob member (a layer part) arrives as a bytearray. With
    ``pending``, the signature is checked once the last byte arrived, before anything else
    (a malformed body of a badly signed request is a signature error, as on AWS); until
    then the bytes held are charged to ``hold`` (body_budget.py)."""
    blob = spec.blob_members[0] if len(spec.blob_members) == 1 else None
    settings = request.app[STATE_KEY].settings
    length = request.content_length or 0
    # One deadline for the whole body (a timer per chunk would cost the hot path): the
    # bytes of a part stream into the upload's file under its lock before the signature can
    # be checked, so a slow body must not hold that lock for ever.
    allowed = settings.request_body_grace_seconds + length / settings.request_body_min_rate
    # Closed as soon as the body is done with (the socket's read mark goes with it: aiohttp
    # reads what is left of a body after the handler, and the mark would hold that back).
    try:
        async with contextlib.aclosing(_chunks(request, pending, hold)) as chunks, \
                asyncio.timeout(allowed):
            try:
                params = await jsonbody.parse(chunks, blob, open_sink)
            except jsonbody.BodyError as exc:
                error = validation.serialization_error(f"Malformed request: {exc}")
                if pending is not None:
                    async for _ in chunks:
                        pass
                    pending.finish()
                raise error from None
    except TimeoutError:
        raise AwsError("RequestTimeoutException",
                       f"The request body did not arrive within {allowed:.0f} seconds",
                       status=408) from None
    if pending is not None:
        pending.finish()
    if hold is not None:
        hold.release()
    return params


def authenticate(request: web.Request) -> tuple[Identity, sigv4.Pending | None]:
    """Who signed the request; with a verifier, also the check its body must still pass."""
    verifier = request.app.get(VERIFIER)
    if verifier is None:
        return parse_identity(request), None
    public = request.headers.get("X-Amz-Target", "").startswith(PUBLIC_TARGET_PREFIX)
    service = "ecr-public" if public else "ecr"
    # One emulator stands for every regional endpoint (a gateway routes ECR hosts of other
    # regions to it; ECR Public answers UnsupportedCommandException outside us-east-1), so
    # the scope must name a region, not this one.
    pending = verifier.begin(request, service=service, region=None)
    return Identity(pending.scope.access_key_id, pending.scope.region, service,
                    pending.credential.account_id), pending


def base_url(request: web.Request, public_url: str | None) -> str:
    return public_url.rstrip("/") if public_url else f"{request.scheme}://{request.host}"


async def handle_api(request: web.Request) -> web.StreamResponse:
    """The single API route: dispatch, render errors, write the request log."""
    streamed: list[StreamedBlob] = []
    hold = request.app[body_budget.KEY].hold()
    try:
        return await _handle_api(request, streamed, hold)
    finally:
        hold.release()
        for blob in streamed:  # a refused or failed call leaves no trace of its blob
            blob.release()


def _sink_opener(request: web.Request, identity: Identity, spec: ActionSpec,
                 streamed: list[StreamedBlob],
                 hold: body_budget.Hold) -> jsonbody.SinkOpener | None:
    opener = BLOB_OPENERS.get(spec.name) if spec.service == "ecr" else None
    if opener is None:
        return None

    async def open_sink(head: Json) -> jsonbody.Sink | None:
        # Only a registry already open: nothing is made for a body not yet checked.
        primary = request.app[STATE_KEY]
        registries = request.app.get(REGISTRIES_KEY)
        caller = identity.account_id or primary.account_id
        foreign = cross_account.foreign_account(spec.operation, head, caller)
        state = primary if registries is None else registries.opened(
            foreign or caller, identity.region)
        if state is not None and foreign is not None:
            try:  # another account's upload file only for a caller its policies let in
                await _authorize(request, identity, spec, head, state, caller,
                                 state.account_id, state.region)
            except AwsError:
                state = None
        blob = await opener(state, head) if state is not None else None
        if blob is not None:
            streamed.append(blob)
            hold.streaming = True  # the blob's bytes go to the upload's file
        return blob

    return open_sink


async def _handle_api(request: web.Request, streamed: list[StreamedBlob],
                      hold: body_budget.Hold) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    started = time.monotonic()
    action_name = _logged_name(request.headers.get("X-Amz-Target", ""))
    repository: str | None = None
    identity: Identity | None = None
    request_id = str(uuid.uuid4())
    plan: Plan | None = None
    try:
        identity, pending = authenticate(request)
        request["identity"] = identity  # who signed it, for any middleware
        try:
            spec = _lookup(request.headers.get("X-Amz-Target", ""))
        except AwsError:
            if pending is not None:  # AWS authenticates before it looks at the operation
                async for _ in _chunks(request, pending):
                    pass
                pending.finish()
            raise
        params = await read_params(request, spec, pending,
                                   _sink_opener(request, identity, spec, streamed, hold),
                                   hold if pending is not None else None)
        throttles = request.app.get(throttle.KEY)
        if throttles is not None:
            # The key's account where the credentials file names one, else the default's.
            throttles.check(spec.name, identity.account_id or "", identity.region)
        if isinstance(params.get("repositoryName"), str):
            repository = params["repositoryName"]
        params = validation.validate_input(spec.operation, params, spec.service)
        call_state = await _addressed(request, identity, spec, params)
        plan = state.faults.plan(spec.name) if state.faults is not None else None
        if plan is not None and plan.delay:
            await asyncio.sleep(plan.delay)
        if plan is not None and plan.error is not None:
            raise plan.error
        call = Call(call_state, spec.operation, identity,
                    base_url(request, call_state.public_url), request_id, spec.service)
        result = await spec.handler(call, params)
        if plan is not None and plan.after is not None:
            raise _after(plan.after, result)
        status, outcome, payload = 200, "ok", result
    except AwsError as exc:
        status, outcome, payload = exc.status, exc.name, exc.body()
    except ConnectionResetError as exc:
        # The caller vanished mid-body (killed, timed out): nothing was stored and nobody
        # waits for the answer, so a line in the log is all it is worth.
        log.info("%s: caller went away before its request body ended", action_name)
        # aiohttp keeps this error in the request's stream: its traceback would tie this
        # call's frames, and the body they had read, into a cycle that only a full garbage
        # collection frees (MiBs held per abandoned request, for as long as it takes).
        exc.__traceback__ = None
        status, outcome, payload = 400, "ClientDisconnected", {}
    except Exception:
        log.exception("%s failed", action_name)
        error = server_error()
        status, outcome, payload = error.status, error.name, error.body()
    state.request_log.record({
        "ts": time.time(),
        "action": action_name,
        "repository": repository,
        "outcome": outcome,
        "status": status,
        "access_key_id": identity.access_key_id if identity else None,
        "region": identity.region if identity else None,
        "duration_ms": round((time.monotonic() - started) * 1000, 3),
        "request_id": request_id,
        **({"faults": plan.kinds} if plan is not None and plan.kinds else {}),
    })
    body = orjson.dumps(payload)
    if plan is not None and plan.disconnect:
        return await _cut(request, status, body, request_id)
    return web.Response(body=body, status=status, content_type=CONTENT_TYPE,
                        headers={"x-amzn-RequestId": request_id})


async def _addressed(request: web.Request, identity: Identity, spec: ActionSpec,
                     params: Json) -> EmulatorState:
    """The registry the call acts on, once the caller may: its own (its key's account in its
    signature's region), or the other account's whose repositories it names."""
    if spec.service != "ecr":
        state = request.app[PUBLIC_STATE_KEY]
        if params.get("registryId") == state.settings.public_registry_alias:
            # The alias names the account's registry: rules see its repositories' ARNs.
            params = {**params, "registryId": state.account_id}
        await _authorize(request, identity, spec, params, state, state.account_id,
                         state.account_id, state.region)
        if spec.operation == "GetAuthorizationToken":
            # ECR Public's token is an STS service bearer token: the caller needs
            # sts:GetServiceBearerToken too (API reference, GetAuthorizationToken).
            request.app[access.POLICIES].check(
                identity.access_key_id, "GetServiceBearerToken", {},
                account_id=state.account_id, region=state.region, service="sts")
        return state
    own = await _registry(request, identity)
    registries = request.app.get(REGISTRIES_KEY)
    foreign = cross_account.foreign_account(spec.operation, params, own.account_id)
    if foreign is None or registries is None:
        await _authorize(request, identity, spec, params, own, own.account_id,
                         own.account_id, own.region)
        return own
    target = await registries.existing(foreign, own.region)
    await _authorize(request, identity, spec, params, target, own.account_id, foreign,
                     own.region)
    assert target is not None  # a registry that does not exist grants nothing
    return target


async def _authorize(request: web.Request, identity: Identity, spec: ActionSpec,
                     params: Json, state: EmulatorState | None, caller_account: str,
                     account_id: str, region: str) -> None:
    """Raise AccessDeniedException unless the caller's per-key rules and the resource-based
    policies of ``state`` (the registry of ``account_id`` in ``region``; None: it has none)
    let the call proceed."""
    decision = request.app[access.POLICIES].decide(
        identity.access_key_id, spec.operation, params, account_id=account_id,
        region=region, service=spec.service)
    if account_id != caller_account:
        await cross_account.authorize(state, identity.access_key_id, spec.operation, params,
                                      decision, caller_account=caller_account,
                                      account_id=account_id, region=region)
    else:
        assert state is not None
        await repository_policy.authorize(state, spec.service, identity.access_key_id,
                                          spec.operation, params, decision, region=region)


async def _registry(request: web.Request, identity: Identity) -> EmulatorState:
    """The private registry a call addresses: its key's account in its signature's region."""
    state = request.app[STATE_KEY]
    registries = request.app.get(REGISTRIES_KEY)
    if registries is None:
        return state
    try:
        return await registries.get(identity.account_id or state.account_id, identity.region)
    except ValueError:  # no AWS region's name (unchecked without credentials): as before
        return state


def _after(error: AwsError, result: Json) -> AwsError:
    """An injected error answered after the action ran; InvalidLayerPartException tells
    where the upload really stands, as ECR does when a retried part had already landed."""
    if error.name == "InvalidLayerPartException" and "lastByteReceived" in result:
        error.extra.update({k: result[k] for k in ("registryId", "repositoryName", "uploadId")
                            if k in result})
        error.extra["lastValidByteReceived"] = result["lastByteReceived"]
    return error


async def _cut(request: web.Request, status: int, body: bytes,
               request_id: str) -> web.StreamResponse:
    """Send the headers and half of ``body``, then close the connection (an injected fault:
    the action was performed but its answer never fully arrives)."""
    response = web.StreamResponse(status=status, headers={
        "Content-Type": CONTENT_TYPE, "Content-Length": str(len(body)),
        "x-amzn-RequestId": request_id})
    await response.prepare(request)
    await response.write(body[:len(body) // 2])
    if request.transport is not None:
        request.transport.close()
    return response


def _logged_name(target: str) -> str:
    if target.startswith(PUBLIC_TARGET_PREFIX):
        return "ecr-public:" + target.removeprefix(PUBLIC_TARGET_PREFIX)
    return target.removeprefix(TARGET_PREFIX)


def _lookup(target: str) -> ActionSpec:
    if target.startswith(PUBLIC_TARGET_PREFIX):
        service, table, name = "ecr-public", PUBLIC_ACTIONS, target.removeprefix(
            PUBLIC_TARGET_PREFIX)
    elif target.startswith(TARGET_PREFIX):
        service, table, name = "ecr", ACTIONS, target.removeprefix(TARGET_PREFIX)
    else:
        raise AwsError("UnknownOperationException",
                       f"X-Amz-Target must be {TARGET_PREFIX}<Action>, got {target!r}")
    spec = table.get(name)
    if spec is None:
        known = validation.is_modelled_action(name, service)
        raise AwsError("UnknownOperationException",
                       f"The ECR emulator does not implement {name}" if known
                       else f"Unknown operation {name}")
    return spec
