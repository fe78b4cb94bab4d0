"""What a failed run says about itself, readable from the end of its log.

CI keeps only the end of a run's output, and pytest does not shorten assertion messages on
CI: a failed comparison of two blobs printed thousands of lines of byte reprs as its diff,
which pushed the failing test's name out of the kept tail. So comparisons of long byte
strings explain themselves in a few lines (sizes, the first differing offset, the bytes
around it, both digests), and the names of the failed tests are printed once more after the
short summary, just above the final count.
"""

from __future__ import annotations

import hashlib
from collections.abc import Generator, Sequence
from typing import Any

import pytest

LONG = 256  # bytes: longer strings are summarised, shorter ones keep pytest's own diff
AROUND = 16  # bytes shown on each side of the first difference


def _first_difference(left: bytes, right: bytes) -> int:
    for index, (a, b) in enumerate(zip(left, right, strict=False)):
        if a != b:
            return index
    return min(len(left), len(right))


def explain_bytes(left: bytes, right: bytes) -> list[str]:
    """A short account of how two byte strings differ."""
    at = _first_difference(left, right)
    lines = [f"bytes differ: left {len(left)} bytes, right {len(right)} bytes"]
    if at == len(left) < len(right):
        lines.append(f"left is the first {len(left)} bytes of right ({len(right) - at} missing)")
    elif at == len(right) < len(left):
        lines.append(f"right is the first {len(right)} bytes of left ({len(left) - at} more)")
    else:
        lines.append(f"first difference at offset {at}")
    start = max(0, at - AROUND)
    lines.append(f"left[{start}:{at + AROUND}]:  {left[start:at + AROUND].hex(' ')}")
    lines.append(f"right[{start}:{at + AROUND}]: {right[start:at + AROUND].hex(' ')}")
    lines.append(f"sha256 left {hashlib.sha256(left).hexdigest()}")
    lines.append(f"sha256 right {hashlib.sha256(right).hexdigest()}")
    return lines


def _is_long_bytes(value: object) -> bool:
    return isinstance(value, bytes | bytearray | memoryview) and len(value) > LONG


def explain(left: object, right: object) -> list[str] | None:
    """The account of ``left == right`` failing, where long byte strings are involved (alone
    or as the items of two lists or tuples); None leaves it to pytest."""
    if _is_long_bytes(left) or _is_long_bytes(right):
        if isinstance(left, bytes | bytearray | memoryview) and isinstance(
                right, bytes | bytearray | memoryview):
            return explain_bytes(bytes(left), bytes(right))
        return [f"{type(left).__name__} == {type(right).__name__}: a long byte string "
                f"({max(len(v) for v in (left, right) if _is_long_bytes(v))} bytes) "  # type: ignore[arg-type]
                "against something else"]
    if isinstance(left, list | tuple) and isinstance(right, list | tuple) and any(
            _is_long_bytes(item) for item in (*left, *right)):
        return _explain_items(left, right)
    return None


def _explain_items(left: Sequence[Any], right: Sequence[Any]) -> list[str]:
    lines = [f"sequences of byte strings differ: left {len(left)} items, right {len(right)}"]
    for index, (a, b) in enumerate(zip(left, right, strict=False)):
        if a != b:
            inner = explain(a, b) or [f"{a!r:.200} != {b!r:.200}"]
            lines += [f"item {index}:", *(f"  {line}" for line in inner)]
    return lines


def pytest_assertrepr_compare(config: pytest.Config, op: str, left: object,
                              right: object) -> list[str] | None:
    if op != "==":
        return None
    explained = explain(left, right)
    return None if explained is None else [f"{type(left).__name__} == {type(right).__name__}",
                                           *explained]


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_terminal_summary(terminalreporter: Any) -> Generator[None, None, None]:
    # Outermost wrapper: this runs after the terminal reporter's short summary.
    yield
    failed = [*terminalreporter.stats.get("failed", ()), *terminalreporter.stats.get("error", ())]
    if failed:
        terminalreporter.write_sep("=", "failed tests, again")
        for report in failed:
            nodeid = getattr(report, "nodeid", "") or "(collection)"
            terminalreporter.write_line(f"{report.when or 'collect'}: {nodeid}")
