"""Keep freed memory in the process while a run computes, instead of handing it back to the OS after every block.

glibc's ``malloc`` serves each large buffer (a block's activations: hundreds of MB) with a fresh ``mmap`` and
returns it with ``munmap`` when the tensor is freed, so every forward touches its activations' pages for the first
time again: about 360,000 page faults (4 KiB each) per bf16 forward of a 1024 px block of the released encoder,
0.65 s of system time against 1.66 s of user time (2-core AMD EPYC VM, 2026-12-08). :func:`keep_freed_memory`
turns that off for the duration of a run (``mallopt``: no ``mmap`` for large blocks, no trimming of the heap's top),
so freed buffers are reused by the next block, and restores glibc's settings and returns the free memory to the OS
(``malloc_trim``) when the last run ends. It is what PyTorch's CPU performance guide gets by preloading jemalloc or
TCMalloc, without a preload. The price is heap fragmentation: blocks of different shapes (a region's edge units)
leave holes that the next block's buffers do not fit, so :func:`release_fragments`, called between blocks, hands the
free pages back once the resident memory has grown past :data:`RSS_GROWTH` x the first block's peak.

Only glibc has these switches: with another C library (macOS, Windows, musl) the context is a no-op. The engines
enter it around their units (:func:`earth_embed.tiling.engine.run_plan`, each Ray actor); nothing else in the
process changes after it exits, except that glibc's mmap threshold stays at its fixed default (128 KiB, as before
glibc 2.6) instead of adapting.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
import platform
import threading
from collections.abc import Iterator
from typing import Any

#: ``mallopt`` parameters (glibc's ``malloc.h``).
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
#: glibc's defaults, restored on exit: mmap for up to 65,536 large blocks; trim a free top above 128 KiB.
DEFAULT_MMAP_MAX = 65536
DEFAULT_TRIM_THRESHOLD = 128 * 1024
#: While kept: the largest trim threshold ``mallopt`` takes (an ``int``): the heap's free top is trimmed only
#: beyond 2 GiB.
KEEP_TRIM_THRESHOLD = 2**31 - 1
#: Set to ``0`` to leave glibc's settings alone (e.g. to compare, or where memory must go back to the OS at once).
ENV_SWITCH = "EARTH_EMBED_KEEP_FREED_MEMORY"

#: How much the resident memory may grow over its level after the first block before the free pages go back.
RSS_GROWTH = 1.1

_LOCK = threading.Lock()
_depth = 0
_baseline_rss: int | None = None


@functools.cache
def _glibc() -> Any | None:
    """The C library, when it is glibc with ``mallopt`` and ``malloc_trim``; None otherwise."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    if not (hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim")):
        return None
    libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    return libc


def available() -> bool:
    """Whether this process can keep freed memory (glibc, and not switched off by :data:`ENV_SWITCH`)."""
    return _glibc() is not None and os.environ.get(ENV_SWITCH, "1") != "0"


@contextlib.contextmanager
def keep_freed_memory() -> Iterator[bool]:
    """Keep freed memory mapped in the process while inside (nested and concurrent uses share one setting; the
    last to leave restores glibc's defaults and trims). Yields whether it is in effect."""
    global _depth, _baseline_rss
    libc = _glibc() if available() else None
    if libc is None:
        yield False
        return
    with _LOCK:
        _depth += 1
        if _depth == 1:
            libc.mallopt(M_MMAP_MAX, 0)
            libc.mallopt(M_TRIM_THRESHOLD, KEEP_TRIM_THRESHOLD)
    try:
        yield True
    finally:
        with _LOCK:
            _depth -= 1
            if _depth == 0:
                _baseline_rss = None
                libc.mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
                libc.mallopt(M_TRIM_THRESHOLD, DEFAULT_TRIM_THRESHOLD)
                libc.malloc_trim(0)


def _rss_bytes() -> int:
    """This process's resident memory now (Linux ``/proc/self/statm``)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def release_fragments() -> bool:
    """Between blocks, while memory is kept: when the process's resident memory exceeds :data:`RSS_GROWTH` x what it
    was at the first call (after the first block, whose freed pages stay resident: its working set), hand the heap's
    free pages back to the OS (``malloc_trim``). (Not the process's peak: a child process inherits its parent's.) Blocks of different shapes (a
    region's edge units) leave holes too small for the next block's buffers, so a kept heap otherwise grows by about
    0.2 GB per unit over a 16-unit region. Returns whether it trimmed."""
    global _baseline_rss
    libc = _glibc()
    if libc is None or _depth == 0:
        return False
    rss = _rss_bytes()
    if _baseline_rss is None:  # kept, the first block's pages are still resident: its working set
        _baseline_rss = rss
        return False
    if rss <= RSS_GROWTH * _baseline_rss:
        return False
    libc.malloc_trim(0)
    return True


__all__ = ["ENV_SWITCH", "available", "keep_freed_memory", "release_fragments"]
