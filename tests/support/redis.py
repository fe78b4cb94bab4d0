"""Private Redis deployments for tests, all on 127.0.0.1 with their own ports and folders and
no persistence.

    with RedisServer(tmp_path / "redis") as server:
        server.url            # redis://127.0.0.1:PORT/0
    with RedisSentinelGroup(tmp_path / "ha") as group:   # master, replica, 3 Sentinels
        group.url             # redis+sentinel://127.0.0.1:S1,.../mymaster
        group.failover()      # SENTINEL FAILOVER, back once the replica is master
    with RedisClusterGroup(tmp_path / "cluster") as cluster:  # 3 masters
        cluster.url           # redis+cluster://127.0.0.1:P1,...
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self

from tests.conftest import require_tool
from tests.support.clients import free_port, stop_process


class SharedRedis(Protocol):
    """Any of the deployments below, as the gateway is pointed at it."""

    @property
    def url(self) -> str: ...


class RedisServer:
    def __init__(self, folder: Path, password: str | None = None,
                 extra: Sequence[str] = (), config: Sequence[str] = ()) -> None:
        self.binary = require_tool("redis-server")
        self.folder = Path(folder)
        self.password = password  # requirepass: clients must AUTH
        self.extra = list(extra)  # more redis-server options
        # A deployment's own arguments (its config file, then options), first: the port,
        # address and folder given here come after them and win.
        self.config = list(config)
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 15.0) -> RedisServer:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()  # a restart keeps the port
        with open(self.folder / "redis.log", "ab") as log:
            self.process = subprocess.Popen(
                [self.binary, *self.config, "--port", str(self.port), "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "no", "--dir", str(self.folder),
                 "--protected-mode", "yes",
                 *(["--requirepass", self.password] if self.password else []), *self.extra],
                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("redis-server exited:\n"
                                   + (self.folder / "redis.log").read_text())
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    auth = f"AUTH {self.password}\r\n".encode() if self.password else b""
                    sock.sendall(auth + b"PING\r\n")
                    reply = sock.recv(64)
                    # NOAUTH: up, with a password from its config file
                    if b"+PONG" in reply or reply.startswith(b"-NOAUTH"):
                        return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("redis-server did not answer PING")

    def stop(self) -> None:
        stop_process(self.process, timeout=10)
        self.process = None

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def redis_cli(port: int, *args: str) -> str:
    """redis-cli against 127.0.0.1:``port``, its output as text."""
    done = subprocess.run([require_tool("redis-cli"), "-h", "127.0.0.1", "-p", str(port), *args],
                          capture_output=True, text=True, timeout=30, check=True)
    return done.stdout.strip()


def _wait(what: str, ready: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)


class _Processes:
    """Several processes started together: stopped together, also when one fails to start."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RedisSentinelGroup(_Processes):
    """A master, one replica and ``sentinels`` Sentinels (``redis-server --sentinel``)
    watching them as ``service``, failing over one second after the master stops answering."""

    def __init__(self, folder: Path, sentinels: int = 3, service: str = "mymaster") -> None:
        self.folder = Path(folder)
        self.service = service
        self.master = RedisServer(self.folder / "master",
                                  extra=["--repl-diskless-sync", "yes",
                                         "--repl-diskless-sync-delay", "0"])
        self.replica = RedisServer(self.folder / "replica")
        self.sentinel_ports = [free_port() for _ in range(sentinels)]
        self.sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        nodes = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{nodes}/{self.service}"

    def master_port(self) -> int:
        answer = redis_cli(self.sentinel_ports[0], "SENTINEL", "get-master-addr-by-name",
                           self.service)
        return int(answer.split()[-1])

    def start(self) -> Self:
        self.master.start()
        self.replica.extra = ["--replicaof", "127.0.0.1", str(self.master.port)]
        self.replica.start()
        _wait("the replica to sync", lambda: "master_link_status:up" in redis_cli(
            self.replica.port, "INFO", "replication"))
        quorum = len(self.sentinel_ports) // 2 + 1
        for index, port in enumerate(self.sentinel_ports):
            folder = self.folder / f"sentinel{index}"
            folder.mkdir(parents=True, exist_ok=True)
            conf = folder / "sentinel.conf"  # Sentinel rewrites it: one each
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {folder}\n"
                f"sentinel monitor {self.service} 127.0.0.1 {self.master.port} {quorum}\n"
                f"sentinel down-after-milliseconds {self.service} 1000\n"
                f"sentinel failover-timeout {self.service} 5000\n"
                f"sentinel parallel-syncs {self.service} 1\n")
            with open(folder / "sentinel.log", "ab") as log:
                self.sentinels.append(subprocess.Popen(
                    [self.master.binary, str(conf), "--sentinel"], stdout=log,
                    stderr=subprocess.STDOUT))
        for port in self.sentinel_ports:
            _wait("the Sentinels to see the replica", lambda p=port: _answers(p) and str(
                self.replica.port) in redis_cli(p, "SENTINEL", "replicas", self.service))
        return self

    def failover(self, *, kill: bool = False) -> None:
        """Make the replica the master: ``SENTINEL FAILOVER``, or kill the master outright
        (SIGKILL: what it had not yet sent to the replica is lost). Returns once the
        Sentinels name the new master, it takes writes, and the old one (restarted if it was
        killed) replicates it again, ready for the next failover."""
        old = self.master_port()
        server = self.master if self.master.port == old else self.replica
        if kill:
            assert server.process is not None
            server.process.kill()
            server.process.wait()
        else:
            redis_cli(self.sentinel_ports[0], "SENTINEL", "FAILOVER", self.service)
        _wait("the failover", lambda: all(
            _master_of(port, self.service) not in (None, old) for port in self.sentinel_ports))
        new = self.master_port()
        _wait("the new master", lambda: "role:master" in redis_cli(new, "INFO", "replication"))
        # Sentinel turns the old master into a replica in its own time (seconds): done here
        # at once, as it would.
        if kill:
            server.extra = ["--replicaof", "127.0.0.1", str(new)]
            server.start()
        else:
            redis_cli(old, "REPLICAOF", "127.0.0.1", str(new))
        _wait("the old master to replicate the new one", lambda: "master_link_status:up" in
              redis_cli(old, "INFO", "replication"))

    def stop(self) -> None:
        for process in self.sentinels:
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=10)
        self.sentinels = []
        self.replica.stop()
        self.master.stop()


def _answers(port: int) -> bool:
    try:
        return redis_cli(port, "PING") == "PONG"
    except subprocess.CalledProcessError:
        return False


def _master_of(sentinel_port: int, service: str) -> int | None:
    try:
        answer = redis_cli(sentinel_port, "SENTINEL", "get-master-addr-by-name", service)
    except subprocess.CalledProcessError:
        return None
    return int(answer.split()[-1]) if answer else None


class RedisClusterGroup(_Processes):
    """A Redis Cluster of ``masters`` masters (no replicas), slots spread by redis-cli."""

    def __init__(self, folder: Path, masters: int = 3) -> None:
        self.folder = Path(folder)
        self.nodes: list[RedisServer] = []
        for index in range(masters):
            node_dir = self.folder / f"node{index}"
            self.nodes.append(RedisServer(node_dir, extra=[
                "--cluster-enabled", "yes", "--cluster-port", str(free_port()),
                "--cluster-config-file", str(node_dir / "nodes.conf"),
                "--cluster-node-timeout", "2000"]))

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def start(self) -> Self:
        for node in self.nodes:
            node.start()
        redis_cli(self.nodes[0].port, "--cluster", "create",
                  *(f"127.0.0.1:{n.port}" for n in self.nodes), "--cluster-replicas", "0",
                  "--cluster-yes")
        for node in self.nodes:
            _wait("the cluster", lambda n=node: "cluster_state:ok" in redis_cli(
                n.port, "CLUSTER", "INFO"))
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
