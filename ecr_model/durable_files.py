"""Making a file's name, not only its bytes, outlive a power cut.

fsync of a file writes its data and size; the directory entry that names it (made by
create, link, rename or mkdir) is the directory's data, written only by an fsync of the
directory itself. A process killed with ``kill -9`` loses neither (the kernel holds both);
a machine that loses power may lose the name and keep the bytes, unreachable.
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make the entries of folder ``path`` (names created, linked, renamed) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(path: Path) -> None:
    """``mkdir -p`` whose new folders are each recorded durably in their parent."""
    if path.is_dir():
        return
    make_dirs(path.parent)
    try:
        path.mkdir()
    except FileExistsError:
        return  # made meanwhile, by a caller that records it
    fsync_dir(path.parent)
