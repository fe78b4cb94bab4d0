"""What the kernel tells of a process the tests started."""

from __future__ import annotations

import re
from pathlib import Path


def peak_rss(pid: int) -> int:
    """A process's peak resident set size in bytes (VmHWM)."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    assert match is not None, status
    return int(match[1]) * 1024
