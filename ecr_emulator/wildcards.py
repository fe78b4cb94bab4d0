"""AWS wildcard patterns: ``*`` any run of characters, ``?`` one character, everything else
literal. IAM policy elements (Action, Resource) and ECR's filters (scanning repository
filters, tag mutability exclusions) read patterns this way; ``fnmatch`` would also take
``[...]`` as a character class, and so match names AWS does not.
"""

from __future__ import annotations

import functools
import re


@functools.lru_cache(maxsize=4096)
def _compiled(pattern: str) -> re.Pattern[str]:
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile("".join(parts), re.DOTALL)


def matches(value: str, pattern: str) -> bool:
    """Whether ``value`` matches ``pattern`` whole (case-sensitive)."""
    return _compiled(pattern).fullmatch(value) is not None
