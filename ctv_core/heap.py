"""Handing freed memory back to the operating system (glibc's ``malloc_trim``; a no-op elsewhere).

Loading a CT series allocates and frees one pixel array per slice; glibc keeps much of that freed
memory in the process's heap (its threshold for giving large blocks their own mapping grows as
they are freed), so the process's resident size stays about 90 MB above what it uses for a
512 x 512 x 200 CT until something trims the heap. The later stages (the network above all)
then peak that much higher. ``benchmarks/predict_profile.py`` shows the effect per stage.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:
        return None


def return_free_memory() -> bool:
    """Give the heap's free pages back to the operating system; True if glibc's ``malloc_trim`` was there
    to do it (Linux with glibc), False elsewhere (macOS, Windows, musl), where nothing is done."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
