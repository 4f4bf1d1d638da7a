"""Give the heap's free pages back to the OS now and then, so that a long-running node's RSS stays flat.

Every round a node allocates and frees buffers of megabytes (payloads, parameter bytes, float64 temporaries) from
several threads. glibc first serves such sizes with mmap, but each free raises its mmap threshold, after which
they come from the heap arenas; freed chunks between live ones are kept by the process, and RSS creeps up by a
megabyte or two a minute with nothing leaking. Forcing every big buffer back to mmap would stop that but makes
each round pay page faults on fresh memory (aggregation ran ~4x slower here). ``malloc_trim(0)`` instead hands
back the free pages of every arena in one call of a few milliseconds: cheap every half minute.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys
from functools import lru_cache


@lru_cache(maxsize=1)
def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to do
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def release_free_memory() -> bool:
    """Return free heap pages to the OS; False where the C library has no malloc_trim."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
