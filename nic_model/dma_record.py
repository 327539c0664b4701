"""The device's own record of what it did with a VM's frame pool, kept by the IOMMU.

Frame buffers are granted to the device one at a time, as a strict IOMMU maps a buffer per DMA:
a TX frame for one read, an RX buffer for one write. The device reaches a pool frame only at its
start, only with the grant for that direction, each grant once, and TX frames only in the order
the guest handed them over (a plugin that skips or reorders frames stalls its own queue, and the
watchdog settles it); every use is written down in order (as VT-d and AMD-Vi access/dirty bits record, at frame granularity). So a plugin
can neither make the device send a frame twice nor deliver stale bytes, and after any failure
the hypervisor reads, through the PF and never through the plugin, exactly which frames the
device sent and which buffers it filled, and in what order: the truth to settle against.

Arrays are indexed by frame. Positions are a counter over all uses, so "since the grant" and
"arrival order" are comparisons of integers. Everything here is numpy over bursts.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

NONE, READ, WRITE, HOLD = 0, 1, 2, 3  # what a frame is granted for (HOLD: see `hold`)
U64 = (1 << 64) - 1


def frame_index(addrs: np.ndarray, base: int, frame_size: int, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """(frame index, whether the address is the start of a frame of the pool at `base`), in
    unsigned 64-bit arithmetic (nothing wraps into the pool); index 0 where it is not."""
    return _indexer(base, frame_size, frames)(addrs)


@lru_cache(maxsize=256)
def _indexer(base: int, frame_size: int, frames: int):
    """`frame_index` for one pool, its constants made once (it runs several times a poll)."""
    pool, origin = frame_size * frames, np.uint64(base)
    if frame_size & (frame_size - 1) == 0 and pool & (pool - 1) == 0:  # the usual: masks only
        outside = np.uint64(~(pool - 1) & U64 | (frame_size - 1))
        shift = np.uint64(frame_size.bit_length() - 1)

        def index(addrs):
            off = np.asarray(addrs, np.uint64) - origin  # below the pool wraps to huge
            return (off >> shift).view(np.int64), (off & outside) == 0
    else:
        size, limit = np.uint64(frame_size), np.uint64(pool)

        def index(addrs):
            off = np.asarray(addrs, np.uint64) - origin
            return (off // size).view(np.int64), (off < limit) & (off % size == 0)

    def checked(addrs) -> tuple[np.ndarray, np.ndarray]:
        idx, ok = index(addrs)
        if np.count_nonzero(ok) != len(ok):
            idx[~ok] = 0
        return idx, ok
    return checked


def oldest_first(values: np.ndarray, pending: np.ndarray) -> int:
    """How many of `values` (in the order they came) are, one after the other, the smallest of
    `pending` (every value outstanding, the burst's included, in any order): the prefix that
    keeps an order; the rest came out of it."""
    k = len(values)
    if k and not np.count_nonzero(values[1:] <= values[:-1]) \
            and np.count_nonzero(pending <= values[-1]) == k:
        return k  # the usual burst: ascending, and nothing older left behind
    oldest = np.sort(pending)[:k]  # fewer than k when the burst names a frame twice
    match = values[:len(oldest)] == oldest
    return len(match) if np.count_nonzero(match) == len(match) else int(np.argmin(match))


def repeated(frames: np.ndarray, scratch: np.ndarray, keep_last: bool = False) -> np.ndarray | None:
    """Which entries of a burst of frame indices name a frame again: every copy but the first
    (or, with `keep_last`, the last). None when no frame is named twice (one bincount finds
    out). `scratch` is a pool-sized int64 array; fancy assignment keeps the last write."""
    if len(frames) < 2 or np.maximum.reduce(np.bincount(frames)) < 2:
        return None
    order = np.arange(len(frames))
    if keep_last:
        scratch[frames] = order
    else:
        scratch[frames[::-1]] = order[::-1]  # the first occurrence writes last
    return scratch[frames] != order


def first_true(mask: np.ndarray, k: int) -> np.ndarray:
    """`mask` with only its first `k` True entries left (itself when it has no more)."""
    if k >= np.count_nonzero(mask):
        return mask
    keep = np.zeros(len(mask), bool)
    keep[np.flatnonzero(mask)[:k]] = True
    return keep


class FrameRecord:
    def __init__(self, base: int, frame_size: int, frames: int):
        self.base, self.frame_size, self.frames = base, frame_size, frames
        self.grant = np.zeros(frames, np.int8)
        self.read_at = np.full(frames, -1, np.int64)  # position of the read since the grant
        self.written_at = np.full(frames, -1, np.int64)  # position of the write since the grant
        self.written_len = np.zeros(frames, np.int64)
        self.failed = np.zeros(frames, bool)  # the device tried a granted frame; the window refused
        self.order = np.zeros(frames, np.int64)  # TX: the guest's order of a frame granted for reading
        self._mark = np.zeros(frames, np.int64)  # scratch: finds a frame used twice in a burst
        self.position = 0  # uses so far: the device's progress, for the watchdog

    # -- the shell's side: grants, as it hands frames over -------------------------------------
    def grant_read(self, idx: np.ndarray, order: np.ndarray) -> None:
        """TX frames, with the order the guest handed them over in: the device reads them in it."""
        self.order[idx] = order
        self.grant[idx] = READ
        self.read_at[idx] = -1
        self.failed[idx] = False

    def grant_write(self, idx: np.ndarray) -> None:
        self.grant[idx] = WRITE
        self.written_at[idx] = -1
        self.failed[idx] = False

    def revoke(self, idx: np.ndarray | slice = slice(None)) -> None:
        self.grant[idx] = NONE

    def hold(self, idx: np.ndarray) -> None:
        """TX frames handed back unsent, to be granted again when they go out once more: the
        device may not read them, and no frame after them in the guest's order either (it
        would pass them), until they are granted again."""
        self.grant[idx] = HOLD

    def clear(self) -> None:
        """No grants and no history (a new driver starts from here)."""
        self.grant[:] = NONE
        self.read_at[:] = -1
        self.written_at[:] = -1
        self.failed[:] = False

    # -- the device's side --------------------------------------------------------------------
    def index(self, addrs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(frame index, whether the address starts a pool frame) for device addresses."""
        return frame_index(addrs, self.base, self.frame_size, self.frames)

    def allowed(self, addrs: np.ndarray, lens: np.ndarray, kind: int) -> tuple[np.ndarray, np.ndarray]:
        """Which pool accesses the grants allow: a frame's start, its length within the frame,
        the grant for `kind`, the frame once per burst; and every address's frame index (for
        `use` and `fail`). Addresses outside the pool: False."""
        idx, ok = self.index(addrs)
        n = np.asarray(lens, np.int64)
        ok &= (n >= 0) & (n <= self.frame_size) & (self.grant[idx] == kind)
        if kind == READ and np.count_nonzero(ok):
            if self._in_guest_order(idx, ok) is ok:
                return ok, idx  # the usual burst: in order, so no frame twice either
        sel = np.flatnonzero(ok)
        if (twice := repeated(idx[sel], self._mark)) is not None:  # a frame twice: its first use
            ok[sel[twice]] = False
        if kind == READ and len(sel):
            ok &= self._in_guest_order(idx, ok)
        return ok, idx

    def _in_guest_order(self, idx: np.ndarray, ok: np.ndarray) -> np.ndarray:
        """The granted reads of a burst that come in the guest's order: each the oldest TX frame
        not read yet. From the first out of order on, none (they wait, unread). `ok` itself
        when all are in order."""
        outstanding = (self.grant == READ) | (self.grant == HOLD)
        return first_true(ok, oldest_first(self.order[idx[ok]], self.order[outstanding]))

    def use(self, idx: np.ndarray, lens: np.ndarray, kind: int) -> None:
        """The device read (TX) or wrote (RX) these allowed frames (by index), in this order."""
        if not len(idx):
            return
        at = self.position + np.arange(len(idx))
        self.position += len(idx)
        self.grant[idx] = NONE  # each grant is used once
        if kind == READ:
            self.read_at[idx] = at
        else:
            self.written_at[idx] = at
            self.written_len[idx] = lens

    def fail(self, idx: np.ndarray) -> None:
        """The device used these granted frames (by index), and the IOMMU window refused (the
        hypervisor had unmapped the pool): it dropped them, as a NIC drops on a DMA fault."""
        if len(idx):
            self.grant[idx] = NONE
            self.failed[idx] = True
            self.position += len(idx)

    # -- what the hypervisor reads ------------------------------------------------------------
    def was_read(self, idx: np.ndarray) -> np.ndarray:
        """The device took these TX frames: it read them, or tried and dropped them."""
        return (self.read_at[idx] >= 0) | self.failed[idx]

    def was_written(self, idx: np.ndarray) -> np.ndarray:
        return self.written_at[idx] >= 0
