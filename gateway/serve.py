"""``ecr-gateway serve``: load the configuration, start the embedded emulator if the upstream
is ``embedded``, and run the gateway until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import logging
import os
import re
import signal
import ssl
import subprocess
import sys
from pathlib import Path

from aiohttp import web

from gateway.app import build_app
from gateway.auth.exposure import check_exposure
from gateway.auth.tls import TlsFiles
from gateway.config import Config, ConfigError, load_config
from gateway.observability.drain import graceful_stop
from gateway.observability.tracing import Tracing
from gateway.oci.limits import server_options
from gateway.oci.server import OciAppRunner

log = logging.getLogger("gateway")

_READY = re.compile(r"listening on (http://\S+)")
# The embedded emulator accepts any key; these only make requests well-formed and signed.
EMBEDDED_KEY_ID = "AKIDEMBEDDEDGATEWAY"
EMBEDDED_SECRET = "embedded-emulator-secret"


class EmbeddedEmulator:
    """The emulator in its own process: the gateway and the emulator then each get a core
    (sharing one interpreter would put both on one GIL)."""

    def __init__(self, data_dir: Path, region: str) -> None:
        self._data_dir = data_dir
        self._region = region
        self._process: subprocess.Popen[str] | None = None
        self.url = ""

    def start(self) -> str:
        self._data_dir.mkdir(parents=True, exist_ok=True)
        self._process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "emulator", "--listen", "127.0.0.1:0",
             "--data-dir", str(self._data_dir), "--region", self._region],
            stdout=subprocess.PIPE, text=True)
        assert self._process.stdout is not None
        for line in self._process.stdout:
            match = _READY.search(line)
            if match:
                self.url = match[1]
                return self.url
        raise RuntimeError("the embedded ECR emulator exited before it was ready")

    def stop(self) -> None:
        if self._process and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()


def _version() -> str:
    try:
        return importlib.metadata.version("ecr-gateway")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _setup_logging(config: Config) -> None:
    from gateway.observability.logs import setup
    from gateway.tools.check_config import secret_values

    setup(config.log_level, config.log_format, secret_values(config))


async def _run(config: Config, tls: TlsFiles | None = None) -> None:
    tracing = Tracing.from_environ(os.environ, _version())
    app = build_app(config, tracing)
    # SIGTERM: stop accepting, give in-flight requests shutdown_grace_seconds, then cancel
    # them (an upload cut short keeps what it stored: the client resumes from its offset).
    # The grace is served by graceful_stop(); aiohttp's own timeout is only the last step.
    limits = config.limits
    runner = OciAppRunner(app, access_log=None, handle_signals=False,
                           shutdown_timeout=min(config.shutdown_grace_seconds, 2.0),
                           **server_options(max_header_bytes=limits.max_header_bytes,
                                            max_headers=limits.max_headers,
                                            header_timeout=limits.header_timeout_seconds))
    await runner.setup()
    site = web.TCPSite(runner, config.listen_host, config.listen_port, backlog=1024,
                       ssl_context=tls.context if tls else None)
    await site.start()
    metrics_runner: web.AppRunner | None = None
    if config.metrics_listen is not None:
        from gateway.observability.metrics import metrics_app

        host, _, port_text = config.metrics_listen.rpartition(":")
        metrics_runner = web.AppRunner(metrics_app(app), access_log=None, handle_signals=False)
        await metrics_runner.setup()
        await web.TCPSite(metrics_runner, host.strip("[]"), int(port_text)).start()
        log.info("metrics on http://%s/metrics", config.metrics_listen)
    tls_watch = asyncio.create_task(tls.watch()) if tls else None
    sockets = runner.addresses
    port = sockets[0][1] if sockets else config.listen_port
    scheme = "https" if tls else "http"
    log.info("ecr-gateway listening on %s://%s:%s (upstream %s)", scheme, config.listen_host,
             port, config.upstream.endpoint_url or f"AWS ECR in {config.upstream.region}")
    print(f"ecr-gateway listening on {scheme}://{config.listen_host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down: no new connections, in-flight requests get up to %ss",
             config.shutdown_grace_seconds)
    if tls_watch is not None:
        tls_watch.cancel()
    if metrics_runner is not None:
        await metrics_runner.cleanup()
    await graceful_stop(runner, config.shutdown_grace_seconds)
    if tracing is not None:
        await asyncio.to_thread(tracing.shutdown)  # the last spans, sent before exit


def start_embedded(config: Config) -> EmbeddedEmulator | None:
    """With ``upstream.mode: embedded``, start the emulator and point the upstream at it."""
    emulator: EmbeddedEmulator | None = None
    if config.upstream.mode == "embedded":
        emulator = EmbeddedEmulator(config.data_path / "emulator", config.upstream.region)
        config.upstream.endpoint_url = emulator.start()
        config.upstream.access_key_id = EMBEDDED_KEY_ID
        config.upstream.secret_access_key = EMBEDDED_SECRET
        log.info("embedded ECR emulator at %s (data in %s)", emulator.url,
                 config.data_path / "emulator")
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true" if emulator else "false")
    return emulator


def run_from_args(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config, overrides={"listen": args.listen,
                                                     "data_dir": args.data_dir})
    except ConfigError as exc:
        print(f"ecr-gateway: bad configuration: {exc}", file=sys.stderr)
        return 2
    try:
        exposure_warnings = check_exposure(config)
        tls = (TlsFiles(config.tls.cert_file, config.tls.key_file,
                        config.tls.reload_interval_seconds)
               if config.tls.cert_file and config.tls.key_file else None)
    except ConfigError as exc:
        print(f"ecr-gateway: refusing to start: {exc}", file=sys.stderr)
        return 2
    except (OSError, ssl.SSLError) as exc:
        print(f"ecr-gateway: cannot load tls.cert_file / tls.key_file: {exc}", file=sys.stderr)
        return 2
    _setup_logging(config)
    for warning in exposure_warnings:
        log.warning("%s\n%s\n%s", "!" * 78, warning, "!" * 78)
    emulator = start_embedded(config)
    try:
        asyncio.run(_run(config, tls))
    except ConfigError as exc:  # found while building the application (a file unreadable)
        print(f"ecr-gateway: refusing to start: {exc}", file=sys.stderr)
        return 2
    finally:
        if emulator:
            emulator.stop()
    return 0
