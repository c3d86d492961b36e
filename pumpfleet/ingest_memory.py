"""Memory that the single-process ingest reuses rather than asks the kernel for again.

The ingest allocates and frees buffers of tens of megabytes per block (a block's
columns, its windows, the Parquet pages). By default each of them is fresh memory:
glibc maps allocations over 32 MB and unmaps them when freed, and Arrow's mimalloc
pool hands freed pages back, so the kernel zeroes every page again (transparent huge
pages: 2 MB at a time), and that, not the arithmetic, was most of the ingest's system
time. :func:`reused_memory` keeps freed memory for the next block while the ingest
runs: Arrow allocates from the C heap (its system pool), and glibc serves large
allocations from its heap and keeps what is freed; on the way out Arrow's pool is put
back, glibc's two thresholds are set to their initial values and the heap is trimmed.
(Setting a threshold turns glibc's own adjustment of them off for the rest of the
process, mallopt(3): after an ingest they stay at those initial 128 kB.) Where the C
library is not glibc, only Arrow's pool is switched.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from contextlib import contextmanager

import pyarrow as pa

# mallopt(3) parameters, and glibc's defaults to put back.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_DEFAULT_TRIM = 128 * 1024
_DEFAULT_MMAP = 128 * 1024
_KEEP = 1 << 30  # allocations under this come from the heap, and freed ones stay there


def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None)  # the process's own symbols: the C library is loaded
        libc.gnu_get_libc_version  # noqa: B018  (glibc only: mallopt's parameters are its own)
    except (OSError, AttributeError):
        return None
    return libc


@contextmanager
def reused_memory() -> Iterator[None]:
    """Within the block: Arrow allocates from the C heap, and glibc keeps freed memory
    of up to 1 GB an allocation for reuse (see the module's docstring)."""
    pool = pa.default_memory_pool()
    libc = _glibc()
    pa.set_memory_pool(pa.system_memory_pool())
    if libc is not None:
        libc.mallopt(_M_MMAP_THRESHOLD, _KEEP)
        libc.mallopt(_M_TRIM_THRESHOLD, _KEEP)  # an int: 1 GB, not more
    try:
        yield
    finally:
        pa.set_memory_pool(pool)
        if libc is not None:
            libc.mallopt(_M_MMAP_THRESHOLD, _DEFAULT_MMAP)
            libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM)
            libc.malloc_trim(0)
