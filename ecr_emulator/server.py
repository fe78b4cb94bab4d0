"""The emulator's aiohttp application, an embeddable server, and ``ecr-gateway emulator``.

Routes:
  POST /                           the ECR API (AWS JSON 1.1; the action in X-Amz-Target)
  GET  /_emulator/layers/{digest}  presigned layer downloads (see downloads.py)
  (the /_emulator/ control routes below but health need --admin, see admin.py and
  control.py: admin.py and faults.py are imported only when asked for)
  GET  /_emulator/requests         the request log as {"requests": [...]} (?action= filters)
  DELETE /_emulator/requests       empties the in-memory view of the log
  GET/POST/DELETE /_emulator/faults  injected failures (see faults.py)
  GET  /_emulator/health           {"status": "ok"}
  GET/PUT/DELETE /_emulator/policies  per-access-key allow/deny rules (see access.py)
  POST /_emulator/lifecycle/run    apply the lifecycle policies now (see expiry.py)
  GET  /token, /v2/...             the ECR Public registry endpoint (see public/registry.py)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType

from aiohttp import web

from ecr_emulator import (
    access,
    actions,  # noqa: F401  (importing registers the handlers)
    body_budget,
    browsers,
    control,
    downloads,
    expiry,
    memory,
    protocol,
    public,
    registries,
    sigv4,
    throttle,
    upload_expiry,
)
from ecr_emulator.connections import BoundedAppRunner, server_options
from ecr_emulator.credentials import CredentialStore
from ecr_emulator.settings import Settings
from ecr_emulator.state import STATE_KEY, EmulatorState
from ecr_model.hosts import is_loopback

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
               throttles: throttle.Throttles | None = None,
               local_host_names: tuple[str, ...] | None = None) -> web.Application:
    """The emulator as an aiohttp application storing everything under ``data_dir``.

    ``public_url`` is the base of the URLs the emulator hands out (proxyEndpoint, download
    URLs); by default each request's own scheme and Host are used. With ``credentials``
    every API call must be signed with one of them (sigv4.py); ``admin_enabled`` turns the
    control endpoints on (admin.py). With ``local_host_names`` (for a loopback listener
    without credentials) only requests naming the emulator by address, localhost or one of
    them are served, and none a web page sent (browsers.py).
    """
    app = web.Application(client_max_size=protocol.MAX_REQUEST_BYTES)
    if local_host_names is not None:
        app.middlewares.append(browsers.local_callers_only(local_host_names))
    state = EmulatorState(Path(data_dir), account_id=account_id, region=region,
                          public_url=public_url, settings=settings or Settings())
    app[STATE_KEY] = state
    app[body_budget.KEY] = body_budget.UnverifiedBodies(state.settings.unverified_body_bytes)
    verifier = sigv4.Verifier(credentials) if credentials is not None else None
    if verifier is not None:
        app[protocol.VERIFIER] = verifier
    if admin_enabled:
        _tool("admin").install(app, region, verifier)
    else:
        app.middlewares.append(control.off)
        if os.environ.get(control.FAULTS_ENV):  # faults without the control endpoints
            state.faults = _tool("faults").Faults.from_env()
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
    app.router.add_get("/_emulator/health", _health)
    access.add_routes(app, policies)
    registries.install(app)
    public.install(app)
    expiry.install(app)
    upload_expiry.install(app)
    return app


class ToolMissing(RuntimeError):
    """--admin or ECR_EMULATOR_FAULTS where admin.py or faults.py were left out."""


def _tool(name: str) -> ModuleType:
    """``ecr_emulator.<name>`` (admin or faults), which an installation may leave out: the
    production container image has them only when built with EMULATOR_TOOLS=1."""
    try:
        return importlib.import_module(f"ecr_emulator.{name}")
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith("ecr_emulator."):
            raise
        raise ToolMissing(
            f"{exc.name} is not part of this installation: the emulator's control endpoints "
            "and fault injection are left out of the production container image unless it "
            "is built with --build-arg EMULATOR_TOOLS=1") from None


async def _health(request: web.Request) -> web.Response:
    # Open to anyone who reaches the port: it says the process answers, nothing about whose
    # registry it holds (a signed call tells its caller the account id, as on AWS).
    return web.json_response({"status": "ok"})


@contextlib.asynccontextmanager
async def serve(data_dir: Path, *, host: str = "127.0.0.1", port: int = 0,
                account_id: str = DEFAULT_ACCOUNT_ID, region: str = DEFAULT_REGION,
                public_url: str | None = None, settings: Settings | None = None,
                policies: access.Policies | None = None,
                credentials: CredentialStore | None = None,
                admin_enabled: bool = False,
                throttles: throttle.Throttles | None = None,
                local_host_names: tuple[str, ...] = ()) -> AsyncIterator[str]:
    """Run the emulator on ``host:port`` (0: any free port) and yield its base URL. Open
    (no ``credentials``) on loopback, it answers only requests that name it by address,
    localhost or one of ``local_host_names`` (browsers.py)."""
    settings = settings or Settings()
    guarded = credentials is None and is_loopback(host)
    app = create_app(data_dir, account_id=account_id, region=region, public_url=public_url,
                     settings=settings, policies=policies, credentials=credentials,
                     admin_enabled=admin_enabled, throttles=throttles,
                     local_host_names=local_host_names if guarded else None)
    runner = BoundedAppRunner(app, max_connections=settings.max_connections, access_log=None,
                              handle_signals=False,
                              **server_options(settings.header_timeout))
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
        if os.environ.get(control.FAULTS_ENV):
            # a malformed ECR_EMULATOR_FAULTS is refused here, with exit code 2
            _tool("faults").Faults.from_env()
        policy_file = getattr(args, "policy_file", None)
        policies = access.Policies.from_file(policy_file) if policy_file else None
        credentials_file = getattr(args, "credentials", None)
        credentials = CredentialStore.from_file(credentials_file) if credentials_file else None
        throttle_file = getattr(args, "throttle", None)
        throttles = (throttle.Throttles.parse(Path(throttle_file).read_text(), throttle_file)
                     if throttle_file else throttle.Throttles.from_env())
        admin_enabled = bool(getattr(args, "admin", False))
        if admin_enabled:
            _tool("admin")  # present, or exit 2 now rather than at the first request
    except (ValueError, OSError, ToolMissing) as exc:
        print(f"ecr-gateway emulator: {exc}", file=sys.stderr)
        return 2
    memory.keep_freed_memory()
    if credentials is None:
        log.warning("no --credentials: every access key and secret is accepted, signatures "
                    "are not checked%s", " and the control endpoints are open to anyone"
                    if admin_enabled else "")
    else:
        log.info("SigV4 verified against %d access keys from %s", len(credentials),
                 credentials.path)
    try:
        asyncio.run(_run(Path(args.data_dir), host, port, args.account_id, args.region, settings,
                         policies, credentials, admin_enabled, throttles,
                         tuple(getattr(args, "local_host_name", None) or ())))
    except OSError as exc:
        print(f"ecr-gateway emulator: {exc}", file=sys.stderr)
        return 1
    return 0


async def _run(data_dir: Path, host: str, port: int, account_id: str, region: str,
               settings: Settings, policies: access.Policies | None = None,
               credentials: CredentialStore | None = None, admin_enabled: bool = False,
               throttles: throttle.Throttles | None = None,
               local_host_names: tuple[str, ...] = ()) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with serve(data_dir, host=host, port=port, account_id=account_id, region=region,
                     settings=settings, policies=policies, credentials=credentials,
                     admin_enabled=admin_enabled, throttles=throttles,
                     local_host_names=local_host_names) as url:
        print(f"ECR emulator listening on {url}", flush=True)
        await stop.wait()
    log.info("ECR emulator stopped")
