"""``ecr-gateway serve``: load the configuration, start the embedded emulator if the upstream
is ``embedded``, and run the gateway until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import errno
import importlib.metadata
import logging
import math
import os
import re
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import IO

from aiohttp import web

from ecr_model.private_files import NotPrivate, private_dir
from gateway.app import build_app
from gateway.auth.exposure import check_exposure
from gateway.auth.tls import TlsFiles
from gateway.config import Config, ConfigError, load_config
from gateway.observability.drain import graceful_stop
from gateway.observability.logs import announce
from gateway.observability.tracing import Tracing
from gateway.oci.connections import connection_bounds, raise_open_file_limit
from gateway.oci.limits import server_options
from gateway.oci.peer import STAGED_PEERS
from gateway.oci.server import OciAppRunner
from gateway.tools.check_config import missing_files, secret_values

log = logging.getLogger("gateway")

_READY = re.compile(r"listening on (http://\S+)")
# The emulator's log lines: "<date> <time>,<ms> <LEVEL> <logger> <message>"
_EMULATOR_LINE = re.compile(r"^\S+ \S+ (DEBUG|INFO|WARNING|ERROR|CRITICAL) (\S+) (.*)$")
CREDENTIALS_FILE = "credentials"  # in the emulator's data dir, mode 0600
UPLOAD_LIFETIME_ENV = "ECR_EMULATOR_UPLOAD_LIFETIME"
# What the embedded emulator inherits of the gateway's environment: the interpreter's and the
# locale's needs, TLS trust for pull-through cache upstreams, and its own ECR_EMULATOR_*
# settings. Nothing else: the gateway's credentials (AWS_*, OTEL_* headers, a Redis or
# upstream password given by environment) have no use there.
_EMULATOR_ENVIRONMENT = re.compile(
    r"PATH|HOME|USER|LOGNAME|LANG|LANGUAGE|LC_\w+|TZ|TMPDIR|TEMP|TMP|VIRTUAL_ENV|PYTHON\w*"
    r"|SSL_CERT_FILE|SSL_CERT_DIR|COVERAGE_\w+|ECR_EMULATOR_\w+")


def emulator_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The part of ``environ`` the embedded emulator gets."""
    return {name: value for name, value in environ.items()
            if _EMULATOR_ENVIRONMENT.fullmatch(name)}


class EmbeddedEmulator:
    """The emulator in its own process: the gateway and the emulator then each get a core
    (sharing one interpreter would put both on one GIL).

    It is private to this gateway: each start makes a new random key and secret, written
    (mode 0600) to the credentials file the emulator verifies every signature against, so
    anything else reaching its loopback port is refused; its control endpoints stay off.
    Its data folder (every layer, manifest and authorization token) is mode 0700.

    ECR has no call that cancels a layer upload: one whose session the gateway dropped
    (cancelled, or idle) would keep its parts on the emulator's disk until the emulator's
    upload lifetime ends. ``upload_lifetime`` (seconds) shortens that to what a session of
    the gateway can live, unless ``ECR_EMULATOR_UPLOAD_LIFETIME`` says otherwise."""

    def __init__(self, data_dir: Path, region: str, upload_lifetime: int | None = None) -> None:
        self._data_dir = data_dir
        self._region = region
        self._upload_lifetime = upload_lifetime
        self._process: subprocess.Popen[str] | None = None
        self.url = ""
        self.access_key_id = "AKIDEMBEDDED" + secrets.token_hex(6).upper()
        self.secret_access_key = secrets.token_urlsafe(32)

    def _write_credentials(self) -> Path:
        path = self._data_dir / CREDENTIALS_FILE
        partial = path.with_name(path.name + ".new")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            os.fchmod(out.fileno(), 0o600)  # a left-over file keeps its mode otherwise
            out.write(f"[gateway]\naws_access_key_id = {self.access_key_id}\n"
                      f"aws_secret_access_key = {self.secret_access_key}\n")
        os.replace(partial, path)
        return path

    def start(self) -> str:
        private_dir(self._data_dir)  # NotPrivate if another user owns it or it is a link
        credentials = self._write_credentials()
        env = emulator_environment(os.environ)
        if self._upload_lifetime is not None:
            env.setdefault(UPLOAD_LIFETIME_ENV, str(self._upload_lifetime))
        self._process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "emulator", "--listen", "127.0.0.1:0",
             "--data-dir", str(self._data_dir), "--region", self._region,
             "--credentials", str(credentials)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        assert self._process.stdout is not None and self._process.stderr is not None
        # Its lines are relayed through the gateway's logging: one format (json stays
        # json), one redaction, and its pipes never fill up.
        self._relay(self._process.stderr)
        for line in self._process.stdout:
            match = _READY.search(line)
            if match:
                self.url = match[1]
                self._relay(self._process.stdout)
                return self.url
        raise RuntimeError("the embedded ECR emulator exited before it was ready")

    @staticmethod
    def _relay(stream: IO[str]) -> None:
        def run() -> None:
            for line in stream:
                line = line.rstrip("\n")
                match = _EMULATOR_LINE.match(line)
                if match:
                    logging.getLogger(f"emulator.{match[2]}").log(
                        int(getattr(logging, match[1])), "%s", match[3])
                elif line:
                    logging.getLogger("emulator").info("%s", line)

        threading.Thread(target=run, name="emulator-log", daemon=True).start()

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

    setup(config.log_level, config.log_format, secret_values(config))


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything else starts: a port already in use is
    then one clear line, not an embedded emulator started and stopped for nothing."""
    family, _, _, _, address = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                                  flags=socket.AI_PASSIVE)[0]
    return socket.create_server(address[:2], family=family, backlog=1024)


def _unusable_folder(path: Path) -> str | None:
    """Why ``path`` cannot hold the gateway's data (None: it can), made if it is missing:
    checked before anything starts, so that a mistake there is one line, not a traceback
    from the first component that writes there."""
    if path.exists() and not path.is_dir():
        return "it is a file, not a folder"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return os.strerror(exc.errno) if exc.errno else str(exc)
    if not os.access(path, os.W_OK | os.X_OK):
        return "this user may not write there"
    return None


async def _run(config: Config, sock: socket.socket, tls: TlsFiles | None = None) -> None:
    tracing = Tracing.from_environ(os.environ, _version())
    app = build_app(config, tracing)
    # SIGTERM: stop accepting, give in-flight requests shutdown_grace_seconds, then cancel
    # them (an upload cut short keeps what it stored: the client resumes from its offset).
    # The grace is served by graceful_stop(); aiohttp's own timeout is only the last step.
    limits = config.limits
    # One count of connections for both ports: each takes a descriptor of this process.
    bounds = connection_bounds(config, raise_open_file_limit())
    options = server_options(max_header_bytes=limits.max_header_bytes,
                             max_headers=limits.max_headers,
                             header_timeout=limits.header_timeout_seconds)
    runner = OciAppRunner(app, access_log=None, handle_signals=False, bounds=bounds,
                          tls=tls.context if tls else None,
                          handshake_timeout=limits.header_timeout_seconds,
                          shutdown_timeout=min(config.shutdown_grace_seconds, 2.0), **options)
    await runner.setup()
    site = web.SockSite(runner, sock)  # TLS, if any, is the runner's
    await site.start()
    metrics_runner: web.AppRunner | None = None
    if config.metrics_listen is not None:
        from gateway.observability.metrics import metrics_app

        host, _, port_text = config.metrics_listen.rpartition(":")
        metrics_runner = OciAppRunner(metrics_app(app), access_log=None, handle_signals=False,
                                      bounds=bounds, **options)
        await metrics_runner.setup()
        await web.TCPSite(metrics_runner, host.strip("[]"), int(port_text)).start()
        log.info("metrics on http://%s/metrics", config.metrics_listen)
    tls_watch = asyncio.create_task(tls.watch()) if tls else None
    sockets = runner.addresses
    port = sockets[0][1] if sockets else config.listen_port
    scheme = "https" if tls else "http"
    log.info("ecr-gateway listening on %s://%s:%s (upstream %s)", scheme, config.listen_host,
             port, config.upstream.endpoint_url or f"AWS ECR in {config.upstream.region}")
    url = f"{scheme}://{config.listen_host}:{port}"
    _advertise(app, config, url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):  # before the ready line: a SIGTERM right
        loop.add_signal_handler(sig, stop.set)   # after it must stop the emulator too
    announce(f"ecr-gateway listening on {url}", url=url)
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


def embedded_emulator(config: Config) -> EmbeddedEmulator | None:
    """With ``upstream.mode: embedded``, the emulator to start, its fresh key already the
    upstream's."""
    if config.upstream.mode != "embedded":
        return None
    # A session idles out after idle_timeout_seconds and its spool is kept twice as long: an
    # ECR upload that received no part for longer is one the gateway dropped (or one whose
    # client sent less than a part in all that time).
    lifetime = max(1, math.ceil(2 * config.uploads.idle_timeout_seconds))
    emulator = EmbeddedEmulator(config.data_path / "emulator", config.upstream.region,
                                upload_lifetime=lifetime)
    config.upstream.access_key_id = emulator.access_key_id
    config.upstream.secret_access_key = emulator.secret_access_key
    return emulator


def start_embedded(config: Config,
                   emulator: EmbeddedEmulator | None = None) -> EmbeddedEmulator | None:
    """With ``upstream.mode: embedded``, start the emulator and point the upstream at it."""
    emulator = emulator or embedded_emulator(config)
    if emulator is not None:
        config.upstream.endpoint_url = emulator.start()
        log.info("embedded ECR emulator at %s (data in %s)", emulator.url,
                 config.data_path / "emulator")
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true" if emulator else "false")
    return emulator


def _advertise(app: web.Application, config: Config, url: str) -> None:
    """Tell the staged-blob registry how the other replicas reach this one."""
    peers = app.get(STAGED_PEERS)
    if peers is None:
        return
    if config.state.peer_url:
        peers.self_url = config.state.peer_url.rstrip("/")
    elif config.listen_host not in ("0.0.0.0", "::", ""):
        peers.self_url = url
    else:
        log.info("state.peer_url is not set and the listen address is a wildcard: blobs "
                 "staged here are read through this replica only")


def run_from_args(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config, overrides={"listen": args.listen,
                                                     "data_dir": args.data_dir})
    except ConfigError as exc:
        print(f"ecr-gateway: bad configuration: {exc.located()}", file=sys.stderr)
        return 2
    missing = missing_files(config)
    if missing:
        print(f"ecr-gateway: refusing to start: {'; '.join(missing)}", file=sys.stderr)
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
    address = f"{config.listen_host}:{config.listen_port}"
    try:
        sock = _bind(config.listen_host, config.listen_port)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        if exc.errno == errno.EADDRINUSE:
            reason += (" (another process listens there, perhaps a gateway already running:"
                       " stop it, or choose another address with --listen or listen:)")
        print(f"ecr-gateway: cannot listen on {address}: {reason}", file=sys.stderr)
        return 1
    # Absolute from here on: every log line and every component names the same folder,
    # whatever the working directory of whoever reads the logs.
    config.data_dir = str(config.data_path.resolve())
    unusable = _unusable_folder(config.data_path)
    if unusable is not None:
        sock.close()
        print(f"ecr-gateway: cannot use data_dir {config.data_dir}: {unusable} (choose "
              "another folder with --data-dir or data_dir:)", file=sys.stderr)
        return 2
    prepared = embedded_emulator(config)  # before logging: its secret is then redacted
    _setup_logging(config)
    for warning in exposure_warnings:
        # a banner of three lines (a log message is one line, its breaks escaped)
        for line in ("!" * 78, warning, "!" * 78):
            log.warning("%s", line)
    log.info("data directory: %s", config.data_path)
    try:
        emulator = start_embedded(config, prepared)
    except NotPrivate as exc:
        sock.close()
        print(f"ecr-gateway: refusing to start: data_dir: {exc}: the embedded emulator's "
              "data there would not be private", file=sys.stderr)
        return 2
    try:
        asyncio.run(_run(config, sock, tls))
    except ConfigError as exc:  # found while building the application (a file unreadable)
        print(f"ecr-gateway: refusing to start: {exc}", file=sys.stderr)
        return 2
    finally:
        sock.close()
        if emulator:
            emulator.stop()
    return 0
