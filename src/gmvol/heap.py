"""Keep freed memory in the process for reuse, where glibc would hand it back to the OS.

A training step (or a forward pass over a batch of scans) allocates and frees the same large
activation tensors every time. glibc's malloc serves blocks above its mmap threshold (at most
32 MiB by default) with fresh mmap calls and unmaps them when freed, and trims the heap top, so
the next step page-faults every page back in, zero-filled, at every training step; the
faults and the time saved are measured in benchmarks/README.md.
Raising the thresholds makes malloc reuse the blocks instead. The process then keeps the memory
of its largest step, which it needs again at the next step anyway.
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # glibc's mallopt parameter numbers
MAX_MALLOPT_VALUE = 2**31 - 1  # mallopt takes a C int


def retain_freed_memory(max_block_bytes: int = MAX_MALLOPT_VALUE) -> bool:
    """Ask glibc's malloc to serve blocks up to `max_block_bytes` from its heap and to keep freed
    memory there; returns False (and changes nothing) where the C library is not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    value = min(max_block_bytes, MAX_MALLOPT_VALUE)
    settings = ((M_MMAP_THRESHOLD, value), (M_TRIM_THRESHOLD, MAX_MALLOPT_VALUE), (M_TOP_PAD, 64 << 20))
    return all(mallopt(option, setting) == 1 for option, setting in settings)
