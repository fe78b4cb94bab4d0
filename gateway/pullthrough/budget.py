"""How much disk the pull-through's spools may take at once.

Any caller allowed to pull from a mirror can ask for images ECR does not hold yet, and each
cold blob is spooled to the gateway's disk while it is copied into ECR. Without a bound, a
burst of cold pulls of large images (or an upstream that sends a blob without a length)
fills the disk that pushes stage their uploads on too. A blob whose size is known takes its
whole size before its first byte is read, so a pull that does not fit is refused cleanly
(503 with Retry-After) instead of breaking off midway; one whose size the upstream does not
say takes its bytes as they arrive.
"""

from __future__ import annotations

from gateway.observability.metrics import PULLTHROUGH_SPOOL_BYTES
from gateway.oci import errors as oci
from gateway.oci.errors import OciError


class SpoolBudget:
    """Bytes the spools in flight may hold, on the event loop (no locking needed)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.in_use = 0

    def claim(self) -> SpoolClaim:
        return SpoolClaim(self)

    def _take(self, size: int) -> bool:
        if self.in_use + size > self.max_bytes:
            return False
        self.in_use += size
        PULLTHROUGH_SPOOL_BYTES.set(self.in_use)
        return True

    def _give_back(self, size: int) -> None:
        self.in_use -= size
        PULLTHROUGH_SPOOL_BYTES.set(self.in_use)


class SpoolClaim:
    """One blob's share of the budget, given back once its spool is closed."""

    def __init__(self, budget: SpoolBudget) -> None:
        self._budget = budget
        self.held = 0

    def take(self, size: int, digest: str) -> None:
        """Take ``size`` more bytes, or raise the 503 a client hears when they do not fit."""
        if not self._budget._take(size):
            raise spool_full(digest, self.held + size, self._budget)
        self.held += size

    def release(self) -> None:
        self._budget._give_back(self.held)
        self.held = 0


def spool_full(digest: str, size: int, budget: SpoolBudget) -> OciError:
    detail = {"digest": digest, "size": size, "spool_max_bytes": budget.max_bytes}
    if size > budget.max_bytes:  # no wait makes it fit: the operator's setting must change
        return OciError(oci.UNAVAILABLE, detail,
                        message="not in ECR, and larger than the gateway's pull-through "
                                "spool (blobs.staging.pullthrough_max_bytes)")
    return OciError(oci.UNAVAILABLE, detail, headers={"Retry-After": "10"},
                    message="not in ECR, and the gateway's pull-through spool is full with "
                            "other blobs being copied: retry in a while")
