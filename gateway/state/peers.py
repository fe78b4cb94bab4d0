"""Staged blobs readable from every replica (Redis state backend).

ECR serves only layers some image references, so a blob read back right after its upload is
served from the staging store of the replica that received its bytes (gateway/ecr/staging.py):

- a replica whose spool holds every byte of an upload so far records itself as the upload's
  spool holder after each write request (field ``spool`` of the session's own hash, see
  gateway/state/redis.py, so it goes with the session);
- the replica that finishes the upload records who holds the blob
  (``<prefix>staged:{<digest>}``, a hash of replica URL → upload id): itself if its spool
  holds every byte, else the upload's spool holder (docker's PATCH and PUT may land on
  different replicas). The record is written before the layer is completed: one Redis
  refuses (full, or down) is a 503 for the client, whose upload stands as it was, never a
  201 for a blob the other replicas cannot find; the holder hashes the spool before it
  serves it as the digest (a record for an upload whose digest then proves wrong serves
  nothing, and is taken back: the holder's entry names again what it named before, another
  client's upload or staged copy of the same blob through that replica, never dropped with it);
- a replica asked for a blob it neither staged nor can get from ECR streams it from a
  holder's internal endpoint ``GET /_peer/staged/<digest>?upload=<id>``
  (gateway/oci/peer.py), after checking, as for its own staged copies, that the repository
  holds the layer. The holder keeps a finished spool under its digest on that first read,
  once it hashed to the digest.

Records expire with the staging spools. Each replica records its whole staging store again
whenever it (re)subscribes to the cache notices (gateway/state/events.py), so a Redis that
restarted empty learns again who holds what. An upload whose bytes went through several replicas
is staged nowhere (each spool lacks part of it): it is readable once a manifest references
it, as before.

Peers prove themselves with ``X-Peer-Proof: <expiry>.<mac>``: the unix time the proof
stops being good (a minute ahead), and HMAC-SHA256 of that time and the digest (or
``spool:<upload>``) under a random key kept in Redis (``<prefix>peer-key``, made by the first
replica), so only processes with access to the shared Redis can read staged bytes this way,
and a proof seen on the way (peer traffic in clear, a proxy's log) is of no use a minute
later. A proof past its time, or good for more than a few minutes more (replicas' clocks
must agree within a minute), is refused like a wrong one. A replica of a version before
expiries sends a bare MAC, which is refused too (and it refuses these): during a rolling
upgrade the two read each other's blobs as they would an unreachable replica's.

A replica URL read from Redis is used only when it is one (``http(s)://host[:port]``, nothing
more), and peer requests follow no redirect: an entry written into Redis by someone else
makes a replica ask ``/_peer/...`` of that host at most, never another path or host.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import secrets
import time
import urllib.parse
from typing import Any

from gateway.oci.errors import OciError
from gateway.state.connect import RedisConnection

log = logging.getLogger(__name__)

PROOF_HEADER = "X-Peer-Proof"
# How long a proof is good for, and how far ahead of this replica's clock one is accepted
# (the time left plus another replica's clock running ahead of this one's).
PROOF_SECONDS = 60
PROOF_AHEAD_SECONDS = 300


def spool_subject(upload_id: str) -> str:
    """What a peer's proof for an upload's spool is computed over (never a digest)."""
    return f"spool:{upload_id}"


# KEYS: a digest's holders. ARGV: a holder, the upload it was recorded for, "1" and what the
# holder's entry named before (another upload of the blob, "" for its staged copy), or "0"
# when it had none.
_TAKE_BACK = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  if ARGV[3] == '1' then redis.call('HSET', KEYS[1], ARGV[1], ARGV[4])
  else redis.call('HDEL', KEYS[1], ARGV[1]) end
end
return 0
"""

# Only on a session that still exists: a finished or dropped one leaves nothing behind.
_NOTE = """
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'spool', ARGV[1]) end
return 0
"""


def is_replica_url(url: str) -> bool:
    """Whether ``url`` has the shape of a replica's base URL: http(s)://host[:port], with no
    user, path, query or fragment (a query or fragment would swallow the /_peer path)."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 (a port that is not a number raises)
    except ValueError:
        return False
    return (parts.scheme in ("http", "https") and bool(parts.hostname)
            and parts.username is None and parts.password is None
            and not parts.path and not parts.query and not parts.fragment
            and "?" not in url and "#" not in url)


def replica_urls(found: list[str], what: str) -> list[str]:
    """The entries of ``found`` that are replica URLs (the others are logged and dropped)."""
    kept = [url for url in found if is_replica_url(url)]
    if len(kept) < len(found):
        log.warning("%d holder(s) of %s in Redis are not replica URLs: ignored",
                    len(found) - len(kept), what)
    return kept


class StagedPeers:
    def __init__(self, connection: RedisConnection, prefix: str, keep_seconds: float) -> None:
        # redis is imported only when Redis is used (importing it loads a telemetry SDK).
        from redis.exceptions import RedisError

        from gateway.state.health import StateStoreDown, needed

        self._errors: tuple[type[Exception], ...] = (RedisError,)
        self._down: type[Exception] = StateStoreDown  # said once for the outage
        self._needed = needed  # Redis's refusal as a 503
        self._redis: Any = connection.client(decode_responses=True)
        self._prefix = prefix
        self._keep_ms = max(int(keep_seconds * 1000), 1000)
        self._note = self._redis.register_script(_NOTE)
        self._take_back = self._redis.register_script(_TAKE_BACK)
        # How the other replicas reach this one (state.peer_url, or the listen address).
        self.self_url: str | None = None

    def _staged(self, digest: str) -> str:
        return f"{self._prefix}staged:{{{digest}}}"

    def _session(self, upload_id: str) -> str:
        return f"{self._prefix}session:{{{upload_id}}}"  # RedisSessionStore's key

    async def note_spool(self, upload_id: str) -> None:
        """This replica's spool holds every byte of the upload received so far."""
        if not self.self_url:
            return
        try:
            await self._note(keys=[self._session(upload_id)], args=[self.self_url])
        except self._errors as exc:
            if not isinstance(exc, self._down):
                log.warning("spool of %s not recorded: %s", upload_id, type(exc).__name__)

    async def spool_holder(self, upload_id: str, *, strict: bool = False) -> str | None:
        """The replica whose spool holds every byte of the upload so far (None: none
        recorded, or Redis could not tell; ``strict``: 503 then)."""
        try:
            with self._needed("shared state store unavailable: the holder of this "
                              "upload's bytes could not be looked up"):
                found = await self._redis.hget(self._session(upload_id), "spool")
        except OciError:
            if strict:
                raise
            return None
        return next(iter(replica_urls([str(found)], upload_id)), None) if found else None

    async def _secret(self) -> bytes:
        # Read every time, never kept: a Redis that restarted empty gets a new key, and every
        # replica (one started since, or one that had the old key) must use that one.
        name = f"{self._prefix}peer-key"
        key = await self._redis.get(name)
        if key is None:
            await self._redis.set(name, secrets.token_hex(32), nx=True)
            key = await self._redis.get(name)
        if key is None:  # gone again (a failover, a flush): never a key anyone could guess
            raise self._errors[0]("the peer key could not be read back")
        return str(key).encode()

    async def record(self, digest: str, holder: str, upload: str) -> str | None:
        """Record ``holder`` as holding ``digest`` (its staged copy, or the spool of
        ``upload``); Redis's refusal is a 503 (OciError). Returns what the holder's entry
        named before (None: nothing, or ``upload`` itself), for :meth:`take_back`."""
        with self._needed("shared state store unavailable: the blob could not be recorded "
                          "for the other replicas; the upload stands as it was, finish it "
                          "again"):
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hget(self._staged(digest), holder)
                pipe.hset(self._staged(digest), holder, upload)
                pipe.pexpire(self._staged(digest), self._keep_ms)
                before = (await pipe.execute())[0]
        return None if before is None or str(before) == upload else str(before)

    async def take_back(self, digest: str, holder: str, upload: str,
                        before: str | None = None) -> None:
        """Undo the record :meth:`record` wrote, if it still names ``upload``: the holder's
        entry names again what it named ``before`` (another upload of the same blob through
        that replica, or its staged copy, which stay readable), or goes."""
        args = [holder, upload, "0", ""] if before is None else [holder, upload, "1", before]
        with contextlib.suppress(*self._errors):
            await self._take_back(keys=[self._staged(digest)], args=args)

    async def announce_all(self, digests: list[str]) -> None:
        """Record this replica as holding each of ``digests`` (its whole staging store, after
        Redis may have restarted empty and forgotten who holds what)."""
        if not self.self_url or not digests:
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for digest in digests:
                    pipe.hset(self._staged(digest), self.self_url, "")
                    pipe.pexpire(self._staged(digest), self._keep_ms)
                await pipe.execute()
        except self._errors as exc:
            if not isinstance(exc, self._down):
                log.warning("staged copies not announced: %s", type(exc).__name__)

    async def holders(self, digest: str) -> list[tuple[str, str]]:
        """The replicas holding a staged copy of ``digest``: (URL, upload id or ""), this
        one first; Redis not answering is a 503 (OciError)."""
        with self._needed("shared state store unavailable: the replica holding this blob "
                          "could not be looked up"):
            found = await self._redis.hgetall(self._staged(digest))
        urls = replica_urls([str(url) for url in found], digest)
        return sorted(((url, str(found[url])) for url in urls),
                      key=lambda holder: holder[0] != self.self_url)

    async def proof(self, subject: str) -> str:
        """The proof for ``subject`` (a digest, or :func:`spool_subject`), good for a minute;
        Redis's refusal (the key is kept there) is a 503 (OciError)."""
        expiry = str(int(time.time()) + PROOF_SECONDS)
        with self._needed("shared state store unavailable: another replica's copy could "
                          "not be asked for"):
            secret = await self._secret()
        return f"{expiry}.{_mac(secret, expiry, subject)}"

    async def check(self, subject: str, proof: str) -> bool:
        # As bytes: text outside ASCII, which a header may hold, is a stranger's proof (a
        # 403, not a 500).
        expiry, _, mac = proof.encode("utf-8", "surrogateescape").partition(b".")
        if not (0 < len(expiry) <= 12 and expiry.isdigit()):  # ASCII digits only
            return False
        now = time.time()
        if not now <= int(expiry) <= now + PROOF_AHEAD_SECONDS:
            return False  # stale or far ahead: refused without asking Redis for the key
        try:
            expected = _mac(await self._secret(), expiry.decode(), subject)
        except self._errors:
            return False
        # The MAC covers the expiry: one proof's MAC under another's expiry matches nothing.
        return hmac.compare_digest(expected.encode(), mac)

    async def close(self) -> None:
        await self._redis.aclose()


def _mac(key: bytes, expiry: str, subject: str) -> str:
    # The expiry is digits only, so the first newline tells it from the subject.
    return hmac.new(key, f"{expiry}\n{subject}".encode(), hashlib.sha256).hexdigest()
