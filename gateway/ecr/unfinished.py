"""Bytes sent to ECR for a client's unfinished uploads: those still open, and those that
ended without completion within a window.

ECR has no call that cancels an upload: the parts of one cancelled (DELETE), expired or
refused stay in ECR until ECR ends the upload (the embedded emulator: twice
``uploads.idle_timeout_seconds``), and the parts of one still open stay as long as it is.
Without a bound on them, one client cycling POST, PATCH, DELETE had ECR hold what it sent at
line rate for that whole time (about 200 GB at 30 MiB/s behind the emulator, on the gateway
machine's own disk); one holding its ``max_open_uploads_per_client`` sessions open, a long
PATCH streaming into each, had ECR hold all of it before any of it counted.

Per client, ``limits.max_abandoned_upload_bytes_per_client`` bounds the sum of:

* the bytes ECR stored for its open uploads (counted against whoever sent them: anyone who
  knows an anonymous upload's id may write into it), given back when ECR accepts the
  upload's CompleteLayerUpload;
* the bytes requests in progress may still send (a request of known length reserves what it
  will send before it reads a byte; a streamed one reserves each part before it goes);
* the bytes of uploads that ended unfinished within the window: when an upload is
  cancelled, or ended by a refused completion, all it left counts against the client that
  ended it (another client must not spend the owner's bound); when it expires, each
  sender's bytes stay its own, and those this process did not see sent, the owner's.

A POST, or a PATCH of unknown length, from a client at its bound gets ``429
TOOMANYREQUESTS``; so does a PATCH of known length that would go past it, before any byte is
read; a streamed PATCH stops before the part that would go past it, the upload keeping what
ECR stored (its Range says so, and the client continues from there). That is the OCI
distribution spec's model of an upload: its offset is what the Range of each answer (and of
a GET of the upload's URL) reports, and a client sends its next chunk from there. A body of
known length can be refused whole, so it is: nothing of it is read or kept, and the client
sends the same chunk again. A streamed one (docker's layer PATCH) can only be cut once read
in part; what ECR stored of it is the upload's, and dropping it would not take it out of
ECR. Retry-After is the time
until enough ended bytes are older than the window, or a few seconds when the client's open
uploads hold the room (completing or cancelling them frees it). The last bytes of an upload,
sent with its completion, are counted but never refused: a client at its bound must be able
to finish what it started, which gives the room back.

Counted in this process's memory, for what was sent through it and abandoned through it (a
DELETE, or its own sweep expiring a session); a restart forgets the count. With Redis, the
replicas add up their counts there (gateway/state/unfinished_shares.py): each writes its
share of a client's bytes when it changes, and a client is weighed against the sum, so N
replicas do not let it hold N times the bound. An upload that ended through another replica
is forgotten here once the sweep finds its session gone, or sooner: before a client is
refused for its open uploads, the store is asked whether they are still open
(:meth:`UnfinishedBytes.doubtful`).
"""

from __future__ import annotations

import math
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from gateway.observability.metrics import UPLOAD_REFUSALS
from gateway.oci import errors as oci
from gateway.oci.errors import OciError, RequestRefused

# Retry-After when the client's open uploads, not its ended ones, hold the room.
OPEN_RETRY_SECONDS = 10

# Whether the store still holds an upload open (by id).
StillOpen = Callable[[str], Awaitable[bool]]


@dataclass
class _Open:
    """An open upload as this process saw it: the offset up to which ECR held it when last
    seen, the bytes each sender added beyond it, and when it was last used here."""

    known: int
    touched: float
    sent: Counter[str] = field(default_factory=Counter)
    looked: float = -math.inf  # when the store was last asked whether it is still open


class Grant:
    """What one request may still send to ECR for one upload without asking again: held
    against ``owner``'s bound until sent (then counted with the upload) or the request ends
    (:meth:`close`). ``owner`` None: the gateway's own work, never bounded."""

    def __init__(self, book: UnfinishedBytes, owner: str | None) -> None:
        self._book = book
        self.owner = owner
        self.left = 0

    def reserve(self, size: int) -> None:
        """Make room for ``size`` bytes about to be sent; 429 when they do not fit."""
        if self.owner is None or not self._book.limit or size <= self.left:
            return
        self._book.reserve(self.owner, size - self.left)
        self.left = size

    def spent(self, size: int) -> None:
        """A part of ``size`` bytes was sent (stored or not: ECR's answer says which, and
        :meth:`UnfinishedBytes.sent` counts what it stored)."""
        used = min(size, self.left)
        self.left -= used
        self._book.unreserve(self.owner, used)

    def close(self) -> None:
        self._book.unreserve(self.owner, self.left)
        self.left = 0


class UnfinishedBytes:
    """Per client (``owner_of`` a client), the bytes ECR holds of its unfinished uploads:
    open ones, what requests in progress may still send, and those that ended within the
    last ``window`` seconds; ``limit`` 0: no bound, nothing kept."""

    def __init__(self, limit: int, window: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._window = window
        self._clock = clock
        # (when, owner, bytes) oldest first; the per-owner sums of what it holds.
        self._ended: deque[tuple[float, str, int]] = deque()
        self._ended_totals: Counter[str] = Counter()
        self._open: dict[str, _Open] = {}  # upload id -> what this process saw of it
        self._open_totals: Counter[str] = Counter()
        self._reserved: Counter[str] = Counter()
        # What the other replicas sharing Redis hold for a client, as last read; and the
        # clients whose count here changed since it was last written there (both unused
        # without Redis).
        self.elsewhere: dict[str, int] = {}
        self.changed: set[str] = set()
        self._on_change: Callable[[], None] | None = None

    def on_change(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` whenever a client's count here changes (it is then in
        :attr:`changed`, until taken)."""
        self._on_change = wake

    def _changed(self, owner: str) -> None:
        if self._on_change is not None:  # else nobody takes them: none kept
            self.changed.add(owner)
            self._on_change()

    # -- ended uploads --------------------------------------------------------------------

    def _forget_old(self) -> float:
        now = self._clock()
        cutoff = now - self._window
        while self._ended and self._ended[0][0] <= cutoff:
            _, owner, size = self._ended.popleft()
            _less(self._ended_totals, owner, size)
            self._changed(owner)
        return now

    def add(self, owner: str | None, size: int) -> None:
        """``size`` bytes of an upload that ended unfinished, counted against ``owner``."""
        if not self.limit or owner is None or size <= 0:
            return
        self._ended.append((self._forget_old(), owner, size))
        self._ended_totals[owner] += size
        self._changed(owner)

    # -- open uploads ---------------------------------------------------------------------

    def touch(self, upload_id: str) -> None:
        """A request uses the upload here: it is not one that ended elsewhere."""
        entry = self._open.get(upload_id)
        if entry is not None:
            entry.touched = self._clock()

    def sent(self, upload_id: str, sender: str | None, before: int, after: int) -> None:
        """ECR now holds the upload up to ``after``, where ``sender``'s request found it at
        ``before``: what is new to this process counts against ``sender``."""
        if not self.limit:
            return
        entry = self._open.get(upload_id)
        if entry is None:
            entry = self._open[upload_id] = _Open(before, self._clock())
        entry.touched = self._clock()
        new = after - max(entry.known, before)
        entry.known = max(entry.known, after)
        if new > 0 and sender is not None:
            entry.sent[sender] += new
            self._open_totals[sender] += new
            self._changed(sender)

    def _close(self, upload_id: str) -> _Open | None:
        entry = self._open.pop(upload_id, None)
        if entry is not None:
            for sender, size in entry.sent.items():
                _less(self._open_totals, sender, size)
                self._changed(sender)
        return entry

    def completed(self, upload_id: str) -> None:
        """ECR accepted the upload's completion: its bytes are a layer, no longer held."""
        self._close(upload_id)

    def ended(self, upload_id: str, committed: int, *, charged: str | None,
              owner: str | None) -> None:
        """The upload ended unfinished with ECR holding ``committed`` bytes of it: all of
        them count against ``charged`` (the client that ended it); None (it expired): each
        sender's against the sender, the rest against ``owner``."""
        entry = self._close(upload_id)
        shares = entry.sent if entry is not None else Counter()
        if entry is not None:  # a record saved before ECR's last answer here says less
            committed = max(committed, entry.known)
        if charged is not None:
            self.add(charged, committed)
            return
        for sender, size in shares.items():
            self.add(sender, size)
        self.add(owner, committed - sum(shares.values()))

    def unused_since(self, cutoff: float) -> list[str]:
        """Open uploads no request used here since ``cutoff`` (this clock's time)."""
        return [upload_id for upload_id, entry in self._open.items() if entry.touched < cutoff]

    def forget(self, upload_id: str) -> None:
        """The upload ended elsewhere (another replica, a lost session store), which
        counts it there."""
        self._close(upload_id)

    def now(self) -> float:
        return self._clock()

    def doubtful(self, owner: str | None, more: int = 0) -> list[str]:
        """When ``owner`` is refused (or ``more`` bytes would be): the open uploads it sent
        bytes to that the store was not asked about within ``OPEN_RETRY_SECONDS`` (another
        replica may have completed them). Each is named at most once per that time: a client
        kept at its bound costs the store no more lookups by asking more often."""
        if not self.limit or owner is None or self._fits(self.held(owner), more):
            return []
        return self.unconfirmed(owner)

    def unconfirmed(self, owner: str | None = None, quiet: float = 0.0) -> list[str]:
        """The open uploads (``owner`` sent bytes to; None: anyone) no request used here for
        ``quiet`` seconds, that the store was not asked about within ``OPEN_RETRY_SECONDS``;
        each named at most once per that time."""
        now = self._clock()
        found = [upload_id for upload_id, entry in self._open.items()
                 if (entry.sent[owner] > 0 if owner is not None else entry.sent)
                 and entry.looked <= now - OPEN_RETRY_SECONDS and entry.touched <= now - quiet]
        for upload_id in found:
            self._open[upload_id].looked = now
        return found

    async def recount(self, upload_ids: list[str], still_open: StillOpen) -> None:
        """Forget those of ``upload_ids`` the store says are no longer open: completed or
        ended through another replica, which gave their bytes back there."""
        for upload_id in upload_ids:
            if not await still_open(upload_id):
                self.forget(upload_id)

    # -- requests in progress -------------------------------------------------------------

    def grant(self, owner: str | None, size: int = 0) -> Grant:
        """A request's grant, ``size`` bytes reserved at once (429 if they do not fit)."""
        grant = Grant(self, owner)
        grant.reserve(size)
        return grant

    def reserve(self, owner: str, size: int) -> None:
        """Hold ``size`` more bytes for a request; refused as a whole (the upload stands
        where it stood) when they do not fit."""
        self.check(owner, size, RequestRefused)
        self._reserved[owner] += size
        self._changed(owner)

    def unreserve(self, owner: str | None, size: int) -> None:
        if owner is not None and size > 0:
            _less(self._reserved, owner, size)
            self._changed(owner)

    # -- the bound ------------------------------------------------------------------------

    def held_here(self, owner: str) -> int:
        """What this process counts for ``owner``: its share of the replicas' sum."""
        self._forget_old()
        return self._ended_totals[owner] + self._open_totals[owner] + self._reserved[owner]

    def held(self, owner: str) -> int:
        return self.held_here(owner) + self.elsewhere.get(owner, 0)

    def _fits(self, held: int, more: int) -> bool:
        return held + more <= self.limit if more else held < self.limit

    def check(self, owner: str | None, more: int = 0,
              refusal: type[OciError] = OciError) -> None:
        """Raise ``refusal`` (429) if ``owner`` is at its bound, or ``more`` bytes would
        take it past, with Retry-After until enough ended bytes age out (if that is
        enough)."""
        if not self.limit or owner is None:
            return
        held = self.held(owner)
        if self._fits(held, more):
            return
        UPLOAD_REFUSALS.labels("unfinished_bytes").inc()
        if more > self.limit:  # never fits, however long the client waits: not a 429
            raise refusal(oci.TOO_LARGE, {"limit": self.limit},
                          message="this request alone would have ECR hold more than one "
                                  "client's unfinished uploads may "
                                  "(limits.max_abandoned_upload_bytes_per_client)")
        now = self._clock()
        wait = float(OPEN_RETRY_SECONDS)
        if self._fits(held - self._ended_totals[owner], more):  # ended bytes make the room
            for when, who, size in self._ended:
                if who == owner:
                    held -= size
                    wait = when + self._window - now
                    if self._fits(held, more):
                        break
        raise refusal(oci.TOOMANYREQUESTS, {"limit": self.limit},
                      message="this client's unfinished uploads hold too many bytes in ECR "
                              "(limits.max_abandoned_upload_bytes_per_client): finish "
                              "uploads rather than start new ones, or send less at once",
                      headers={"Retry-After": str(max(1, math.ceil(wait)))})


def _less(totals: Counter[str], owner: str, size: int) -> None:
    totals[owner] -= size
    if totals[owner] <= 0:
        del totals[owner]
