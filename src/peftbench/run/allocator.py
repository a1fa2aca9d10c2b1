"""glibc malloc: keep freed memory for reuse during training instead of returning it every step.

PyTorch's CPU tensors come from ``malloc``. Under glibc's default, dynamic thresholds, a training
step that frees its activations can push the heap top over the trim threshold (or a block over
the mmap threshold), so the memory goes back to the kernel and the next step faults it in again,
page by page: thousands of page faults per step, ~7 % of a small CPU step here, and how many
depends on the order in which a framework allocates (it is what made the Lightning path measurably
slower than a hand-written loop on CPU; see experiments/bench_overhead/README.md). Fixed thresholds
and no trimming remove them; ``release`` hands the free memory back when a fit starts and ends,
so a later job in the same process (a local Hydra multirun) starts from a clean resident set.
Elsewhere (musl, macOS, Windows) these are no-ops: they return False.
"""

from __future__ import annotations

import ctypes
import platform
from functools import lru_cache

MODES = ("keep", "default")  # perf.keep_freed_memory on / glibc's defaults (`peftbench bench --allocator`)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 * 2**20  # glibc's ceiling on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX)


@lru_cache(maxsize=1)
def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(None)  # the libc this process already runs on
    except OSError:
        return None


def keep_freed_memory() -> bool:
    """Blocks up to 32 MiB from the heap and no trimming (``mallopt``; process-wide, and glibc
    keeps fixed thresholds from then on). True when applied."""
    libc = _glibc()
    if libc is None:
        return False
    # -1 as size_t disables trimming (mallopt(3)); each call returns 1 on success
    fixed = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)
    return bool(fixed) and bool(libc.mallopt(M_TRIM_THRESHOLD, -1))


def release() -> bool:
    """Return the free heap memory to the kernel now (``malloc_trim(0)``). The fixed thresholds
    stay: glibc cannot go back to dynamic ones. True when applied."""
    libc = _glibc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True
