"""Injected failures: make the next calls of an action fail with a chosen AWS error.

Some of ECR's modelled errors cannot arise in an emulator (ServerException, KmsException,
ThrottlingException under load); clients still have to handle them. ``POST /_emulator/faults``
with ``{"action": "PutImage", "error": "ThrottlingException", "count": 2}`` makes the next two
PutImage calls fail that way (``"action": "*"`` matches every action; ``status`` defaults to
500 for ServerException, else 400; ``message`` is optional). ``DELETE`` removes them all.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.emulator.errors import AwsError


@dataclass
class Fault:
    action: str
    error: str
    message: str
    status: int
    remaining: int


class Faults:
    def __init__(self) -> None:
        self._pending: list[Fault] = []

    def add(self, fault: Fault) -> None:
        self._pending.append(fault)

    def clear(self) -> None:
        self._pending.clear()

    def take(self, action: str) -> AwsError | None:
        """The error the next call of ``action`` must fail with, if one is pending."""
        for fault in self._pending:
            if fault.action in (action, "*"):
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._pending.remove(fault)
                return AwsError(fault.error, fault.message, status=fault.status)
        return None

    def describe(self) -> list[dict[str, object]]:
        return [vars(f).copy() for f in self._pending]

    def add_from_json(self, body: dict[str, object]) -> None:
        """Add the fault ``POST /_emulator/faults`` describes; ValueError if malformed."""
        error = body.get("error")
        if not isinstance(error, str) or not error:
            raise ValueError("'error' must name an AWS error, e.g. ServerException")
        self.add(Fault(
            action=str(body.get("action", "*")),
            error=error,
            message=str(body.get("message", f"Injected {error}")),
            status=int(str(body.get("status", 500 if error == "ServerException" else 400))),
            remaining=int(str(body.get("count", 1))),
        ))
