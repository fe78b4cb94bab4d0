"""How many request-body bytes the process holds in memory before their signature is checked.

A signature covers the whole body and is checked once its last byte arrived, so until then
anyone who knows an access key id (not its secret) is holding the emulator's memory: up to
``MAX_REQUEST_BYTES`` a connection, and connections are not counted. All such bytes, across
every connection, share one budget (``Settings.unverified_body_bytes``). A body that would
pass it fails at once with ``ThrottlingException`` (400), as AWS answers a caller it has no
capacity for; botocore's retry modes retry it. Refusing rather than waiting for room lets
go of the bytes at once and never holds an honest call behind a stalled one for the length
of a body's deadline.

What a body streams to an upload's file is not charged (the disk holds it, and the file
is removed if the signature fails), nor is anything once the signature is checked, nor the
first ``FREE_BYTES`` of each body: bodies that fill the budget and then stall (each may take
its deadline, minutes for 32 MiB) must not hold up the small calls every client makes.
"""

from __future__ import annotations

from aiohttp import web

from ecr_emulator.errors import AwsError

FREE_BYTES = 64 * 1024  # more than any call's body but a large manifest's or a part's


class UnverifiedBodies:
    """The process-wide count of body bytes held while their signatures are unchecked."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def hold(self) -> Hold:
        return Hold(self)


class Hold:
    """One request's share of the budget, returned with ``release`` when its signature is
    checked or it ends (``release`` may be called more than once)."""

    def __init__(self, budget: UnverifiedBodies) -> None:
        self._budget = budget
        self._seen = 0  # bytes of the body held so far
        self._charged = 0  # of which the budget counts
        self.streaming = False  # the rest of the body goes to a file, not to memory

    def charge(self, size: int) -> None:
        if self.streaming:
            return
        self._seen += size
        due = self._seen - FREE_BYTES - self._charged
        if due <= 0:
            return
        budget = self._budget
        if budget.held + due > budget.limit:
            self.release()
            raise AwsError("ThrottlingException",
                           "Rate exceeded: too many request bodies are awaiting their "
                           "signature check; retry later")
        budget.held += due
        self._charged += due

    def release(self) -> None:
        self._budget.held -= self._charged
        self._charged = 0
        self.streaming = True  # nothing more is charged


KEY = web.AppKey("emulator_unverified_bodies", UnverifiedBodies)
