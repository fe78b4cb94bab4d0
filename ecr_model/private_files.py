"""Folders and files of blob bytes that only the process's own user can reach.

The gateway's blob cache and staging store, and the emulator's data folder, hold bytes of
private repositories and serve them after checking little more than their size. So no
other local user may read them, nor put a file or a link of their own where they would be
served: their folders are mode 0700 and must belong to the process's user, their files are
created 0600, and they are opened without following a symbolic link.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

# Opening a cached or staged file never reads through a link put in its place.
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class NotPrivate(PermissionError):
    """A folder of blob bytes that another user controls."""


def private_dir(path: Path) -> None:
    """Make ``path`` (and missing parents) a folder only this user can enter. One that is
    a link, or belongs to another user, is refused (NotPrivate): whoever owns it could
    swap the files in it. So is one below a folder of another user's (:func:`check_above`),
    before anything is made there."""
    check_above(path)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise NotPrivate(f"{path} is not a folder (a symbolic link?)")
    if info.st_uid != os.geteuid():
        raise NotPrivate(f"{path} belongs to another user (uid {info.st_uid})")
    if stat.S_IMODE(info.st_mode) & 0o077:
        os.chmod(path, 0o700)  # made by a version that left it readable by everyone


def check_above(path: Path) -> None:
    """NotPrivate when a folder above ``path`` (links above it followed; ``path`` itself is
    for the caller to judge) belongs to another user than this one and root. Its owner may
    rename what it holds at any time, whatever the modes below, and put a folder of theirs
    in its place: a check made at start, and every later open by name, would then go into
    that folder (the emulator would read a credentials file of theirs, and follow their
    links to the layers)."""
    own = os.geteuid()
    above = Path(os.path.realpath(path.absolute().parent))
    for folder in (above, *above.parents):
        try:
            owner = os.stat(folder).st_uid
        except OSError:
            continue  # not made yet (mkdir says why it cannot be) or not ours to look at
        if owner not in (own, 0):
            raise NotPrivate(f"{folder} belongs to another user (uid {owner}), who could put "
                             f"a folder of theirs in place of {path}")


def own_regular_file(info: os.stat_result) -> bool:
    """Whether an lstat answer is a plain file of this user's that nobody else may write."""
    return (stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid()
            and not stat.S_IMODE(info.st_mode) & 0o022)


def open_read(path: Path) -> int:
    """A descriptor to read ``path``; OSError (ELOOP) when it is a symbolic link."""
    return os.open(path, os.O_RDONLY | NOFOLLOW)


def create_private(path: Path) -> int:
    """A new file at ``path``, mode 0600, for writing; it must not exist (nor be a link)."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW, 0o600)
