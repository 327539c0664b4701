"""Ring positions for a burst: a slice where the burst does not wrap, indices where it does.

A burst of `n` entries from free-running index `first` on a ring of `size` (a power of two or
not) covers positions first % size, ... Most bursts do not wrap, and a slice reads and writes
structured arrays without building an index array: the cost of a ring access stays flat.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np


def slots(first: int, n: int, size: int) -> slice | np.ndarray:
    """The positions of entries first..first+n-1 on a ring of `size`."""
    start = first % size
    if start + n <= size:
        return slice(start, start + n)
    if n <= size <= CACHED_RING:
        return _twice(size)[start:start + n]  # a view: a wrapping burst costs no arithmetic
    return (first + np.arange(n)) % size


CACHED_RING = 8192  # rings up to this size keep an index (a plugin picks its rings' sizes: 4 MiB at most)


@lru_cache(maxsize=32)
def _twice(size: int) -> np.ndarray:
    """0..size-1 twice over, read-only: any run of up to `size` positions is a slice of it."""
    ring = np.arange(size, dtype=np.int64)
    twice = np.concatenate([ring, ring])
    twice.flags.writeable = False
    return twice


def read_once(ring: np.ndarray, at: slice | np.ndarray) -> np.ndarray:
    """A copy of the entries at `at`: the other side may rewrite the ring at any time, so
    entries are read once and used from the copy."""
    if not isinstance(at, slice):
        return ring[at]  # fancy indexing copies
    part = ring[at]
    if part.dtype.fields is not None and part.flags.c_contiguous:  # descriptors: copied as
        return part.view(np.uint8).copy().view(ring.dtype)  # bytes, 3x faster than by field
    return part.copy()
