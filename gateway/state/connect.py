"""How a replica reaches the shared Redis that ``state.redis_url`` names, with or without a
single point of failure:

- ``redis://[:password@]host:port/db``, ``rediss://`` (TLS), ``unix:///path?db=N``: one
  server (as the Redis clients write it);
- ``redis+sentinel://[:password@]host:port[,host:port...]/service[/db]`` (``rediss+sentinel``
  for TLS to the servers): the master of ``service`` as the Sentinels name it, found again
  after a failover. The password is the servers'; Sentinels that want one of their own get it
  from ``state.redis_sentinel_password_file``;
- ``redis+cluster://[:password@]host:port[,host:port...]`` (``rediss+cluster``): a Redis
  Cluster, reached through any of the nodes named (the others are discovered).

Every key the gateway writes in one operation carries the same hash tag (``{<session id>}``,
``{<digest>}``), so each operation stays within one Cluster slot.

A command that fails because the server went away is retried (the Redis client's own
policy) for at most ``state.redis_timeout_seconds``; past that Redis is taken as down, the
request fails with 503 and Retry-After, and so does every command at once until Redis
answers a PING again (gateway/state/health.py). Commands that change state are written so
that running one twice is harmless.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    from gateway.state.health import RedisHealth

_SINGLE = ("redis", "rediss", "unix")
_SENTINEL = ("redis+sentinel", "rediss+sentinel")
_CLUSTER = ("redis+cluster", "rediss+cluster")
# Tries of a command that met a lost connection, within the time a command may take
# (RedisHealth.timeout): a restart of Redis fits in them.
_RETRIES = 12


@dataclass(frozen=True)
class RedisTarget:
    """A parsed ``state.redis_url``."""

    kind: str  # "single", "sentinel" or "cluster"
    url: str  # as given (for a single server: handed to the client as is)
    tls: bool = False
    nodes: tuple[tuple[str, int], ...] = ()
    service: str = ""
    db: int = 0
    password: str | None = field(default=None, repr=False)


def parse_redis_url(url: str) -> RedisTarget:
    """Check and parse ``url``; ValueError says what is wrong (never echoing a password)."""
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in _SINGLE + _SENTINEL + _CLUSTER:
        raise ValueError("must start with redis://, rediss://, unix://, redis+sentinel://, "
                         "rediss+sentinel://, redis+cluster:// or rediss+cluster://")
    # A password's unencoded "/", "?" or "#" ends the host part early for every URL parser:
    # pieces of the password would be read as hosts, ports or names and echoed in errors.
    userinfo_end = rest.rfind("@")
    if scheme != "unix" and userinfo_end > 0 and any(c in rest[:userinfo_end] for c in "/?#"):
        raise ValueError("the password must have any '/', '?' and '#' percent-encoded "
                         "(%2F, %3F, %23), or be given in state.redis_password_file")
    if scheme in _SINGLE:
        return RedisTarget("single", url, tls=scheme == "rediss")
    # urlsplit cannot take several host:port pairs: split them out by hand.
    netloc, _, path = rest.partition("/")
    password = None
    if "@" in netloc:
        credentials, _, netloc = netloc.rpartition("@")
        password = unquote(credentials.partition(":")[2]) or None
    nodes = tuple(_node(item) for item in netloc.split(","))
    segments = [s for s in urlsplit("/" + path).path.split("/") if s]
    tls = scheme.startswith("rediss")
    if scheme in _CLUSTER:
        if segments:
            raise ValueError("a Redis Cluster has only database 0: give no path")
        return RedisTarget("cluster", url, tls=tls, nodes=nodes, password=password)
    if not segments or len(segments) > 2:
        raise ValueError("give the Sentinel service name, and optionally a database: "
                         "redis+sentinel://host:port[,host:port]/service[/db]")
    db = segments[1] if len(segments) == 2 else "0"
    if not db.isdigit():
        raise ValueError(f"database must be a number, got {db!r}")
    return RedisTarget("sentinel", url, tls=tls, nodes=nodes, service=unquote(segments[0]),
                       db=int(db), password=password)


def _node(item: str) -> tuple[str, int]:
    host, _, port = item.strip().rpartition(":")
    host = host.strip("[]")  # [::1]:26379
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"each node is host:port, got {item.strip()!r}")
    return host, int(port)


def redis_address(url: str) -> str:
    """Where ``url`` leads, as the log may say it: hosts and ports (and a Sentinel service's
    name) or a socket's path, never a user or a password."""
    try:
        target = parse_redis_url(url)
        if target.kind == "single":
            parts = urlsplit(url)
            if parts.scheme.lower() == "unix":
                return parts.path
            return f"{parts.hostname or 'localhost'}:{parts.port or 6379}"
    except ValueError:
        return "(unparsable state.redis_url)"
    nodes = ",".join(f"{host}:{port}" for host, port in target.nodes)
    return f"{nodes} (service {target.service})" if target.kind == "sentinel" else nodes


@dataclass(frozen=True)
class RedisConnection:
    """``state.redis_url`` with the passwords read from their files, and how long a command
    may wait for an answer (``state.redis_timeout_seconds``) before Redis is taken as down,
    then PINGed every ``probe_every`` seconds. The clients made from one connection share
    its :attr:`health`: one outage, said once, for all of them."""

    url: str
    password: str | None = field(default=None, repr=False)
    sentinel_password: str | None = field(default=None, repr=False)
    timeout: float = 2.0
    probe_every: float = 1.0

    @functools.cached_property
    def health(self) -> RedisHealth:
        from gateway.state.health import RedisHealth

        return RedisHealth(redis_address(self.url), self._probe_client, timeout=self.timeout,
                           probe_every=self.probe_every)

    def _probe_client(self) -> Any:
        return redis_client(self.url, password=self.password,
                            sentinel_password=self.sentinel_password,
                            socket_timeout=self.timeout, retries=0)

    def client(self, *, decode_responses: bool = False, socket_timeout: float = 10.0,
               health_check_interval: float = 0) -> Any:
        return redis_client(self.url, password=self.password,
                            sentinel_password=self.sentinel_password,
                            decode_responses=decode_responses, socket_timeout=socket_timeout,
                            health_check_interval=health_check_interval, health=self.health)


def redis_client(url: str, *, password: str | None = None,
                 sentinel_password: str | None = None, decode_responses: bool = False,
                 socket_timeout: float = 10.0, health_check_interval: float = 0,
                 retries: int = _RETRIES, health: RedisHealth | None = None) -> Any:
    """An asyncio client for ``url`` (a password given apart from the URL wins); with
    ``health``, each of its commands and pipelines is refused at once while Redis is taken
    as down, and has ``health.timeout`` seconds to be answered otherwise."""
    client = _client(url, password=password, sentinel_password=sentinel_password,
                     decode_responses=decode_responses, socket_timeout=socket_timeout,
                     health_check_interval=health_check_interval, retries=retries)
    return client if health is None else _guarded(client, health)


def _guarded(client: Any, health: RedisHealth) -> Any:
    """``client`` with every command (scripts included) and every pipeline's execution run
    under ``health.guard()``. On the instance: one way for a single server, a Sentinel
    master and a Cluster alike (a pub/sub connection, which waits for messages as long as
    it likes, is left as it is)."""
    command, pipeline = client.execute_command, client.pipeline

    async def execute_command(*args: Any, **options: Any) -> Any:
        async with health.guard():
            return await command(*args, **options)

    def guarded_pipeline(*args: Any, **kwargs: Any) -> Any:
        pipe = pipeline(*args, **kwargs)
        execute = pipe.execute

        async def run(*args: Any, **kwargs: Any) -> Any:
            async with health.guard():
                return await execute(*args, **kwargs)

        pipe.execute = run
        return pipe

    client.execute_command = execute_command
    client.pipeline = guarded_pipeline
    return client


def _client(url: str, *, password: str | None, sentinel_password: str | None,
            decode_responses: bool, socket_timeout: float, health_check_interval: float,
            retries: int) -> Any:
    # redis is imported only when Redis is used (importing it loads a telemetry SDK).
    from redis.backoff import ExponentialWithJitterBackoff

    from gateway.state.health import NotingRetry as Retry

    target = parse_redis_url(url)
    # Commands are tried again through a restart of a single server (every pooled connection
    # is dead then; a client made with from_url does not retry unless told to) and through a
    # failover (a Sentinel-managed connection turns a demoted master's READONLY into a
    # reconnection to the new one).
    common: dict[str, Any] = {
        "decode_responses": decode_responses, "socket_connect_timeout": 5,
        "socket_timeout": socket_timeout,
        "retry": Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), retries)}
    if target.kind == "single":
        import redis.asyncio as aioredis

        return aioredis.Redis.from_url(url, password=password,
                                       health_check_interval=health_check_interval, **common)
    secret = password or target.password
    if target.kind == "cluster":
        from redis.asyncio.cluster import ClusterNode, RedisCluster

        return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in target.nodes],
                            password=secret, ssl=target.tls,
                            health_check_interval=health_check_interval, **common)
    from redis.asyncio.sentinel import Sentinel

    sentinels = Sentinel(list(target.nodes), sentinel_kwargs={
        "password": sentinel_password, "socket_connect_timeout": 5, "socket_timeout": 5,
        "decode_responses": True})
    return sentinels.master_for(target.service, db=target.db, password=secret,
                                connection_class=_master_connection(target.tls),
                                health_check_interval=health_check_interval, **common)


def _master_connection(tls: bool) -> type:
    """A Sentinel-managed connection that asks the Sentinels for the master on every
    reconnection: the client's own reconnects a dropped connection to the address it had,
    the old master's, for as long as its retries last."""
    from redis.asyncio.sentinel import SentinelManagedConnection, SentinelManagedSSLConnection

    base = SentinelManagedSSLConnection if tls else SentinelManagedConnection

    class MasterConnection(base):  # type: ignore[misc, valid-type]
        async def connect_check_health(self, check_health: bool = True,
                                       retry_socket_connect: bool = True) -> None:
            if not self.is_connected:
                self.host, self.port = await self.connection_pool.get_master_address()
            await super().connect_check_health(check_health, retry_socket_connect)

    return MasterConnection
