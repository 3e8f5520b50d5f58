"""Keep freed host memory inside the process instead of handing it back to the kernel.

XLA:CPU allocates each call's buffers afresh (one block for a DCGAN-32 step is 185 MB), and
glibc's malloc serves blocks that large, and any block from a thread's own arena, with a fresh
`mmap` that it unmaps again on `free`. Every step then touches every page of those buffers for
the first time: 45k page faults and about 80 ms of kernel time per bench_dcgan32 step on a
2-core machine, and writes into fresh pages run at a few GB/s. With one arena, no `mmap` and
no trimming, the second step reuses the first step's pages.

The CLI calls `keep_freed_memory()` first thing (opt out with GENART_KEEP_HOST_MEMORY=0).
From Python, call it before JAX's first computation: threads that already hold an arena keep
it. The cost is that the process keeps its peak heap until it exits (up to 2 GiB of freed
memory at the top of the heap, and all freed memory below it).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8

_applied = False


def _glibc() -> ctypes.CDLL | None:
    """The C library if it is glibc (has `gnu_get_libc_version` and `mallopt`), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    if not (hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt")):
        return None
    return libc


def keep_freed_memory() -> bool:
    """Configure glibc malloc to reuse freed memory (one arena, no mmap, no trimming).
    Returns whether it is in effect: False off glibc, or where glibc refused a setting."""
    global _applied
    if _applied:
        return True
    libc = _glibc()
    if libc is None:
        return False
    ok = all(libc.mallopt(param, value) == 1 for param, value in
             ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2**31 - 1)))
    _applied = ok
    return ok


def is_kept() -> bool:
    """Whether `keep_freed_memory()` took effect in this process."""
    return _applied


def keep_freed_memory_unless_opted_out() -> bool:
    """`keep_freed_memory()` unless the environment sets GENART_KEEP_HOST_MEMORY=0."""
    if os.environ.get("GENART_KEEP_HOST_MEMORY", "1").strip() == "0":
        return False
    return keep_freed_memory()
