# The C library, loaded once: malloc tuning, the heap figure of the health document, and tee(2).
# Invariant: every function degrades to a no-op, a 0 or None where glibc (or the symbol) is not there.
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys
from collections.abc import Callable
from typing import Any


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name, use_errno=True)
    except OSError:
        return None


def _symbol(name: str) -> Any:  # (a ctypes function, or None)
    libc = _libc()
    return getattr(libc, name, None) if libc is not None else None


def tune_malloc() -> None:
    """Ask glibc not to mmap/trim large blocks: fresh large allocations page-fault every time."""
    mallopt = _symbol("mallopt")
    if mallopt is None:
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_mmap_threshold, 32 * 1024 * 1024)
    mallopt(m_trim_threshold, 128 * 1024 * 1024)


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def heap_bytes() -> int:
    """Bytes the C allocator has handed out and not freed (glibc mallinfo2: uordblks + hblkhd)."""
    mallinfo2 = _symbol("mallinfo2")
    if mallinfo2 is None:
        return 0
    mallinfo2.restype = _MallInfo2
    info = mallinfo2()
    return int(info.uordblks + info.hblkhd)


def tee_function() -> Callable[[int, int, int, int], int] | None:
    """tee(2) (Linux, with splice(2) beside it in os), typed; None elsewhere."""
    if not sys.platform.startswith("linux") or not hasattr(os, "splice"):
        return None
    tee = _symbol("tee")
    if tee is None:
        return None
    tee.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_size_t, ctypes.c_uint]
    tee.restype = ctypes.c_ssize_t
    return tee  # type: ignore[no-any-return]
