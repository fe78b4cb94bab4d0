"""Replicas sharing Redis compare the settings they enforce together, and say where they differ.

Each replica checks the shared bounds against its own configuration: a client's open
uploads and the tails kept for it are counted in Redis under its key (``limits.client_key``
of its address, as ``trusted_proxies`` forwards it), each replica refusing past its own
``limits``. One replica configured apart (a /48 where the others count IPv6 clients by their
/64, a larger bound, no ``trusted_proxies``) counts the same client under other keys or
lets it further, and a client sent to it gets what the others refuse; one with other
access rules or another ``auth.mode`` answers the same caller otherwise. Nothing else shows
it: each replica's own configuration is valid.

So each replica writes what it enforces (``<prefix>replicas``, a hash of replica id to the
settings and when they were written, every minute), reads the others', and when a live
replica differs logs a warning naming each setting and both values, and
``ecr_gateway_replica_settings_disagreeing`` counts the settings that differ. It refuses
nothing: a rolling change of a setting passes through replicas that disagree for a while.
Structured settings (access rules, routes, mirrors) are compared by a digest, and no value
written is a secret (password files are named by path, and only within a digest).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any

from gateway.config import Config
from gateway.observability.metrics import REPLICA_SETTINGS_DISAGREEING
from gateway.state.connect import RedisConnection

log = logging.getLogger(__name__)

EVERY_SECONDS = 60.0
# A replica that wrote nothing for three rounds is gone (stopped without a word, killed).
LIVE_SECONDS = 3 * EVERY_SECONDS
# While replicas disagree the warning is said again this often (and whenever what differs
# changes).
REMIND_SECONDS = 600.0


@dataclass
class LiveReplicas:
    """How many replicas wrote their settings within ``LIVE_SECONDS`` (this one counted),
    as last read: what a replica divides a shared limit by when Redis cannot count it."""
    count: int = 1


def agreed_settings(config: Config) -> dict[str, str]:
    """The settings every replica sharing Redis must hold alike, as printable values."""
    limits, auth = config.limits, config.auth
    return {
        "auth.mode": auth.mode,
        "auth.allow_anonymous_on_public_address": _value(auth.allow_anonymous_on_public_address),
        "auth.rules and auth.groups": _digest([[r.model_dump(mode="json") for r in auth.rules],
                                              auth.groups]),
        "auth.rate_limit": _value(auth.rate_limit.model_dump(mode="json")),
        "trusted_proxies": _value(sorted(config.trusted_proxies)),
        "limits.client_key": _value(limits.client_key.model_dump(mode="json")),
        "limits.max_open_uploads_per_client": _value(limits.max_open_uploads_per_client),
        "limits.max_upload_tail_bytes_per_client": _value(
            limits.max_upload_tail_bytes_per_client),
        "limits.max_upload_tail_bytes": _value(limits.max_upload_tail_bytes),
        "limits.max_abandoned_upload_bytes_per_client": _value(
            limits.max_abandoned_upload_bytes_per_client),
        "uploads.idle_timeout_seconds": _value(config.uploads.idle_timeout_seconds),
        "state.lock_ttl_seconds": _value(config.state.lock_ttl_seconds),
        "routes and mirrors": _digest([[r.model_dump(mode="json") for r in config.routes],
                                       {name: m.model_dump(mode="json")
                                        for name, m in sorted(config.mirrors.items())}]),
    }


def _value(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _digest(value: Any) -> str:
    return "sha256:" + hashlib.sha256(_value(value).encode()).hexdigest()[:16]


def disagreements(own: dict[str, str], others: dict[str, dict[str, Any]]
                  ) -> dict[str, list[tuple[str, str]]]:
    """Setting → (replica, its value) for each live replica holding it otherwise. A setting a
    replica does not write (an older version's) is not a disagreement."""
    found: dict[str, list[tuple[str, str]]] = {}
    for name, entry in sorted(others.items()):
        settings = entry.get("settings")
        if not isinstance(settings, dict):
            continue
        for setting, value in settings.items():
            if setting in own and isinstance(value, str) and value != own[setting]:
                found.setdefault(setting, []).append((_who(name, entry), value))
    return found


def _who(name: str, entry: dict[str, Any]) -> str:
    host, pid = entry.get("host"), entry.get("pid")
    return f"{host} (pid {pid})" if isinstance(host, str) and isinstance(pid, int) else name


class ReplicaAgreement:
    """Writes this replica's :func:`agreed_settings` to Redis and compares the others'."""

    def __init__(self, connection: RedisConnection, prefix: str, config: Config,
                 *, every: float = EVERY_SECONDS, live: LiveReplicas | None = None) -> None:
        # Bytes: whatever else is in the hash is dropped entry by entry, not the whole read.
        self._redis: Any = connection.client()
        self._health = connection.health
        self._key = f"{prefix}replicas"
        self._id = uuid.uuid4().hex
        self._settings = agreed_settings(config)
        self._every = every
        self._said: tuple[frozenset[str], float] | None = None  # what differed, when said
        self.live = live if live is not None else LiveReplicas()

    async def run(self) -> None:
        """Every ``every`` seconds (the first at once) until cancelled."""
        while True:
            if self._health.up:
                try:
                    await self.check()
                except Exception as exc:  # Redis down or refusing: said by its health
                    log.debug("replica settings not compared: %s", exc)
            await asyncio.sleep(self._every)

    async def check(self) -> dict[str, list[tuple[str, str]]]:
        """Write this replica's settings, read the live others', say what differs."""
        now = time.time()
        entry = {"host": socket.gethostname(), "pid": os.getpid(), "at": now,
                 "settings": self._settings}
        # The hash lives while a replica writes to it: the last one's entry is not left
        # behind for good when every replica was killed.
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hset(self._key, self._id, json.dumps(entry))
            pipe.pexpire(self._key, int(LIVE_SECONDS * 1000))
            pipe.hgetall(self._key)
            *_, entries = await pipe.execute()
        others: dict[str, dict[str, Any]] = {}
        gone: list[bytes] = []
        for field, text in entries.items():
            try:
                name = field.decode()
                if name == self._id:
                    continue
                other = json.loads(text)
                at = float(other["at"])
            except (ValueError, TypeError, KeyError, RecursionError):
                gone.append(field)  # not a replica's entry
                continue
            if not at >= now - LIVE_SECONDS:  # NaN too
                gone.append(field)
            else:
                others[name] = other
        if gone:
            await self._redis.hdel(self._key, *gone)
        self.live.count = 1 + len(others)
        found = disagreements(self._settings, others)
        self._say(found, time.monotonic())
        return found

    def _say(self, found: dict[str, list[tuple[str, str]]], now: float) -> None:
        REPLICA_SETTINGS_DISAGREEING.set(len(found))
        names = frozenset(found)
        if not names:
            if self._said is not None and self._said[0]:
                log.info("replicas sharing Redis hold the same settings again")
            self._said = (names, now)
            return
        if self._said is not None and self._said[0] == names \
                and now - self._said[1] < REMIND_SECONDS:
            return
        self._said = (names, now)
        lines = "; ".join(
            f"{setting}: here {self._settings[setting]}, "
            + ", ".join(f"{who} {value}" for who, value in others)
            for setting, others in sorted(found.items()))
        log.warning("replicas sharing Redis enforce different settings, so a client gets "
                    "from one what another refuses; give every replica the same: %s", lines)

    async def close(self) -> None:
        """Take this replica's entry out (a replica stopping is no longer one to agree with)."""
        try:
            await self._redis.hdel(self._key, self._id)
        except Exception as exc:
            log.debug("replica settings entry left to expire: %s", exc)
        await self._redis.aclose()
