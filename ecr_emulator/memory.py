"""Keeping freed memory for the next request rather than handing it back to the system.

With its default, adaptive settings, glibc's malloc returns a freed block above its mmap
threshold to the kernel, and trims the heap's top once more than twice that is free. A layer
part arrives as a stream of socket reads of up to 1 MiB, each a new bytes object (and
aiohttp's reader joins those that arrive together), so the same few MiB are
allocated, freed and trimmed over and over, and every allocation faults in fresh pages. On a
virtual machine whose freed pages go back to its host that fault is taken in the host too.
Measured on 512 MiB skopeo pushes through a gateway: 63,000-72,000 minor faults in the
emulator per push and 3.56-3.66 CPU-s per GiB; with the thresholds fixed as below, 60-300
faults and 3.24-3.46 CPU-s per GiB.
"""

from __future__ import annotations

import logging

from ecr_model import malloc

log = logging.getLogger(__name__)

MMAP_THRESHOLD = 4 * 1024 * 1024  # blocks up to this come from the heap (and go back to it)
TRIM_THRESHOLD = 32 * 1024 * 1024  # free memory the heap's top keeps


def keep_freed_memory() -> bool:
    """Fix malloc's thresholds (glibc only); False where the C library has no ``mallopt``."""
    kept = malloc.set_option(malloc.M_MMAP_THRESHOLD, MMAP_THRESHOLD) and \
        malloc.set_option(malloc.M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    if not kept:
        log.info("malloc's thresholds could not be set: freed memory goes back to the system")
    return kept
