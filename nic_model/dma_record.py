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

import numpy as np

from .grants import HOLD, NONE, READ, WRITE, Grants  # noqa: F401 - what a frame is granted for


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
        self._grants = Grants(self.grant, self.order, np.zeros(frames, np.int64),
                              np.zeros(frames, np.int64), base, frame_size, frames)
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
    def allowed(self, addrs: np.ndarray, lens: np.ndarray, kind: int) -> tuple[np.ndarray, np.ndarray]:
        """Which pool accesses the grants allow: a frame's start, its length within the frame,
        the grant for `kind`, the frame once per burst, reads in the guest's order; and every
        address's frame index (for `use` and `fail`, 0 where none). One call of the compiled
        kernel (`grants.py`)."""
        n = len(addrs)
        idx, ok = np.empty(n, np.int64), np.empty(n, np.uint8)
        self._grants.allowed(np.asarray(addrs, np.uint64), np.asarray(lens, np.int64), idx, ok, kind)
        return ok.view(bool), idx

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
