"""The shell's claim on the ring entries a plugin produced on `txc` and `rx`: which of them name
a pool frame that the plugin holds, having taken it off `tx` or `fill`.

One loop over the burst, a check per entry in the order a reader would make them: the address
is the start of a pool frame (unsigned 64-bit arithmetic, nothing wraps into the pool), the frame
is in the state the ring implies, its slot on the ring it came from is behind the consumer index
the plugin published (it was taken), and no later entry of the burst names it again (of a frame
named twice, the last copy counts). `claim.pxd` types it for Cython, which compiles it at
install with bounds checks on; where no C compiler was, the same source runs as plain Python.
"""
from __future__ import annotations

OUTSIDE, NOT_HELD, UNTAKEN, TWICE = 0, 1, 2, 3  # the refusals `run` counts, by index
REFUSALS = ("address outside the pool", "frame not held by the plugin",
            "frame never taken off {source}", "frame handed back twice")  # their words, in order
U32 = 0xFFFFFFFF


class Claim:
    """Bound once to one pool's arrays and one source ring's slot record; `run` is one call per
    burst with a few integers."""

    def __init__(self, state, slot, mark, base, frame_size, nframes):
        self.state = state  # int8 per frame: who holds it (the pool's)
        self.slot = slot  # int64 per frame: its free-running index on the source ring
        self.mark = mark  # int64 per frame: scratch, the last entry of a burst naming it
        self.base, self.frame_size, self.nframes = base, frame_size, nframes

    def run(self, addr, idx, held, want, cons, outstanding, counts):
        """For each entry address: `idx[i]` its frame (0 where it names none) and `held[i]`
        whether the plugin may hand it back (the frame in state `want`, taken: its slot is not
        among the `outstanding` entries from `cons`, named once). Adds each refusal to
        `counts` (OUTSIDE, NOT_HELD, UNTAKEN, TWICE); returns how many are held."""
        n = addr.shape[0]
        for i in range(n):
            a = addr[i]
            held[i] = 0
            idx[i] = 0
            if a < self.base:
                counts[OUTSIDE] += 1
                continue
            off = a - self.base
            k = off // self.frame_size
            if off % self.frame_size != 0 or k >= self.nframes:
                counts[OUTSIDE] += 1
                continue
            idx[i] = k
            if self.state[k] != want:
                counts[NOT_HELD] += 1
            elif (self.slot[k] - cons) & U32 < outstanding:
                counts[UNTAKEN] += 1
            else:
                held[i] = 1
                self.mark[k] = i
        kept = 0
        for i in range(n):
            if held[i]:
                if self.mark[idx[i]] != i:
                    held[i] = 0
                    counts[TWICE] += 1
                else:
                    kept += 1
        return kept
