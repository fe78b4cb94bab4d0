"""An upload session's record and the interface every session store implements."""

from __future__ import annotations

import hashlib
import re
import time
from contextlib import AbstractAsyncContextManager
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

# What the gateway makes a session id from (uuid4 hex): the only shape safe as a file name.
SESSION_ID = re.compile(r"[0-9a-f]{32}")


@dataclass
class UploadSession:
    """One OCI upload mapped onto one ECR layer upload.

    ``received`` counts every byte the client sent; ``committed`` those already sent to ECR
    as parts. The difference, the tail, is under ECR's minimum part size and waits in the
    store or the staging spool (never in process memory) for the next request.
    """

    id: str
    name: str  # the repository as the client named it
    repository: str  # the ECR repository
    registry_id: str | None
    route: str
    ecr_upload_id: str
    part_size: int
    received: int = 0
    committed: int = 0
    # The tail is the end of this process's staging spool rather than in the store (only
    # with a store no other process reads): each received byte then reaches the disk once.
    tail_staged: bool = False
    # Whom the session counts against for ``limits.max_open_uploads_per_client``:
    # :func:`owner_of` the client that opened it; None (a record from before, or one the
    # gateway opened for its own work) counts for nobody.
    owner: str | None = None
    # The digest the layer was completed as, recorded before the staged copy is made: the
    # upload is finished even if its session outlives that (a process that died, a store
    # that failed before the session was deleted). Nothing more is written to it.
    completed: str | None = None
    # How many times ECR ended the upload (it received no part for its lifetime) and the
    # gateway began a new one with the bytes it held (gateway/ecr/resend.py): bounded.
    resumed: int = 0
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)

    @property
    def tail_length(self) -> int:
        return self.received - self.committed

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        if not self.tail_staged:
            del record["tail_staged"]  # records as before, which any version reads
        if self.owner is None:
            del record["owner"]
        if self.completed is None:
            del record["completed"]
        if not self.resumed:
            del record["resumed"]
        return record

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UploadSession:
        return cls(**data)

    @classmethod
    def stored(cls, data: dict[str, Any], key_id: str) -> UploadSession | None:
        """A record read back from a shared store, filed under ``key_id``; None if it is not
        a record this gateway could have written there (its id names the spool file: a
        forged one must not point it at any other path)."""
        found = data.get("id") if isinstance(data, dict) else None
        if found != key_id or not isinstance(found, str) or not SESSION_ID.fullmatch(found):
            return None
        try:
            return cls.from_dict(data)
        except TypeError:  # members missing or unknown
            return None


def owner_of(client: str) -> str:
    """The owner a client's sessions are filed under: a digest of its key (``user:<name>``
    or ``addr:<address>``), so that no user name or address is written into a store."""
    return hashlib.sha256(client.encode()).hexdigest()[:32]


class SessionLimit(Exception):
    """The session's owner has ``limit`` sessions open already (it was not created)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"{limit} upload sessions open for this owner")
        self.limit = limit


class TailBudget(Exception):
    """The owner's tails in the store take ``max_owner_tail`` bytes (this one was not
    saved)."""


class TailsFull(Exception):
    """The tails the store holds over all owners take its own bound
    (``limits.max_upload_tail_bytes``, counted in Redis across replicas); this one was not
    saved."""


class SessionStore(Protocol):
    # Whether only this process reads the records: a tail may then stay in its staging spool.
    process_local: bool

    async def create(self, session: UploadSession, *, max_owned: int = 0) -> None:
        """Store a new session; with ``max_owned`` (0: no limit) and an owner, raise
        :class:`SessionLimit` instead when the owner has that many open already (checked
        and counted in one step, however many replicas create at once)."""

    async def get(self, session_id: str) -> UploadSession | None: ...

    async def tail(self, session_id: str) -> bytes: ...

    async def save(self, session: UploadSession, tail: bytes, *,
                   max_owner_tail: int = 0, bounded: bool = False) -> None:
        """Store the record and its tail together: both or neither. With ``max_owner_tail``
        (0: no bound) and an owner, raise :class:`TailBudget` instead, nothing written, when
        the tails the store holds for the owner's sessions would pass it (checked and
        counted in one step, however many replicas save at once). A ``bounded`` save (a
        request's own, whose bytes the client was not yet told are received) also meets
        the store's own bound over all owners, if it has one: :class:`TailsFull` instead
        for a tail that grows past it."""

    async def delete(self, session_id: str) -> None: ...

    def lock(self, session_id: str) -> AbstractAsyncContextManager[None]:
        """Serialize requests on one session (a client's PATCHes must not interleave)."""

    async def idle(self, older_than: float,
                   finished_older_than: float | None = None) -> list[UploadSession]:
        """Sessions last used before ``older_than``, and those whose layer was completed
        (``completed``) last used before ``finished_older_than``."""

    async def count(self) -> int: ...

    async def owned(self, owner: str) -> int:
        """Sessions open for ``owner`` (none that finished, were cancelled or expired)."""

    async def ping(self) -> None:
        """Raise if the store cannot be used (``/readyz``)."""

    async def close(self) -> None: ...
