"""Where upload sessions live between requests: ``local`` (this process, spilled to disk) or
``redis`` (shared by every replica)."""

from __future__ import annotations

from gateway.config import Config
from gateway.state.events import CacheEvents, NoEvents
from gateway.state.peers import StagedPeers
from gateway.state.sessions import SessionStore


def session_store(config: Config) -> SessionStore:
    """The session store ``state.backend`` names."""
    if config.state.backend == "redis":
        from gateway.state.redis import RedisSessionStore

        idle = config.uploads.idle_timeout_seconds
        assert config.state.redis_url, "checked when the configuration was loaded"
        return RedisSessionStore(config.state.redis_url, prefix=config.state.key_prefix,
                                 lock_ttl=config.state.lock_ttl_seconds,
                                 lock_wait=config.state.lock_wait_seconds,
                                 expire_after=max(idle * 2, idle + 300))
    from gateway.state.local import LocalSessionStore

    return LocalSessionStore(config.data_path / "sessions")


def cache_events(config: Config) -> CacheEvents:
    """How replicas tell each other about tag moves and deletes (Redis pub/sub), if shared."""
    if config.state.backend == "redis":
        from gateway.state.events import RedisCacheEvents

        assert config.state.redis_url, "checked when the configuration was loaded"
        return RedisCacheEvents(config.state.redis_url, config.state.key_prefix)
    return NoEvents()


def staged_peers(config: Config) -> StagedPeers | None:
    """Where other replicas' staged blobs are found (shared state only)."""
    if config.state.backend != "redis":
        return None
    assert config.state.redis_url, "checked when the configuration was loaded"
    return StagedPeers(config.state.redis_url, config.state.key_prefix,
                       keep_seconds=2 * config.uploads.idle_timeout_seconds)
