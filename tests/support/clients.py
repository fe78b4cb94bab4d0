"""Real OCI clients for end-to-end tests: dockerd, skopeo and containerd (ctr).

Each helper finds its binary through ``require_tool`` (under CI a missing client fails the
test instead of skipping it), keeps all of its state in its own temporary folder (data
root, sockets, credentials), runs every command with a timeout and puts the command's
stderr into the assertion message when it fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.conftest import require_tool

DEFAULT_TIMEOUT = 180.0


class CommandFailed(AssertionError):
    def __init__(self, cmd: Sequence[str], result: subprocess.CompletedProcess[str] | None,
                 note: str = "") -> None:
        self.cmd = list(cmd)
        self.result = result
        text = f"command {' '.join(self.cmd)!r} {note or 'failed'}"
        if result is not None:
            text += (f" (exit {result.returncode})\n--- stdout ---\n{_tail(result.stdout)}"
                     f"\n--- stderr ---\n{_tail(result.stderr)}")
        super().__init__(text)


def _tail(text: str | bytes | None, limit: int = 6000) -> str:
    if text is None:
        return ""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return text if len(text) <= limit else "…" + text[-limit:]


def run(cmd: Sequence[str], *, env: dict[str, str] | None = None,
        timeout: float = DEFAULT_TIMEOUT, check: bool = True,
        input: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a client command; on failure or timeout raise with its stdout and stderr."""
    full_env = {**os.environ, **(env or {})}
    try:
        result = subprocess.run(list(cmd), env=full_env, timeout=timeout, check=False,
                                capture_output=True, text=True, input=input, cwd=cwd)
    except subprocess.TimeoutExpired as exc:
        partial = subprocess.CompletedProcess(list(cmd), -9, _tail(exc.stdout), _tail(exc.stderr))
        raise CommandFailed(cmd, partial, f"timed out after {timeout:.0f}s") from None
    if check and result.returncode != 0:
        raise CommandFailed(cmd, result)
    return result


def free_port() -> int:
    """A loopback port nothing listens on (connections to it are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports nothing listens on: held together while they are
    chosen, so that two listeners started later never get the same one."""
    with contextlib.ExitStack() as held:
        socks = [held.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def _short_tmpdir(prefix: str) -> Path:
    # Unix socket paths are limited to 108 bytes: keep the state folders short.
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def _wait(predicate: Any, timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    text = _tail(log.read_text(errors="replace")) if log and log.exists() else ""
    raise AssertionError(f"{what} was not ready after {timeout:.0f}s\n{text}")


def stop_process(process: subprocess.Popen[bytes] | None, timeout: float = 20.0) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# -- skopeo ----------------------------------------------------------------------------------

class Skopeo:
    """``skopeo`` with its own credentials file and a permissive signature policy.

    Registries are plain HTTP: ``copy`` gets ``--src-tls-verify=false
    --dest-tls-verify=false``, the other commands ``--tls-verify=false``.
    """

    def __init__(self, workdir: Path) -> None:
        self.binary = require_tool("skopeo")
        workdir.mkdir(parents=True, exist_ok=True)
        self.auth_file = workdir / "auth.json"
        self.auth_file.write_text('{"auths":{}}')
        self.policy = workdir / "policy.json"
        self.policy.write_text('{"default":[{"type":"insecureAcceptAnything"}]}')
        self.env = {"REGISTRY_AUTH_FILE": str(self.auth_file)}

    def __call__(self, *args: str, timeout: float = DEFAULT_TIMEOUT,
                 check: bool = True) -> subprocess.CompletedProcess[str]:
        return run([self.binary, "--policy", str(self.policy), *args], env=self.env,
                   timeout=timeout, check=check)

    def copy(self, source: str, destination: str, *extra: str,
             timeout: float = DEFAULT_TIMEOUT) -> subprocess.CompletedProcess[str]:
        return self("copy", "--src-tls-verify=false", "--dest-tls-verify=false", *extra,
                    source, destination, timeout=timeout)

    def inspect(self, ref: str, *extra: str, raw: bool = False,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        flags = ["--raw"] if raw else []
        return self("inspect", "--tls-verify=false", *flags, *extra, ref, check=check)

    def inspect_json(self, ref: str, *extra: str) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.inspect(ref, *extra).stdout)
        return result

    def inspect_platform(self, ref: str, os_name: str, architecture: str) -> dict[str, Any]:
        """``inspect`` of the image an index offers for one platform (global override flags)."""
        result = run([self.binary, "--policy", str(self.policy), "--override-os", os_name,
                      "--override-arch", architecture, "inspect", "--tls-verify=false", ref],
                     env=self.env)
        answer: dict[str, Any] = json.loads(result.stdout)
        return answer

    def raw_manifest(self, ref: str) -> bytes:
        # --raw prints the registry's bytes untouched; text mode keeps them for JSON bodies.
        return self.inspect(ref, raw=True).stdout.encode()

    def list_tags(self, ref: str) -> list[str]:
        answer = json.loads(self("list-tags", "--tls-verify=false", ref).stdout)
        tags: list[str] = answer["Tags"]
        return tags

    def delete(self, ref: str) -> subprocess.CompletedProcess[str]:
        return self("delete", "--tls-verify=false", ref)


# -- dockerd ---------------------------------------------------------------------------------

class Docker:
    """The docker CLI bound to one daemon and one client config folder."""

    def __init__(self, binary: str, host: str, config_dir: Path) -> None:
        config_dir.mkdir(parents=True, exist_ok=True)
        self.binary = binary
        self.env = {"DOCKER_HOST": host, "DOCKER_CONFIG": str(config_dir)}

    def __call__(self, *args: str, timeout: float = DEFAULT_TIMEOUT,
                 check: bool = True) -> subprocess.CompletedProcess[str]:
        return run([self.binary, *args], env=self.env, timeout=timeout, check=check)


class Dockerd:
    """A private dockerd: own data root, exec root and socket, no networking, vfs storage.

    It starts its own containerd under the exec root; stopping dockerd stops that too.
    """

    def __init__(self, insecure_registries: Sequence[str] = (),
                 registry_mirrors: Sequence[str] = (), storage_driver: str = "vfs") -> None:
        self.dockerd = require_tool("dockerd")
        self.docker = require_tool("docker")
        self.insecure_registries = list(insecure_registries)
        self.registry_mirrors = list(registry_mirrors)  # URLs docker.io pulls go to first
        self.storage_driver = storage_driver  # overlay2 builds images far faster than vfs
        self.root = Path()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        return self.root / "docker.sock"

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    @property
    def log(self) -> Path:
        return self.root / "dockerd.log"

    def start(self, timeout: float = 60.0) -> Dockerd:
        self.root = _short_tmpdir("dkd-")
        (self.root / "data").mkdir()
        (self.root / "exec").mkdir()
        config = self.root / "daemon.json"
        config.write_text(json.dumps({"insecure-registries": self.insecure_registries,
                                      "registry-mirrors": self.registry_mirrors}))
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [self.dockerd, "--config-file", str(config),
                 "--data-root", str(self.root / "data"), "--exec-root", str(self.root / "exec"),
                 "-H", self.host, "--pidfile", str(self.root / "docker.pid"),
                 "--bridge=none", "--iptables=false", "--ip6tables=false",
                 f"--storage-driver={self.storage_driver}"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        probe = self.client(self.root / "probe-config")

        def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError("dockerd exited:\n" + _tail(self.log.read_text()))
            return probe("version", timeout=10, check=False).returncode == 0

        try:
            _wait(ready, timeout, "dockerd", self.log)
        except BaseException:
            self.stop()
            raise
        return self

    def client(self, config_dir: Path) -> Docker:
        """The docker CLI on this daemon with ``config_dir`` as its DOCKER_CONFIG."""
        return Docker(self.docker, self.host, config_dir)

    def log_tail(self) -> str:
        return _tail(self.log.read_text(errors="replace")) if self.log.exists() else ""

    def stop(self) -> None:
        stop_process(self.process, timeout=30)
        self.process = None
        if self.root != Path() and self.root.exists():
            # dockerd leaves its default network namespace bind-mounted under exec-root.
            for mount in sorted(self.root.rglob("netns/*"), reverse=True):
                subprocess.run(["umount", "-l", str(mount)], capture_output=True, check=False)
            shutil.rmtree(self.root, ignore_errors=True)


# -- containerd ------------------------------------------------------------------------------

_CONTAINERD_CONFIG = """\
version = 2
root = "{root}/root"
state = "{root}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "{root}/containerd.sock"

[ttrpc]
  address = "{root}/containerd.sock.ttrpc"
"""


class Containerd:
    """A private containerd (own root, state and sockets) and ``ctr`` bound to it."""

    def __init__(self) -> None:
        self.containerd = require_tool("containerd")
        self.ctr_binary = require_tool("ctr")
        self.root = Path()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> Path:
        return self.root / "containerd.sock"

    @property
    def hosts_dir(self) -> Path:
        return self.root / "certs.d"

    @property
    def log(self) -> Path:
        return self.root / "containerd.log"

    def start(self, timeout: float = 30.0) -> Containerd:
        self.root = _short_tmpdir("ctd-")
        config = self.root / "config.toml"
        config.write_text(_CONTAINERD_CONFIG.format(root=self.root))
        self.hosts_dir.mkdir()
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [self.containerd, "--config", str(config)],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

        def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError("containerd exited:\n" + _tail(self.log.read_text()))
            return (self.address.exists()
                    and self.ctr("version", timeout=10, check=False).returncode == 0)

        try:
            _wait(ready, timeout, "containerd", self.log)
        except BaseException:
            self.stop()
            raise
        return self

    def ctr(self, *args: str, timeout: float = DEFAULT_TIMEOUT,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        return run([self.ctr_binary, "--address", str(self.address), *args],
                   env={"CONTAINERD_ADDRESS": str(self.address)}, timeout=timeout, check=check)

    def mirror(self, upstream_host: str, mirror_url: str, fallback_url: str) -> Path:
        """hosts.toml for ``upstream_host``: pull/resolve through ``mirror_url`` first, then
        ``fallback_url`` as the server."""
        folder = self.hosts_dir / upstream_host
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "hosts.toml"
        path.write_text(f'server = "{fallback_url}"\n\n'
                        f'[host."{mirror_url}"]\n'
                        f'  capabilities = ["pull", "resolve"]\n')
        return path

    def content(self, digest: str) -> bytes:
        """A blob from the content store, as bytes."""
        result = subprocess.run([self.ctr_binary, "--address", str(self.address),
                                 "content", "get", digest],
                                capture_output=True, timeout=60, check=False)
        if result.returncode != 0:
            raise AssertionError(f"ctr content get {digest} failed: {_tail(result.stderr)}")
        return result.stdout

    def log_tail(self) -> str:
        return _tail(self.log.read_text(errors="replace")) if self.log.exists() else ""

    def stop(self) -> None:
        stop_process(self.process)
        self.process = None
        if self.root != Path() and self.root.exists():
            # Unpacked snapshots may hold read-only folders; best effort.
            shutil.rmtree(self.root, ignore_errors=True)
