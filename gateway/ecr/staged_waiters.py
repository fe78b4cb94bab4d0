"""Which repositories wait for a staged blob: those it was uploaded to that no image of
theirs references yet (ECR does not serve it there until one does).

Kept on disk beside the staged blobs (``waiting/<hex>/<repository's hash>``), not in the
process: a restarted gateway, or another process sharing the folder, must not drop a copy
that a repository it never heard of still reads from. A blob with no folder here (staged
without a repository, or by a version before) waits for nobody.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from pathlib import Path


class Waiters:
    def __init__(self, root: Path) -> None:
        self._root = root
        self._root.mkdir(parents=True, exist_ok=True)

    def add(self, name: str, repository: str) -> None:
        """``repository`` waits for the blob staged as ``name`` (its digest's hex)."""
        folder = self._root / name
        folder.mkdir(exist_ok=True)
        (folder / _file_name(repository)).touch()

    def release(self, name: str, repository: str) -> bool:
        """``repository`` no longer waits; whether nobody does any more (the copy may go)."""
        folder = self._root / name
        (folder / _file_name(repository)).unlink(missing_ok=True)
        try:
            folder.rmdir()
        except FileNotFoundError:
            return True
        except OSError:  # not empty: other repositories still read the copy
            return False
        return True

    def drop(self, name: str) -> None:
        """The copy is gone (evicted, found damaged): nobody waits for it any more."""
        shutil.rmtree(self._root / name, ignore_errors=True)

    def prune(self, staged: set[str]) -> None:
        """Drop the folders of blobs no longer staged (the process died between the two)."""
        for entry in os.scandir(self._root):
            if entry.name not in staged:
                with contextlib.suppress(OSError):
                    shutil.rmtree(entry.path)


def _file_name(repository: str) -> str:
    """A repository key (``registry/name``, slashes included) as one file name."""
    return hashlib.sha256(repository.encode()).hexdigest()[:32]
