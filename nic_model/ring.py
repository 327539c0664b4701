"""Ring positions for a burst: a slice where the burst does not wrap, indices where it does.

A burst of `n` entries from free-running index `first` on a ring of `size` (a power of two or
not) covers positions first % size, ... Most bursts do not wrap, and a slice reads and writes
structured arrays without building an index array: the cost of a ring access stays flat.
"""
from __future__ import annotations

import numpy as np


def slots(first: int, n: int, size: int) -> slice | np.ndarray:
    """The positions of entries first..first+n-1 on a ring of `size`."""
    start = first % size
    if start + n <= size:
        return slice(start, start + n)
    return (first + np.arange(n)) % size


def read_once(ring: np.ndarray, at: slice | np.ndarray) -> np.ndarray:
    """A copy of the entries at `at`: the other side may rewrite the ring at any time, so
    entries are read once and used from the copy."""
    return ring[at].copy() if isinstance(at, slice) else ring[at]
