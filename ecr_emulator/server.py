"""The emulator's aiohttp application, an embeddable server, and ``ecr-gateway emulator``.

Routes:
  POST /                           the ECR API (AWS JSON 1.1; the action in X-Amz-Target)
  GET  /_emulator/layers/{digest}  presigned layer downloads (see downloads.py)
  (the /_emulator/ control routes below but health need --admin, see admin.py)
  GET  /_emulator/requests         the request log as {"requests": [...]} (?action= filters)
  DELETE /_emulator/requests       empties the in-memory view of the log
  GET  /_emulator/health           {"status": "ok", "accountId": ..., "region": ...}
  GET/PUT/DELETE /_emulator/policies  per-access-key allow/deny rules (see access.py)
  POST /_emulator/lifecycle/run    apply the lifecycle policies now (see expiry.py)
  GET  /token, /v2/...             the ECR Public registry endpoint (see public/registry.py)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from ecr_emulator import (
    access,
    actions,  # noqa: F401  (importing registers the handlers)
    admin,
    downloads,
    expiry,
    protocol,
    public,
    registries,
    sigv4,
    throttle,
)
from ecr_emulator.credentials import CredentialStore
from ecr_emulator.faults import Faults
from ecr_emulator.settings import Settings
from ecr_emulator.state import STATE_KEY, EmulatorState

__all__ = ["create_app", "run_from_args", "serve"]

log = logging.getLogger(__name__)

DEFAULT_ACCOUNT_ID = "123456789012"
DEFAULT_REGION = "us-east-1"


def create_app(data_dir: Path, *, account_id: str = DEFAULT_ACCOUNT_ID,
               region: str = DEFAULT_REGION, public_url: str | None = None,
               settings: Settings | None = None,
               policies: access.Policies | None = None,
               credentials: CredentialStore | None = None,
               admin_enabled: bool = False,
               throttles: throttle.Throttles | None = None) -> web.Application:
    """The emulator as an aiohttp application storing everything under ``data_dir``.

    ``public_url`` is the base of the URLs the emulator hands out (proxyEndpoint, download
    URLs); by default each request's own scheme and Host are used. With ``credentials``
    every API call must be signed with one of them (sigv4.py); ``admin_enabled`` turns the
    control endpoints on (admin.py).
    """
    app = web.Application(client_max_size=protocol.MAX_REQUEST_BYTES,
                          middlewares=[admin.guard])
    state = EmulatorState(Path(data_dir), account_id=account_id, region=region,
                          public_url=public_url, settings=settings or Settings())
    app[STATE_KEY] = state
    app[admin.ENABLED] = admin_enabled
    app[admin.REGION] = region
    if credentials is not None:
        app[protocol.VERIFIER] = app[admin.VERIFIER] = sigv4.Verifier(credentials)
    if throttles is not None:
        app[throttle.KEY] = throttles

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await state.start()
        yield
        await state.stop()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_post("/", protocol.handle_api)
    app.router.add_get(downloads.ROUTE, downloads.serve_layer)
    app.on_response_prepare.append(downloads.log_download)
    app.router.add_get("/_emulator/requests", _get_requests)
    app.router.add_delete("/_emulator/requests", _clear_requests)
    app.router.add_get("/_emulator/health", _health)
    app.router.add_get("/_emulator/faults", _list_faults)
    app.router.add_post("/_emulator/faults", _add_fault)
    app.router.add_delete("/_emulator/faults", _clear_faults)
    access.add_routes(app, policies)
    registries.install(app)
    public.install(app)
    expiry.install(app)
    return app


async def _get_requests(request: web.Request) -> web.Response:
    entries = request.app[STATE_KEY].request_log.entries(request.query.get("action"))
    return web.json_response({"requests": entries})


async def _clear_requests(request: web.Request) -> web.Response:
    return web.json_response({"cleared": request.app[STATE_KEY].request_log.clear()})


async def _add_fault(request: web.Request) -> web.Response:
    faults = request.app[STATE_KEY].faults
    try:
        body = await request.json()
        if not isinstance(body, dict):
            raise ValueError("the body must be a JSON object")
        faults.add_from_json(body)
    except ValueError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response({"faults": faults.describe()})


async def _list_faults(request: web.Request) -> web.Response:
    faults = request.app[STATE_KEY].faults
    return web.json_response({"faults": faults.describe(), "seed": faults.seed,
                              "injected": faults.stats()})


async def _clear_faults(request: web.Request) -> web.Response:
    request.app[STATE_KEY].faults.clear()
    return web.json_response({"faults": []})


async def _health(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    return web.json_response({"status": "ok", "accountId": state.account_id,
                              "region": state.region})


@contextlib.asynccontextmanager
async def serve(data_dir: Path, *, host: str = "127.0.0.1", port: int = 0,
                account_id: str = DEFAULT_ACCOUNT_ID, region: str = DEFAULT_REGION,
                public_url: str | None = None, settings: Settings | None = None,
                policies: access.Policies | None = None,
                credentials: CredentialStore | None = None,
                admin_enabled: bool = False,
                throttles: throttle.Throttles | None = None) -> AsyncIterator[str]:
    """Run the emulator on ``host:port`` (0: any free port) and yield its base URL."""
    app = create_app(data_dir, account_id=account_id, region=region, public_url=public_url,
                     settings=settings, policies=policies, credentials=credentials,
                     admin_enabled=admin_enabled, throttles=throttles)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        yield f"http://{shown}:{bound_port}"
    finally:
        await runner.cleanup()


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"--listen must be HOST:PORT, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def run_from_args(args: argparse.Namespace) -> int:
    """``ecr-gateway emulator``: serve until SIGTERM or SIGINT; returns the exit code."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        host, port = parse_listen(args.listen)
        settings = Settings.from_env()
        Faults.from_env()  # a malformed ECR_EMULATOR_FAULTS is refused here, with exit code 2
        policy_file = getattr(args, "policy_file", None)
        policies = access.Policies.from_file(policy_file) if policy_file else None
        credentials_file = getattr(args, "credentials", None)
        credentials = CredentialStore.from_file(credentials_file) if credentials_file else None
        throttle_file = getattr(args, "throttle", None)
        throttles = (throttle.Throttles.parse(Path(throttle_file).read_text(), throttle_file)
                     if throttle_file else throttle.Throttles.from_env())
    except (ValueError, OSError) as exc:
        print(f"ecr-gateway emulator: {exc}", file=sys.stderr)
        return 2
    admin_enabled = bool(getattr(args, "admin", False))
    if credentials is None:
        log.warning("no --credentials: every access key and secret is accepted, signatures "
                    "are not checked%s", " and the control endpoints are open to anyone"
                    if admin_enabled else "")
    else:
        log.info("SigV4 verified against %d access keys from %s", len(credentials),
                 credentials.path)
    try:
        asyncio.run(_run(Path(args.data_dir), host, port, args.account_id, args.region, settings,
                         policies, credentials, admin_enabled, throttles))
    except OSError as exc:
        print(f"ecr-gateway emulator: {exc}", file=sys.stderr)
        return 1
    return 0


async def _run(data_dir: Path, host: str, port: int, account_id: str, region: str,
               settings: Settings, policies: access.Policies | None = None,
               credentials: CredentialStore | None = None, admin_enabled: bool = False,
               throttles: throttle.Throttles | None = None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with serve(data_dir, host=host, port=port, account_id=account_id, region=region,
                     settings=settings, policies=policies, credentials=credentials,
                     admin_enabled=admin_enabled, throttles=throttles) as url:
        print(f"ECR emulator listening on {url}", flush=True)
        await stop.wait()
    log.info("ECR emulator stopped")
