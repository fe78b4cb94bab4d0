"""The ECR emulator as a real process, for tests of anything that talks to ECR.

``EmulatorProcess(data_dir)`` runs ``python -m gateway.cli emulator`` on a loopback port:

    emulator = EmulatorProcess(tmp_path / "ecr")
    emulator.start()                 # port 0 the first time; returns and sets .url
    async with ecr_client(emulator.url) as ecr:
        await ecr.create_repository(repositoryName="team/app")
    emulator.restart()               # same data dir, same port, so .url stays valid
    emulator.kill9()                 # a crash: SIGKILL, no cleanup
    emulator.start()
    emulator.stop()                  # SIGTERM, waits for a clean exit

It is also a context manager (``with EmulatorProcess(d) as emu:`` starts and stops it).
``requests()`` / ``clear_requests()`` read and reset the emulator's request log, one dict per
ECR API call with the keys ts, action, repository, outcome ("ok" or the exception name),
status, access_key_id, region (and ``LayerDownload`` entries for presigned-URL fetches).
``inject_fault(action, error)`` makes the next call fail with that AWS error. ``env`` sets
``ECR_EMULATOR_*`` limits (see ecr_emulator/settings.py), e.g.
``{"ECR_EMULATOR_DOWNLOAD_URL_EXPIRES": "1"}``; ``args`` adds command-line arguments.
``pid`` and ``peak_rss()`` (VmHWM) are there for resource checks.

The emulator runs as AWS does: with a credentials file (``--credentials``) holding a key and
secret generated per instance (``access_key_id`` / ``secret_access_key``), so every request
is SigV4-verified. ``ecr_client(url)`` signs with them; a test that names another access key
(``ecr_client(url, access_key_id="AKIDBOB")``, ``secret_for(url, key)``) gets that key added
to the file with a fresh secret (the emulator re-reads the file for a key it does not know),
unless it passes ``secret_access_key`` itself. ``credentials=False`` runs an open emulator.
The control endpoints (request log, faults, policies) are on (``--admin``; ``admin=False``
turns them off) and the helpers here sign their calls with the instance's key.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.support import processes

READY = re.compile(r"ECR emulator listening on (http://\S+)")
ACCOUNT_ID = "123456789012"
REGION = "us-east-1"
START_TIMEOUT = 30.0
# Clients of an address no running emulator has (another ECR double): unchecked there.
FALLBACK_KEY, FALLBACK_SECRET = "AKIDEXAMPLE", "secret"
_RUNNING: dict[str, EmulatorProcess] = {}  # by URL, for the clients built from a URL


def new_access_key(prefix: str = "AKIDTEST") -> str:
    return prefix + secrets.token_hex(6).upper()


class EmulatorProcess:
    def __init__(self, data_dir: Path, *, account_id: str = ACCOUNT_ID, region: str = REGION,
                 env: dict[str, str] | None = None, args: Sequence[str] = (),
                 credentials: bool = True, admin: bool = True) -> None:
        self.data_dir = Path(data_dir)
        self.account_id = account_id
        self.region = region
        self.env = dict(env or {})
        self.args = list(args)
        self.port = 0
        self.url = ""
        self.log_path = self.data_dir.with_name(self.data_dir.name + ".log")
        self.credentials = credentials
        self.admin = admin
        self.credentials_path = self.data_dir.with_name(self.data_dir.name + ".credentials")
        self.access_key_id = new_access_key("AKIDEMULATOR")
        self.secret_access_key = secrets.token_urlsafe(30)
        # access key id -> (secret, session token, expiration, account id)
        self._keys: dict[str, tuple[str, str | None, str | None, str | None]] = {
            self.access_key_id: (self.secret_access_key, None, None, None)}
        self._process: subprocess.Popen[str] | None = None

    def add_key(self, access_key_id: str, secret_access_key: str | None = None, *,
                session_token: str | None = None, expiration: str | None = None,
                account_id: str | None = None) -> str:
        """Make ``access_key_id`` one of the emulator's keys (a temporary one with
        ``session_token``, expiring at the ISO 8601 ``expiration``; one of another account
        with ``account_id``); returns its secret."""
        secret = secret_access_key or secrets.token_urlsafe(30)
        self._keys[access_key_id] = (secret, session_token, expiration, account_id)
        self._write_credentials()
        return secret

    def remove_key(self, access_key_id: str) -> None:
        """Delete ``access_key_id`` as IAM deletes a key. The emulator looks at its file at
        most a second after the last look: until then it may still take this one."""
        self._keys.pop(access_key_id, None)
        self._write_credentials()

    def secret_for(self, access_key_id: str) -> str:
        """The secret of ``access_key_id``, added to the emulator's keys if it is new."""
        known = self._keys.get(access_key_id)
        return known[0] if known else self.add_key(access_key_id)

    def aws_env(self, access_key_id: str | None = None) -> dict[str, str]:
        """AWS_* variables for a process (the aws CLI, a gateway) signing with a key."""
        key = access_key_id or self.access_key_id
        return {"AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": self.secret_for(key)}

    def upstream_env(self, access_key_id: str) -> dict[str, str]:
        """ECR_GATEWAY_UPSTREAM__* variables that make a gateway sign with ``access_key_id``."""
        return {"ECR_GATEWAY_UPSTREAM__ACCESS_KEY_ID": access_key_id,
                "ECR_GATEWAY_UPSTREAM__SECRET_ACCESS_KEY": self.secret_for(access_key_id)}

    def _write_credentials(self) -> None:
        lines = []
        for number, (key, (secret, token, expiration, account)) in enumerate(
                self._keys.items()):
            lines += [f"[key{number}]", f"aws_access_key_id = {key}",
                      f"aws_secret_access_key = {secret}"]
            lines += [f"aws_session_token = {token}"] if token else []
            lines += [f"expiration = {expiration}"] if expiration else []
            lines += [f"aws_account_id = {account}"] if account else []
            lines.append("")
        self.credentials_path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.credentials_path.with_name(self.credentials_path.name + ".new")
        partial.write_text("\n".join(lines))
        partial.chmod(0o600)
        partial.replace(self.credentials_path)  # the emulator never reads half a file

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("the emulator is not running")
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> str:
        """Start on ``self.port`` (0: a free one, remembered for restarts); return the URL."""
        if self.running:
            raise RuntimeError("the emulator is already running")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "gateway.cli", "emulator",
                   "--listen", f"127.0.0.1:{self.port}", "--data-dir", str(self.data_dir),
                   "--account-id", self.account_id, "--region", self.region, *self.args]
        if self.credentials:
            self._write_credentials()
            command += ["--credentials", str(self.credentials_path)]
        if self.admin:
            command.append("--admin")
        with open(self.log_path, "a") as log:
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True,
                                       env={**os.environ, **self.env})
        self._process = process
        ready = threading.Event()
        found: list[str] = []

        def drain() -> None:
            # Read stdout to the end so that the pipe can never fill up and block the process.
            assert process.stdout is not None
            for line in process.stdout:
                match = READY.search(line)
                if match and not found:
                    found.append(match[1])
                    ready.set()
            ready.set()

        threading.Thread(target=drain, daemon=True).start()
        if not ready.wait(START_TIMEOUT) or not found:
            self.kill9()
            raise RuntimeError(f"the emulator did not start; see {self.log_path}:\n"
                               f"{self.log_path.read_text()[-3000:]}")
        self.url = found[0]
        self.port = int(self.url.rsplit(":", 1)[1])
        _RUNNING[self.url] = self
        return self.url

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM and wait; returns the exit code (None if it was not running)."""
        process = self._process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._process = None
        return process.returncode

    def kill9(self) -> None:
        """SIGKILL: the process dies at once, as in a crash or power cut of the process."""
        process = self._process
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
            process.wait()
        self._process = None

    def restart(self) -> str:
        """Stop (SIGTERM) if running, then start on the same data dir and port."""
        self.stop()
        return self.start()

    def peak_rss(self) -> int:
        """The process's peak resident set size in bytes (VmHWM)."""
        return processes.peak_rss(self.pid)

    def requests(self, action: str | None = None) -> list[dict[str, Any]]:
        """The request log (optionally of one action), oldest first."""
        query = f"?{urllib.parse.urlencode({'action': action})}" if action else ""
        entries: list[dict[str, Any]] = self.control("GET", f"requests{query}")["requests"]
        return entries

    def clear_requests(self) -> None:
        self.control("DELETE", "requests")

    def inject_fault(self, action: str, error: str, *, count: int = 1,
                     status: int | None = None, message: str | None = None) -> None:
        """Make the next ``count`` calls of ``action`` ("*": any) fail with AWS error ``error``
        (e.g. ThrottlingException, ServerException); see ecr_emulator/faults.py."""
        fault: dict[str, Any] = {"action": action, "error": error, "count": count}
        if status is not None:
            fault["status"] = status
        if message is not None:
            fault["message"] = message
        self.control("POST", "faults", fault)

    def clear_faults(self) -> None:
        self.control("DELETE", "faults")

    def admin_headers(self, method: str, url: str, data: bytes | None = None) -> dict[str, str]:
        """The headers that sign a control request (see ecr_emulator/admin.py)."""
        signed = AWSRequest(method=method, url=url, data=data or b"")
        if self.credentials:
            SigV4Auth(Credentials(self.access_key_id, self.secret_access_key), "emulator",
                      self.region).add_auth(signed)
        return dict(signed.headers.items())

    def add_policies(self, policies: dict[str, list[dict[str, Any]]]) -> None:
        """Give each key its IAM-like statements, the other keys' policies kept."""
        held = self.control("GET", "policies")["policies"]
        self.control("PUT", "policies", {**held, **policies})

    def control(self, method: str, path: str, body: Any = None) -> Any:
        """Call a control endpoint (``path`` under /_emulator/), signed; its JSON answer."""
        data = None if body is None else json.dumps(body).encode()
        url = f"{self.url}/_emulator/{path}"
        request = urllib.request.Request(url, data=data, method=method,
                                         headers=self.admin_headers(method, url, data))
        with urllib.request.urlopen(request, timeout=10) as r:
            return json.load(r)

    def __enter__(self) -> EmulatorProcess:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


@functools.cache
def _session() -> AioSession:
    # One session for every client: its loader parses the ECR model once (~0.2 s each time).
    return get_session()


def emulator_at(url: str) -> EmulatorProcess | None:
    """The EmulatorProcess started at ``url`` in this test process, if any."""
    return _RUNNING.get(url.rstrip("/"))


def signing_key(url: str, access_key_id: str | None = None,
                secret_access_key: str | None = None) -> tuple[str, str]:
    """The key and secret to sign requests to ``url`` with: the emulator's own key by
    default; a named key is added to that emulator's keys unless its secret is given."""
    emulator = emulator_at(url)
    if secret_access_key is not None:
        return access_key_id or FALLBACK_KEY, secret_access_key
    if emulator is None or not emulator.credentials:
        return access_key_id or FALLBACK_KEY, FALLBACK_SECRET
    key = access_key_id or emulator.access_key_id
    return key, emulator.secret_for(key)


def signed_headers(url: str, body: bytes, headers: dict[str, str], *, method: str = "POST",
                   service: str = "ecr", region: str = REGION,
                   access_key_id: str | None = None) -> dict[str, str]:
    """``headers`` plus the SigV4 ones for a hand-made request (input no SDK would send)."""
    key, secret = signing_key(url, access_key_id)
    request = AWSRequest(method=method, url=url, data=body, headers=headers)
    SigV4Auth(Credentials(key, secret), service, region).add_auth(request)
    return dict(request.headers.items())


@contextlib.asynccontextmanager
async def aws_client(service: str, url: str, *, region: str = REGION,
                     access_key_id: str | None = None, secret_access_key: str | None = None,
                     session_token: str | None = None, **config: Any) -> AsyncIterator[Any]:
    """An aiobotocore client of ``service`` for ``url``, signing as ``signing_key`` says."""
    key, secret = signing_key(url, access_key_id, secret_access_key)
    async with _session().create_client(
        service, region_name=region, endpoint_url=url, aws_access_key_id=key,
        aws_secret_access_key=secret, aws_session_token=session_token,
        config=AioConfig(**config) if config else None,
    ) as client:
        yield client


@contextlib.asynccontextmanager
async def ecr_client(url: str, *, region: str = REGION, access_key_id: str | None = None,
                     secret_access_key: str | None = None, session_token: str | None = None,
                     **config: Any) -> AsyncIterator[Any]:
    """An aiobotocore ``ecr`` client for ``url``; ``config`` goes to botocore's Config
    (e.g. ``parameter_validation=False``, ``retries={"total_max_attempts": 1}``)."""
    async with aws_client("ecr", url, region=region, access_key_id=access_key_id,
                          secret_access_key=secret_access_key, session_token=session_token,
                          **config) as client:
        yield client


async def replication_statuses(ecr: Any, repository: str, image_id: dict[str, str],
                               within: float = 20.0) -> list[dict[str, str]]:
    """DescribeImageReplicationStatus's statuses once no copy is IN_PROGRESS any more."""
    deadline = time.monotonic() + within
    while True:
        answer = await ecr.describe_image_replication_status(repositoryName=repository,
                                                             imageId=image_id)
        statuses: list[dict[str, str]] = answer["replicationStatuses"]
        if all(s["status"] != "IN_PROGRESS" for s in statuses) or time.monotonic() > deadline:
            return statuses
        await asyncio.sleep(0.05)


def writer_and_reader(emulator: EmulatorProcess) -> tuple[tuple[str, str], tuple[str, str]]:
    """Two new identities of ``emulator`` (access key id, secret), each allowed every ECR
    action: a writer and a reader whose cached views of one repository can differ."""
    run = secrets.token_hex(4).upper()
    writer = (f"AKIDWRITER{run}", f"secret-{secrets.token_hex(16)}")
    reader = (f"AKIDREADER{run}", f"secret-{secrets.token_hex(16)}")
    for key in (writer, reader):
        emulator.add_key(*key)
    policies: dict[str, Any] = emulator.control("GET", "policies")["policies"]
    allow_all = [{"Effect": "Allow", "Action": "ecr:*", "Resource": "*"}]
    emulator.control("PUT", "policies", {**policies, writer[0]: allow_all,
                                         reader[0]: allow_all})
    return writer, reader
