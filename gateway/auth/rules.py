"""Access rules: repository name patterns → users and groups → actions.

Rules are tried in order and the first one that matches both the repository and the caller
decides (its actions, nothing else); when none matches, nothing is allowed. Patterns: ``*``
matches within one path segment, ``**`` across segments, ``?`` one character, and
``{user}`` stands for the caller's own name (``users/{user}/**``). ``users: ["*"]`` means
every authenticated user. A rule with ``anonymous: true`` also applies to callers without
credentials, who only ever get its ``pull``; when no rule applies to such a caller, the
route serving the name decides (``routes[].anonymous_pull``, ``mirrors.*.anonymous_pull``).
``catalog`` in a rule's actions lets its users
call ``/v2/_catalog`` (whatever the pattern); the listing shows only what they may pull.

Rules with ``ecr=True`` match the ECR repository a name resolves to (after routes and
mirrors) instead of the name. They are a second gate: the first one that applies decides
which of the name rules' actions remain. Where none applies, an ECR repository a mirror
serves keeps only ``pull``: a name rule alone never lets anyone push into, or delete from,
what every mirror client pulls.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.auth.scopes import CATALOG, REPOSITORY_ACTIONS, Scope
from gateway.config.errors import ConfigError
from gateway.oci.names import is_name

if TYPE_CHECKING:
    from gateway.config import AccessRuleConfig

ACTIONS = (*REPOSITORY_ACTIONS, "catalog")
NOTHING: frozenset[str] = frozenset()
PULL = frozenset({"pull"})
EVERY = frozenset(REPOSITORY_ACTIONS)


@dataclass(frozen=True)
class EcrRepository:
    """The ECR repository a request's name resolves to, for the ``ecr`` rules."""

    name: str
    mirrored: bool  # a mirror serves it (see Router.mirrored)
    # Reached through a mirror (``?ns=``) whose ``anonymous_pull`` is off: no rule opens it
    # to anonymous callers (see AccessRules.allowed).
    closed_mirror: bool = False


def compile_pattern(pattern: str, user: str | None = None) -> re.Pattern[str] | None:
    """The regular expression of a repository pattern; None if it needs a user and has none."""
    if "{user}" in pattern and user is None:
        return None
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern.startswith("{user}", i):
            out.append(re.escape(user or ""))
            i += len("{user}")
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z", re.DOTALL)


@dataclass(frozen=True)
class Rule:
    repository: str
    users: frozenset[str]
    groups: frozenset[str]
    actions: frozenset[str]
    anonymous: bool = False
    ecr: bool = False  # the pattern matches ECR repository names, not client names

    def applies_to(self, subject: str | None, members: Mapping[str, frozenset[str]]) -> bool:
        if subject is None:
            return self.anonymous
        if "*" in self.users or subject in self.users:
            return True
        return any(subject in members.get(group, NOTHING) for group in self.groups)

    def covers(self, repository: str, subject: str | None) -> bool:
        regex = _regex(self.repository, subject if "{user}" in self.repository else None)
        return regex is not None and regex.match(repository) is not None


@functools.lru_cache(maxsize=4096)
def _regex(pattern: str, user: str | None) -> re.Pattern[str] | None:
    return compile_pattern(pattern, user)


class AccessRules:
    """``anonymous_default`` answers for callers without credentials when no rule does:
    whether the route serving the name was configured with ``anonymous_pull``."""

    def __init__(self, rules: Iterable[Rule], groups: Mapping[str, Iterable[str]],
                 anonymous_default: Callable[[str, str | None], bool] | None = None,
                 ecr_of: Callable[[str, str | None], EcrRepository | None] | None = None
                 ) -> None:
        """``ecr_of`` resolves a name (and the mirror namespace a request named, if any) to
        its ECR repository (None: no ECR gate at all)."""
        self.rules = list(rules)
        self._members = {name: frozenset(users) for name, users in groups.items()}
        self._anonymous_default = anonymous_default
        self._ecr_of = ecr_of
        by_name = [rule for rule in self.rules if not rule.ecr]
        by_ecr = [rule for rule in self.rules if rule.ecr]
        self._decide = functools.lru_cache(maxsize=65536)(
            functools.partial(self._first_match, by_name))
        self._decide_ecr = functools.lru_cache(maxsize=65536)(
            functools.partial(self._first_match, by_ecr))

    @classmethod
    def allow_all(cls) -> AccessRules:
        """Every authenticated caller may do everything (the upstream decides instead)."""
        return cls([Rule("**", frozenset({"*"}), NOTHING, frozenset(ACTIONS)),
                    Rule("**", frozenset({"*"}), NOTHING, EVERY, ecr=True)], {})

    def allowed(self, subject: str | None, repository: str,
                ns: str | None = None) -> frozenset[str]:
        """The repository actions ``subject`` (None: anonymous) may perform on ``repository``
        (as a request naming the mirror namespace ``ns`` reaches it)."""
        target = self._target(repository, ns)  # resolved once for both kinds of rules
        if subject is None and target is not None and target.closed_mirror:
            # Name rules speak of the names clients use here; a mirror closed to anonymous
            # pulls stays closed to them (its fills spend the gateway's upstream identity).
            return NOTHING
        decided: frozenset[str] | None = self._decide(subject, repository)
        if decided is None:
            anonymous = subject is None and self._anonymous_default is not None \
                and self._anonymous_default(repository, ns)
            decided = PULL if anonymous else NOTHING
        return decided & self._ecr_allowed(subject, target) if decided else NOTHING

    def ecr_allowed(self, subject: str | None, repository: str,
                    ns: str | None = None) -> frozenset[str]:
        """What the ``ecr`` rules leave of any grant on ``repository``'s ECR repository."""
        return self._ecr_allowed(subject, self._target(repository, ns))

    def _target(self, repository: str, ns: str | None) -> EcrRepository | None:
        return self._ecr_of(repository, ns) if self._ecr_of is not None else None

    def _ecr_allowed(self, subject: str | None, target: EcrRepository | None) -> frozenset[str]:
        if target is None:
            return EVERY
        decided: frozenset[str] | None = self._decide_ecr(subject, target.name)
        if decided is not None:
            return decided
        return PULL if target.mirrored else EVERY

    def _first_match(self, rules: list[Rule], subject: str | None,
                     repository: str) -> frozenset[str] | None:
        for rule in rules:
            if rule.applies_to(subject, self._members) and rule.covers(repository, subject):
                actions = rule.actions & EVERY
                return actions & PULL if subject is None else actions
        return None

    def may_list_catalog(self, subject: str | None) -> bool:
        if subject is None:
            return False
        return any("catalog" in rule.actions and not rule.ecr
                   and rule.applies_to(subject, self._members) for rule in self.rules)

    def grant(self, subject: str | None, requested: Iterable[Scope]) -> list[Scope]:
        """What a token for ``subject`` may hold: each requested scope cut down to what the
        rules allow (scopes left empty are dropped)."""
        granted: dict[tuple[str, str], set[str]] = {}
        for scope in requested:
            if scope.type == "repository":
                # Only names a request can carry (gateway/oci/names.py): a pattern like
                # secret/** must not be seen to grant secret/../other, nor Secret/app.
                allowed: frozenset[str] = self.allowed(subject, scope.name) \
                    if is_name(scope.name) else NOTHING
                actions = scope.actions & allowed
            elif (scope.type, scope.name) == CATALOG and self.may_list_catalog(subject):
                actions = scope.actions & {"*"}
            else:
                actions = NOTHING
            if actions:
                granted.setdefault((scope.type, scope.name), set()).update(actions)
        return [Scope(kind, name, frozenset(actions))
                for (kind, name), actions in granted.items()]


# The configuration's checks of access rules (called by gateway/config/models.py).


def check_rule(rule: AccessRuleConfig) -> None:
    if rule.ecr_repository is not None and rule.repository != "**":
        raise ConfigError("", "a rule names repository or ecr_repository, not both")
    if rule.ecr_repository is not None and "catalog" in rule.actions:
        raise ConfigError("actions", "catalog is granted by repository rules, not "
                          "ecr_repository ones")
    unknown = set(rule.actions) - set(ACTIONS)
    if unknown:
        raise ConfigError("actions", f"unknown action {sorted(unknown)[0]!r} "
                          f"({', '.join(ACTIONS)})")


def check_rule_groups(rules: list[AccessRuleConfig], groups: Mapping[str, list[str]]) -> None:
    """Every group a rule names is defined in ``auth.groups``."""
    for i, rule in enumerate(rules):
        missing = [group for group in rule.groups if group not in groups]
        if missing:
            raise ConfigError(f"rules[{i}].groups", f"group {missing[0]!r} is not defined in "
                              "auth.groups")
