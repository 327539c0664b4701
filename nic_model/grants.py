"""The frame record's check of a burst of device accesses to the frame pool (`FrameRecord.allowed`):
which the grants allow.

One loop over the burst, the checks in the order the hardware would make them: the address is
the start of a pool frame (unsigned 64-bit arithmetic, nothing wraps into the pool), the length
fits the frame, the frame holds the grant for this direction, the burst names it once (its
first use counts), and a read is of the oldest TX frame not read yet (the guest's order: from
the first out of order on, none). `grants.pxd` types it for Cython, which compiles it at install
with bounds checks on; where no C compiler was, the same source runs as plain Python.
"""
from __future__ import annotations

import numpy as np

NONE, READ, WRITE, HOLD = 0, 1, 2, 3  # what a frame is granted for (HOLD: FrameRecord.hold)
C_READ, C_HOLD = READ, HOLD  # the same, as the compiled loop compares them


class Grants:
    """Bound once to a record's arrays; `allowed` is one call per burst."""

    def __init__(self, grant, order, mark, scratch, base, frame_size, frames):
        self.grant = grant  # int8 per frame: NONE, READ, WRITE or HOLD
        self.order = order  # int64 per frame: the guest's order of a TX frame
        self.mark = mark  # int64 per frame: scratch, the first entry of a burst naming it
        self.scratch = scratch  # int64 per frame: scratch, the orders still to be read
        self.base, self.frame_size, self.frames = base, frame_size, frames

    def allowed(self, addr, lens, idx, ok, kind):
        """For each access: `idx[i]` its frame (0 where it names none) and `ok[i]` whether the
        grants allow it. Returns how many are allowed."""
        n = addr.shape[0]
        count = 0
        for i in range(n):
            a = addr[i]
            ok[i] = 0
            idx[i] = 0
            if a < self.base:
                continue
            off = a - self.base
            k = off // self.frame_size
            if off % self.frame_size != 0 or k >= self.frames:
                continue
            idx[i] = k
            if 0 <= lens[i] <= self.frame_size and self.grant[k] == kind:
                ok[i] = 1
                count += 1
        if kind == C_READ and count and self._ascending_and_oldest(idx, ok, n, count):
            return count  # the usual burst: in the guest's order, so no frame twice either
        for i in range(n - 1, -1, -1):  # a frame named twice: its first use counts
            if ok[i]:
                self.mark[idx[i]] = i
        count = 0
        for i in range(n):
            if ok[i]:
                if self.mark[idx[i]] != i:
                    ok[i] = 0
                else:
                    count += 1
        if kind == C_READ and count:
            count = self._keep_oldest_first(idx, ok, n, count)
        return count

    def _ascending_and_oldest(self, idx, ok, n, count):
        """Whether the allowed reads come in rising guest order and are the `count` oldest TX
        frames not read yet (none older is left behind)."""
        last = -1
        for i in range(n):
            if ok[i]:
                v = self.order[idx[i]]
                if v <= last:
                    return False
                last = v
        older = 0
        for f in range(self.frames):
            g = self.grant[f]
            if (g == C_READ or g == C_HOLD) and self.order[f] <= last:
                older += 1
        return older == count

    def _keep_oldest_first(self, idx, ok, n, count):
        """Keep the allowed reads that are, one after the other, the oldest TX frames not read
        yet; from the first that is not, none (they wait, unread). Returns how many are kept."""
        m = 0
        for f in range(self.frames):
            g = self.grant[f]
            if g == C_READ or g == C_HOLD:
                self.scratch[m] = self.order[f]
                m += 1
        oldest = np.sort(np.asarray(self.scratch)[:m])
        kept, stop = 0, False
        for i in range(n):
            if ok[i]:
                if not stop and kept < m and self.order[idx[i]] == oldest[kept]:
                    kept += 1
                else:
                    ok[i] = 0
                    stop = True  # out of order: none after it either
        return kept
