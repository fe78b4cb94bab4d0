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

A command that fails because the server went away is retried for a few seconds (the Redis
client's own policy); past that the request fails with 503 and Retry-After. Commands that
change state are written so that running one twice is harmless.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

_SINGLE = ("redis", "rediss", "unix")
_SENTINEL = ("redis+sentinel", "rediss+sentinel")
_CLUSTER = ("redis+cluster", "rediss+cluster")
# Tries of a command that met a lost connection: a failover (about a second after the master
# stopped answering, with Sentinel's down-after of 1 s) fits in them.
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


@dataclass(frozen=True)
class RedisConnection:
    """``state.redis_url`` with the passwords read from their files."""

    url: str
    password: str | None = field(default=None, repr=False)
    sentinel_password: str | None = field(default=None, repr=False)

    def client(self, *, decode_responses: bool = False, socket_timeout: float = 10.0,
               health_check_interval: float = 0) -> Any:
        return redis_client(self.url, password=self.password,
                            sentinel_password=self.sentinel_password,
                            decode_responses=decode_responses, socket_timeout=socket_timeout,
                            health_check_interval=health_check_interval)


def redis_client(url: str, *, password: str | None = None,
                 sentinel_password: str | None = None, decode_responses: bool = False,
                 socket_timeout: float = 10.0, health_check_interval: float = 0) -> Any:
    """An asyncio client for ``url`` (a password given apart from the URL wins)."""
    # redis is imported only when Redis is used (importing it loads a telemetry SDK).
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialWithJitterBackoff

    target = parse_redis_url(url)
    # Commands are tried again through a restart of a single server (every pooled connection
    # is dead then; a client made with from_url does not retry unless told to) and through a
    # failover (a Sentinel-managed connection turns a demoted master's READONLY into a
    # reconnection to the new one).
    common: dict[str, Any] = {
        "decode_responses": decode_responses, "socket_connect_timeout": 5,
        "socket_timeout": socket_timeout,
        "retry": Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), _RETRIES)}
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
