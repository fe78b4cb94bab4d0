"""Token scopes of the docker token-auth spec: ``repository:NAME:pull,push``,
``registry:catalog:*``.

A scope names a resource type, a resource name and the actions wanted on it. Names may hold
colons (``repository:host:5000/app:pull``): the type ends at the first colon, the actions
start after the last one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

REPOSITORY_ACTIONS = ("pull", "push", "delete")
CATALOG = ("registry", "catalog")


@dataclass(frozen=True)
class Scope:
    type: str
    name: str
    actions: frozenset[str]

    def __str__(self) -> str:
        return f"{self.type}:{self.name}:{','.join(sorted(self.actions))}"

    def to_claim(self) -> dict[str, object]:
        return {"type": self.type, "name": self.name, "actions": sorted(self.actions)}


def parse_scope(text: str) -> Scope | None:
    """One resource scope; None when it is not of the form ``type:name:actions``."""
    kind, sep, rest = text.partition(":")
    name, sep2, actions = rest.rpartition(":")
    if not sep or not sep2 or not kind or not name:
        return None
    kind = kind.split("(", 1)[0]  # "repository(plugin)" is a repository
    wanted = frozenset(a for a in actions.split(",") if a)
    if kind == "repository" and "*" in wanted:
        wanted = frozenset(REPOSITORY_ACTIONS)
    return Scope(kind, name, wanted)


def parse_scopes(values: Iterable[str]) -> list[Scope]:
    """Every scope in ``values`` (GET repeats ``scope=``, POST separates them by spaces);
    malformed ones are skipped, as the reference token server does."""
    found: list[Scope] = []
    for value in values:
        for part in value.split():
            scope = parse_scope(part)
            if scope is not None:
                found.append(scope)
    return found


def needed_scope(name: str | None, action: str) -> Scope:
    """The scope a request for ``action`` on repository ``name`` asks for in its challenge.

    A push also reads (blob existence checks), so it asks for ``pull,push`` as the
    reference registry does; the catalog is ``registry:catalog:*``.
    """
    if action == "catalog" or name is None:
        return Scope(*CATALOG, frozenset({"*"}))
    actions = {"pull", "push"} if action == "push" else {action}
    return Scope("repository", name, frozenset(actions))
