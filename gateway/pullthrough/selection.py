"""Which tags of a repository ``ecr-gateway sync`` copies: a regular expression, a semver
range, the last N (by semver where tags are versions, else by name), or all of them.

The tags are the upstream's word, and Python's ``re`` backtracks: a pattern such as
``(a+)+$`` or ``([0-9]+[.]?)+$`` takes exponential time against a tag the upstream chose, and
``re`` has no timeout. The pattern is matched in a child process, ended after
:data:`PATTERN_SECONDS`.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from dataclasses import dataclass

# 1, 1.2, 1.2.3, v1.2.3, 1.2.3-rc.1 (build metadata ignored)
# Each number at most 18 digits (a tag is the upstream's word: int() of thousands of digits
# is refused, or slow); pre-release numbers alike, longer ones are no version.
_MAX_DIGITS = 18
_NUMBER = f"([0-9]{{1,{_MAX_DIGITS}}})"
_VERSION = re.compile(rf"v?{_NUMBER}(?:\.{_NUMBER})?(?:\.{_NUMBER})?(?:-([0-9A-Za-z.-]+))?"
                      r"(?:\+\S*)?")
_COMPARATOR = re.compile(r"^(>=|<=|>|<|=|\^|~)?\s*(v?\d+(?:\.\d+){0,2}(?:-[0-9A-Za-z.-]+)?)$")

# (major, minor, patch, pre-release identifiers): numeric identifiers as (0, n, ""), others
# as (1, 0, text), a release as ((2, 0, ""),), so tuples compare in semver's order.
Identifier = tuple[int, int, str]
Version = tuple[int, int, int, tuple[Identifier, ...]]
_RELEASE: tuple[Identifier, ...] = ((2, 0, ""),)
# Below every pre-release of a version: "<2.0.0" as an upper bound excludes 2.0.0-rc.1 too.
_LOWEST: tuple[Identifier, ...] = ((-1, 0, ""),)


# How long a pattern may take against all of a source's tags (a hundred thousand tags take
# well under a second with any pattern that does not backtrack).
PATTERN_SECONDS = 10.0
# The child: [pattern, tags] on stdin, the matching tags on stdout (isolated: no site, no
# environment, nothing but the standard library).
_MATCHER = ("import json, re, sys; pattern, tags = json.load(sys.stdin); found = "
            "re.compile(pattern).fullmatch; json.dump([t for t in tags if found(t)], sys.stdout)")


async def matching(pattern: str, tags: list[str]) -> list[str]:
    """The tags ``pattern`` matches whole; a ValueError when that takes over
    PATTERN_SECONDS."""
    seconds = PATTERN_SECONDS
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-I", "-S", "-c", _MATCHER, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    try:
        out, _ = await asyncio.wait_for(child.communicate(json.dumps([pattern, tags]).encode()),
                                        seconds)
    except TimeoutError:
        raise ValueError(f"the tag pattern {pattern!r} took more than {seconds:g} seconds "
                         f"against {len(tags)} tags (it backtracks: rewrite it without nested "
                         "or overlapping repetition)") from None
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    if child.returncode != 0:
        raise ValueError(f"the tag pattern {pattern!r} could not be matched")
    found: list[str] = json.loads(out)
    return found


def parse_version(tag: str) -> Version | None:
    match = _VERSION.fullmatch(tag)
    if match is None:
        return None
    major, minor, patch = (int(part or 0) for part in match.groups()[:3])
    pre = match[4]
    if pre is not None and any(p.isdigit() and len(p) > _MAX_DIGITS for p in pre.split(".")):
        return None
    order = _RELEASE if pre is None else tuple(
        (0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split("."))
    return (major, minor, patch, order)


def _bounds(operator: str, version: Version, given: int) -> list[tuple[str, Version]]:
    """A comparator as one or two plain comparisons; ``given`` counts the numbers written."""
    major, minor, patch, _ = version
    if operator == "^":  # same left-most non-zero number
        upper = (major + 1, 0, 0) if major else (0, minor + 1, 0) if minor or given < 3 \
            else (0, 0, patch + 1)
        return [(">=", version), ("<", (*upper, _LOWEST))]
    if operator == "~":  # same major.minor (same major when only the major is given)
        upper = (major + 1, 0, 0) if given == 1 else (major, minor + 1, 0)
        return [(">=", version), ("<", (*upper, _LOWEST))]
    return [(operator or "=", version)]


@dataclass(frozen=True)
class SemverRange:
    """Space-separated comparators, all of which must hold; ``||`` separates alternatives:
    ``>=1.2 <2``, ``^1.4``, ``~2.1``, ``1.2.3 || >=3``. As in npm's ranges, a pre-release is
    chosen only by an alternative that names one."""

    # Each alternative: its comparisons, and whether it names a pre-release.
    alternatives: tuple[tuple[tuple[tuple[str, Version], ...], bool], ...]

    @classmethod
    def parse(cls, text: str) -> SemverRange:
        alternatives = []
        for part in text.split("||"):
            comparisons: list[tuple[str, Version]] = []
            names_pre = False
            for token in re.findall(r"(?:>=|<=|>|<|=|\^|~)?\s*v?[0-9][^\s|]*", part):
                match = _COMPARATOR.match(token.strip())
                version = parse_version(match[2]) if match else None
                if match is None or version is None:
                    raise ValueError(f"not a semver comparator: {token.strip()!r}")
                given = match[2].lstrip("v").split("-")[0].count(".") + 1
                comparisons += _bounds(match[1] or "", version, given)
                names_pre = names_pre or not _released(version)
            if not comparisons:
                raise ValueError(f"empty semver range in {text!r}")
            alternatives.append((tuple(comparisons), names_pre))
        return cls(tuple(alternatives))

    def __contains__(self, tag: str) -> bool:
        version = parse_version(tag)
        if version is None:
            return False
        return any(all(_holds(version, op, bound) for op, bound in comparisons)
                   and (names_pre or _released(version))
                   for comparisons, names_pre in self.alternatives)


def _released(version: Version) -> bool:
    return version[3] == _RELEASE


def _holds(version: Version, operator: str, bound: Version) -> bool:
    return {"=": version == bound, ">=": version >= bound, ">": version > bound,
            "<=": version <= bound, "<": version < bound}[operator]


@dataclass(frozen=True)
class TagSelection:
    pattern: re.Pattern[str] | None = None
    semver: SemverRange | None = None
    last: int | None = None

    @classmethod
    def of(cls, regex: str | None = None, semver: str | None = None,
           last: int | None = None) -> TagSelection:
        if last is not None and (not isinstance(last, int) or isinstance(last, bool)
                                 or last < 1):
            raise ValueError("last must be a whole number, at least 1")
        if regex is not None and not isinstance(regex, str):
            raise ValueError("regex must be a string")
        if semver is not None and not isinstance(semver, str):
            raise ValueError("semver must be a string")
        try:
            pattern = re.compile(regex) if regex else None
        except re.error as exc:
            raise ValueError(f"regex {regex!r} is not a regular expression: {exc}") from None
        return cls(pattern, SemverRange.parse(semver) if semver else None, last)

    async def select(self, tags: list[str]) -> list[str]:
        """The chosen tags, in order (the pattern matched within PATTERN_SECONDS)."""
        if self.pattern is not None:
            tags = await matching(self.pattern.pattern, tags)
        chosen = [t for t in tags if self.semver is None or t in self.semver]
        if self.last is not None:
            chosen = sorted(chosen, key=_order)[-self.last:]
        return sorted(chosen, key=_order)


def _order(tag: str) -> tuple[int, Version | tuple[()], str]:
    """Versions in version order after every other tag (in name order)."""
    version = parse_version(tag)
    return (1, version, tag) if version is not None else (0, (), tag)
