"""glibc malloc's own controls, reached through ctypes: the emulator fixes its thresholds
(``ecr_emulator/memory.py``), the gateway gives freed memory back once its uploads go idle
(``gateway/ecr/idle_trim.py``). Elsewhere (musl, macOS) every call answers False."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from typing import Any

M_TRIM_THRESHOLD = -1  # mallopt parameters, malloc.h
M_MMAP_THRESHOLD = -3


@functools.cache
def _libc() -> Any | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        mallopt, malloc_trim = libc.mallopt, libc.malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    malloc_trim.argtypes = [ctypes.c_size_t]
    return libc


def set_option(param: int, value: int) -> bool:
    """``mallopt(param, value)``; False where it is refused or missing."""
    libc = _libc()
    return libc is not None and bool(libc.mallopt(param, value))


def trim() -> bool:
    """``malloc_trim(0)``: every arena's free pages go back to the kernel, in the middle of
    the heap too (the heap's automatic trim only cuts free memory off its top). Blocking
    (ctypes lets go of the GIL): about 10 ms per 100 MiB given back. True when memory
    was given back."""
    libc = _libc()
    return libc is not None and bool(libc.malloc_trim(0))
