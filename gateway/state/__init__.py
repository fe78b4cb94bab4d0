"""Where upload sessions live between requests: ``local`` (this process, spilled to disk) or
``redis`` (shared by every replica)."""

from __future__ import annotations

import re

from gateway.config import Config, ConfigError, StateConfig
from gateway.config.secret_files import read_secret_file
from gateway.state.connect import RedisConnection, parse_redis_url
from gateway.state.events import CacheEvents, NoEvents
from gateway.state.fills import FillLocks
from gateway.state.peers import StagedPeers
from gateway.state.sessions import SessionStore


def session_store(config: Config, redis: RedisConnection | None = None) -> SessionStore:
    """The session store ``state.backend`` names (``redis``: the connection the replica's
    other users of Redis share, else one of its own)."""
    if config.state.backend == "redis":
        from gateway.state.redis import RedisSessionStore

        idle = config.uploads.idle_timeout_seconds
        return RedisSessionStore(redis or redis_connection(config),
                                 prefix=config.state.key_prefix,
                                 lock_ttl=config.state.lock_ttl_seconds,
                                 lock_wait=config.state.lock_wait_seconds,
                                 expire_after=max(idle * 2, idle + 300),
                                 max_tail_bytes=config.limits.max_upload_tail_bytes)
    from gateway.state.local import LocalSessionStore

    return LocalSessionStore(config.data_path / "sessions",
                             max_tail_bytes=config.limits.max_upload_tail_bytes)


def cache_events(config: Config, redis: RedisConnection | None = None) -> CacheEvents:
    """How replicas tell each other about tag moves and deletes (Redis pub/sub), if shared."""
    if config.state.backend == "redis":
        from gateway.state.events import RedisCacheEvents

        return RedisCacheEvents(redis or redis_connection(config), config.state.key_prefix)
    return NoEvents()


def staged_peers(config: Config, redis: RedisConnection | None = None) -> StagedPeers | None:
    """Where other replicas' staged blobs are found (shared state only)."""
    if config.state.backend != "redis":
        return None
    return StagedPeers(redis or redis_connection(config), config.state.key_prefix,
                       keep_seconds=2 * config.uploads.idle_timeout_seconds)


def fill_locks(config: Config, redis: RedisConnection | None = None) -> FillLocks | None:
    """One fetch per blob across replicas (shared state only)."""
    if config.state.backend != "redis":
        return None
    return FillLocks(redis or redis_connection(config), config.state.key_prefix,
                     ttl=config.state.lock_ttl_seconds,
                     keep_seconds=2 * config.uploads.idle_timeout_seconds)


def redis_connection(config: Config) -> RedisConnection:
    """How to reach the shared Redis (``state.redis_url`` and the password files)."""
    assert config.state.redis_url, "checked when the configuration was loaded"
    return RedisConnection(config.state.redis_url,
                           _secret(config, "redis_password_file"),
                           _secret(config, "redis_sentinel_password_file"),
                           timeout=config.state.redis_timeout_seconds,
                           probe_every=config.state.redis_probe_seconds)


def _secret(config: Config, key: str) -> str | None:
    path = getattr(config.state, key)
    if not path:
        return None
    try:
        return read_secret_file(path, f"state.{key}") or None
    except OSError as exc:
        raise ConfigError(f"state.{key}",
                          f"cannot read {path}: {exc.strerror}") from None


def check_state(state: StateConfig) -> None:
    """The ``state`` section (called by gateway/config/models.py): redis needs its URL (one
    of the forms of gateway/state/connect.py), and its password comes from the URL or the
    file, not both."""
    if state.backend == "redis" and not state.redis_url:
        raise ConfigError("redis_url", "is required when state.backend is redis")
    if state.redis_url:
        try:
            parse_redis_url(state.redis_url)
        except ValueError as exc:
            raise ConfigError("redis_url", str(exc)) from None
    if state.redis_password_file and state.redis_url and \
            re.match(r"^[a-z+]+://[^/@]*:[^/@]*@", state.redis_url):
        raise ConfigError("redis_password_file", "and a password in state.redis_url: "
                          "give one of them")
