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
``ECR_EMULATOR_*`` limits (see gateway/emulator/settings.py), e.g.
``{"ECR_EMULATOR_DOWNLOAD_URL_EXPIRES": "1"}``; ``args`` adds command-line arguments.
``pid`` and ``peak_rss()`` (VmHWM) are there for resource checks.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session

READY = re.compile(r"ECR emulator listening on (http://\S+)")
ACCOUNT_ID = "123456789012"
REGION = "us-east-1"
START_TIMEOUT = 30.0


class EmulatorProcess:
    def __init__(self, data_dir: Path, *, account_id: str = ACCOUNT_ID, region: str = REGION,
                 env: dict[str, str] | None = None, args: Sequence[str] = ()) -> None:
        self.data_dir = Path(data_dir)
        self.account_id = account_id
        self.region = region
        self.env = dict(env or {})
        self.args = list(args)
        self.port = 0
        self.url = ""
        self.log_path = self.data_dir.with_name(self.data_dir.name + ".log")
        self._process: subprocess.Popen[str] | None = None

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
        status = Path(f"/proc/{self.pid}/status").read_text()
        match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
        assert match is not None, status
        return int(match[1]) * 1024

    def requests(self, action: str | None = None) -> list[dict[str, Any]]:
        """The request log (optionally of one action), oldest first."""
        query = f"?action={action}" if action else ""
        with urllib.request.urlopen(f"{self.url}/_emulator/requests{query}", timeout=10) as r:
            entries: list[dict[str, Any]] = json.load(r)["requests"]
        return entries

    def clear_requests(self) -> None:
        self._admin("DELETE", "requests")

    def inject_fault(self, action: str, error: str, *, count: int = 1,
                     status: int | None = None, message: str | None = None) -> None:
        """Make the next ``count`` calls of ``action`` ("*": any) fail with AWS error ``error``
        (e.g. ThrottlingException, ServerException); see gateway/emulator/faults.py."""
        fault: dict[str, Any] = {"action": action, "error": error, "count": count}
        if status is not None:
            fault["status"] = status
        if message is not None:
            fault["message"] = message
        self._admin("POST", "faults", fault)

    def clear_faults(self) -> None:
        self._admin("DELETE", "faults")

    def _admin(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.url}/_emulator/{path}", data=data,
                                         method=method)
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


@contextlib.asynccontextmanager
async def ecr_client(url: str, *, region: str = REGION, access_key_id: str = "AKIDEXAMPLE",
                     **config: Any) -> AsyncIterator[Any]:
    """An aiobotocore ``ecr`` client for ``url``; ``config`` goes to botocore's Config
    (e.g. ``parameter_validation=False``, ``retries={"total_max_attempts": 1}``)."""
    async with _session().create_client(
        "ecr", region_name=region, endpoint_url=url, aws_access_key_id=access_key_id,
        aws_secret_access_key="secret", config=AioConfig(**config) if config else None,
    ) as client:
        yield client
