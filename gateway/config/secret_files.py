"""Secrets kept in files (passwords, the token-signing key), and a warning when others on
the machine may read one: chmod 600 it (a Kubernetes Secret: ``defaultMode: 0400``, as the
shipped manifests and chart mount theirs)."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

log = logging.getLogger(__name__)

_warned: set[str] = set()  # each file once per process, however often it is read


def read_secret_file(path: str | Path, what: str) -> str:
    """The file's text without surrounding whitespace (a trailing newline is not part of a
    password)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8").strip()
    warn_if_readable_by_others(path, what)
    return text


def warn_if_readable_by_others(path: Path, what: str) -> None:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return
    if mode & 0o077 and str(path) not in _warned:
        _warned.add(str(path))
        log.warning("%s %s is readable by others (mode %o); chmod 600 it", what, path, mode)
