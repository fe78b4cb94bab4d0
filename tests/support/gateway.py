"""Run the gateway as a real process (``python -m gateway.cli serve``) for tests.

``GatewayProcess(data_dir, config)`` writes ``config`` as YAML, starts the gateway on a free
loopback port and parses its ready line. ``upstream`` may point it at an emulator started by
the test (``upstream_url``); with neither it runs on its embedded emulator. The gateway signs
upstream calls as ``AKIDGATEWAYTEST`` with the secret that emulator holds for it (see
tests/support/emulator.py); ``use_upstream_key(key)`` switches to another of its keys.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from tests.support.emulator import signing_key

# text: the line as is; log_format json: the same words in the object's message
_READY = re.compile(r"ecr-gateway listening on (https?://[^\s\"]+)")


class GatewayProcess:
    def __init__(self, data_dir: Path, config: dict[str, Any] | None = None,
                 upstream_url: str | None = None, env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.cwd = cwd  # where the process starts (``python -m`` imports from there first)
        self.config = dict(config or {})
        self.upstream_url = upstream_url
        if upstream_url:
            upstream = dict(self.config.get("upstream", {}))
            upstream.update({"mode": "aws", "endpoint_url": upstream_url})
            self.config["upstream"] = upstream
            self.use_upstream_key("AKIDGATEWAYTEST")
        self.env = env or {}
        self.url = ""
        self.port = 0
        self.process: subprocess.Popen[str] | None = None
        self.log_lines: list[str] = []
        self.stdout_lines: list[str] = []
        self._log_thread: threading.Thread | None = None

    def use_upstream_key(self, access_key_id: str) -> None:
        """Sign upstream calls with ``access_key_id`` (a key of the upstream emulator)."""
        assert self.upstream_url, "only for a gateway in front of a test's emulator"
        key, secret = signing_key(self.upstream_url, access_key_id)
        self.config["upstream"].update({"access_key_id": key, "secret_access_key": secret})

    @property
    def host(self) -> str:
        """host:port, as docker and skopeo name a registry."""
        return self.url.split("://", 1)[-1]

    def start(self, timeout: float = 30.0) -> GatewayProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config_path = self.data_dir / "config.yaml"
        config_path.write_text(yaml.safe_dump(self.config))
        listen = f"127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config_path),
             "--listen", listen, "--data-dir", str(self.data_dir)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=self.cwd)
        ready = threading.Event()
        assert self.process.stdout is not None and self.process.stderr is not None

        def read_stdout(stream: Any) -> None:
            for line in stream:
                self.stdout_lines.append(line.rstrip("\n"))
                match = _READY.search(line)
                if match and not ready.is_set():
                    self.url = match[1]
                    self.port = int(self.url.rsplit(":", 1)[1])
                    ready.set()

        def read_stderr(stream: Any) -> None:
            for line in stream:
                self.log_lines.append(line.rstrip("\n"))

        threading.Thread(target=read_stdout, args=(self.process.stdout,), daemon=True).start()
        self._log_thread = threading.Thread(target=read_stderr, args=(self.process.stderr,),
                                            daemon=True)
        self._log_thread.start()
        deadline = time.monotonic() + timeout
        while not ready.wait(0.1):  # a process that exits (refusing to start) ends the wait
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("gateway did not start:\n"
                                   + "\n".join(self.log_lines[-40:]))
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._read_log_to_end()

    def kill9(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._read_log_to_end()

    def _read_log_to_end(self) -> None:
        """Once the process is gone, wait for its last log lines: the reader thread may still
        be behind the pipe, and a test reads ``log_lines`` right after the stop."""
        if self._log_thread is not None and self.process is not None and (
                self.process.poll() is not None):
            self._log_thread.join(timeout=10)

    def restart(self) -> GatewayProcess:
        """Stop and start again on the same port and data dir."""
        self.stop()
        return self.start()

    async def logged(self, text: str, seconds: float = 10.0) -> bool:
        """Whether the gateway logs a line holding ``text`` within ``seconds`` (the log
        arrives through a pipe, a little after the request that caused it)."""
        for _ in range(max(1, int(seconds / 0.05))):
            if any(text in line for line in self.log_lines):
                return True
            await asyncio.sleep(0.05)
        return False

    def access_log(self) -> list[dict[str, Any]]:
        import json

        entries = []
        for line in self.log_lines:
            if " gateway.access " in line:
                entries.append(json.loads(line.split(" gateway.access ", 1)[1]))
        return entries

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
