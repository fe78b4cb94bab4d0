"""The processes a benchmark run starts, and what /proc says about them.

* the reference registry: CNCF distribution (Debian ``docker-registry``), filesystem storage,
  the Debian package's own configuration less its htpasswd auth (the gateway runs without
  auth too), on a free loopback port;
* the ECR emulator and the gateway as separate processes (tests/support starts them the
  way the test suite does), or ``ecr-gateway serve`` with its embedded emulator.

CPU time is read from /proc/PID/stat (utime + stime) and memory from /proc/PID/status, for
one process alone: the gateway's figures never include the emulator's.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from tests.support.emulator import EmulatorProcess, signing_key

_TICKS = os.sysconf("SC_CLK_TCK")

__all__ = ["EmulatorProcess", "Gateway", "ReferenceRegistry", "cpu_seconds", "free_port",
           "peak_rss", "reset_peak_rss", "rss"]

_GATEWAY_READY = re.compile(r"ecr-gateway listening on (http://\S+)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat from its third field on (the name may hold spaces)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process has used so far."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime (fields 14, 15)


def first_touches(pid: int) -> tuple[int, float]:
    """The process's minor page faults so far (each a page it touched for the first time
    since the kernel gave it) and its system CPU seconds, which include what they cost."""
    fields = _stat_fields(pid)
    return int(fields[7]), int(fields[12]) / _TICKS  # minflt, stime (fields 10, 15)


def children_cpu_seconds() -> float:
    """User + system CPU-s of this process's children that have ended (skopeo's runs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _status_kib(pid: int, key: str) -> int:
    match = re.search(rf"^{key}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    return int(match[1]) if match else 0


def rss(pid: int) -> int:
    """Resident set size now, in bytes."""
    return _status_kib(pid, "VmRSS") * 1024


def peak_rss(pid: int) -> int:
    """Peak resident set size (VmHWM) in bytes."""
    return _status_kib(pid, "VmHWM") * 1024


def reset_peak_rss(pid: int) -> bool:
    """Restart VmHWM from the current RSS (Linux: ``5`` into /proc/PID/clear_refs)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class ReferenceRegistry:
    """``docker-registry serve`` on a free loopback port with filesystem storage."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.binary = shutil.which("docker-registry") or "docker-registry"
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def config(self) -> dict[str, Any]:
        return {
            "version": 0.1,
            "log": {"fields": {"service": "registry"}},
            "storage": {"cache": {"blobdescriptor": "inmemory"},
                        "filesystem": {"rootdirectory": str(self.root / "data")},
                        "delete": {"enabled": True}},
            "http": {"addr": f"127.0.0.1:{self.port}",
                     "headers": {"X-Content-Type-Options": ["nosniff"]}},
        }

    def version(self) -> str:
        """e.g. "distribution 2.8.2+ds1" (from ``docker-registry --version``)."""
        out = subprocess.run([self.binary, "--version"], capture_output=True, text=True,
                             check=False).stdout
        match = re.search(r"distribution v?(\S+)", out)
        return f"distribution {match[1]}" if match else out.strip()

    def start(self) -> ReferenceRegistry:
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        config = self.root / "config.yml"
        config.write_text(yaml.safe_dump(self.config()))
        with open(self.root / "registry.log", "wb") as log:
            self.process = subprocess.Popen([self.binary, "serve", str(config)],
                                            stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_http(f"{self.url}/v2/")
        except OSError:
            self.stop()
            raise RuntimeError("the reference registry did not start: "
                               + (self.root / "registry.log").read_text()[-2000:]) from None
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


class Gateway:
    """``ecr-gateway serve`` as a process: on a given emulator (``upstream_url``), or with
    its embedded emulator when there is none. Its log goes to a file, as a deployment's
    would, not through a pipe that this process would have to drain."""

    def __init__(self, root: Path, config: dict[str, Any] | None = None,
                 upstream_url: str | None = None) -> None:
        self.root = root
        self.config = dict(config or {})
        if upstream_url:
            key, secret = signing_key(upstream_url, "AKIDBENCHGATEWAY")
            self.config["upstream"] = {"mode": "aws", "endpoint_url": upstream_url,
                                       "access_key_id": key, "secret_access_key": secret}
        self.url = ""
        self.process: subprocess.Popen[str] | None = None

    @property
    def host(self) -> str:
        return self.url.removeprefix("http://")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def embedded_emulator_pid(self) -> int | None:
        children = child_pids(self.pid)
        return children[0] if children else None

    def start(self, timeout: float = 60.0) -> Gateway:
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "config.yaml"
        config.write_text(yaml.safe_dump(self.config))
        log = open(self.root / "gateway.log", "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config),
             "--listen", "127.0.0.1:0", "--data-dir", str(self.root / "data")],
            stdout=subprocess.PIPE, stderr=log, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        log.close()
        found: list[str] = []
        ready = threading.Event()
        stdout = self.process.stdout
        assert stdout is not None

        def drain() -> None:
            for line in stdout:
                match = _GATEWAY_READY.search(line)
                if match and not found:
                    found.append(match[1])
                    ready.set()
            ready.set()

        threading.Thread(target=drain, daemon=True).start()
        if not ready.wait(timeout) or not found:
            self.stop()
            raise RuntimeError("the gateway did not start: "
                               + (self.root / "gateway.log").read_text()[-3000:])
        self.url = found[0]
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (the embedded emulator of ``ecr-gateway serve``)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]
