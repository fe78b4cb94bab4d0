"""How much of an upstream's manifests a fill or ``ecr-gateway sync`` copies.

Within the 4 MiB a manifest may take, an upstream can send an index of tens of thousands of
entries, indexes nested in indexes, or an image of tens of thousands of layers: copied whole,
each entry costs an upstream read and ECR uploads. A manifest past these bounds is refused
(MANIFEST_INVALID, the upstream's fault) before anything is copied, and an index's copy
fetches at most MAX_MANIFESTS manifests in all, nested ones included, MAX_INDEX_DEPTH deep,
and copies at most MAX_COPY_BLOBS blobs in all (its images' bounds alone would allow a
million: an index of a thousand images of a thousand one-byte layers).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.oci import errors as oci
from gateway.oci.errors import OciError
from gateway.oci.mediatypes import ParsedManifest

# Entries of one index, and manifests one index's copy fetches (real indexes hold a few
# platforms and their attestations: tens).
MAX_MANIFESTS = 1024
# Blobs (config and layers) of one image (a container runtime stacks a few hundred at most).
MAX_BLOBS = 1024
# Levels of an index's copy: an index may hold indexes, whose entries are images.
MAX_INDEX_DEPTH = 2
# Blobs of all the images one index's copy takes (real indexes: a few platforms of tens of
# layers, and their attestations).
MAX_COPY_BLOBS = 4096


def refused(reason: str) -> OciError:
    return OciError(oci.MANIFEST_INVALID, {"reason": reason}, status=502,
                    message=f"manifest invalid: {reason}")


def check(parsed: ParsedManifest) -> None:
    """Refuse a manifest with more entries or blobs than are copied."""
    if len(parsed.children) > MAX_MANIFESTS:
        raise refused(f"an index of {len(parsed.children)} manifests (at most "
                      f"{MAX_MANIFESTS} are copied)")
    if len(parsed.blobs) > MAX_BLOBS:
        raise refused(f"an image of {len(parsed.blobs)} blobs (at most {MAX_BLOBS} are "
                      "copied)")


@dataclass
class Fanout:
    """Where one index's copy stands: how deep this level is, and the manifests fetched and
    blobs taken so far by every level (counts shared by them all)."""

    depth: int = 0
    _fetched: list[int] = field(default_factory=lambda: [0])
    _blobs: list[int] = field(default_factory=lambda: [0])

    def child(self) -> Fanout:
        """The next entry of this level's index, counted; refused past the bounds."""
        if self.depth >= MAX_INDEX_DEPTH:
            raise refused(f"indexes nested more than {MAX_INDEX_DEPTH} deep")
        self._fetched[0] += 1
        if self._fetched[0] > MAX_MANIFESTS:
            raise refused(f"an index whose copy takes more than {MAX_MANIFESTS} manifests")
        return Fanout(self.depth + 1, self._fetched, self._blobs)

    def take_blobs(self, count: int) -> None:
        """An image of the copy with ``count`` blobs, counted; refused past the bound."""
        self._blobs[0] += count
        if self._blobs[0] > MAX_COPY_BLOBS:
            raise refused(f"an index whose copy takes more than {MAX_COPY_BLOBS} blobs")
