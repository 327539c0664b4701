"""The guest's frame pool (in the guest's memory) and who holds each frame.

Every pool frame belongs to exactly one side at a time: the shell (FREE, or RESEND: came back
unsent and waits to go out first), or the plugin and its NIC (TX: handed over on `tx`; FILL:
posted on `fill`). Free frames are a stack; TX frames remember their length and the order the
guest handed them over in, so whatever comes back unsent is re-sent in the guest's order.
"""
from __future__ import annotations

import numpy as np

FREE, TX, FILL, RESEND = 0, 1, 2, 3
STATE_NAMES = ("free", "tx", "fill", "resend")


class FramePool:
    def __init__(self, mem: np.ndarray, base: int, frames: int, frame_size: int):
        self.mem = mem  # the guest's memory; frame i is mem[i * frame_size:][:frame_size]
        self.base, self.nframes, self.frame_size = base, frames, frame_size
        self.state = np.zeros(frames, np.int8)
        self.tx_len = np.zeros(frames, np.int64)  # what the guest handed over, for a re-send
        self.tx_seq = np.zeros(frames, np.int64)  # the order the guest handed frames over in
        self._seq = 0
        self._free = np.arange(frames - 1, -1, -1, dtype=np.int64)  # a stack of free frames
        self.nfree = frames
        self.resend = np.zeros(0, np.int64)  # RESEND frames, first in line, in this order

    def addrs(self, idx: np.ndarray) -> np.ndarray:
        """The frames' DMA addresses, as ring entries carry them."""
        return self.base + idx * self.frame_size

    def offsets(self, idx: np.ndarray) -> np.ndarray:
        """The frames' offsets in `mem`."""
        return idx * self.frame_size

    def take(self, n: int) -> np.ndarray:
        """`n` free frames (the caller checked there are), still FREE until handed over."""
        self.nfree -= n
        return self._free[self.nfree:self.nfree + n].copy()

    def release(self, idx: np.ndarray) -> None:
        self.state[idx] = FREE
        self._free[self.nfree:self.nfree + len(idx)] = idx
        self.nfree += len(idx)

    def hand_over_tx(self, idx: np.ndarray, lens: np.ndarray) -> None:
        """New guest frames went out on `tx`: remember their length and order."""
        n = len(idx)
        self.state[idx] = TX
        self.tx_len[idx] = lens
        self.tx_seq[idx] = self._seq + np.arange(n)
        self._seq += n

    def queue_resend(self, idx: np.ndarray) -> None:
        """Frames that went out on `tx` and came back unsent: first in line, in this order."""
        self.state[idx] = RESEND
        self.resend = np.concatenate([self.resend, idx])

    def requeue_tx(self, tx: np.ndarray | None = None) -> int:
        """TX frames (default: every one) back to the re-send queue, merged with it in the
        guest's order. Returns how many."""
        tx = np.flatnonzero(self.state == TX) if tx is None else tx
        pending = np.concatenate([self.resend, tx])
        self.resend = np.zeros(0, np.int64)
        self.queue_resend(pending[np.argsort(self.tx_seq[pending], kind="stable")])
        return len(tx)

    def held(self, state: int) -> np.ndarray:
        return np.flatnonzero(self.state == state)

    def posted(self) -> int:
        return int(np.count_nonzero(self.state == FILL))

    def holdings(self) -> dict[str, int]:
        counts = np.bincount(self.state, minlength=len(STATE_NAMES))
        return dict(zip(STATE_NAMES, counts.tolist()))

    def check(self) -> None:
        """The ownership invariant: the free stack holds exactly the FREE frames and the re-send
        queue exactly the RESEND frames, each once. AssertionError naming what broke."""
        for name, held, state in (("free stack", self._free[:self.nfree], FREE),
                                  ("re-send queue", self.resend, RESEND)):
            got, want = np.sort(held), np.flatnonzero(self.state == state)
            assert len(got) == len(want) and (got == want).all(), \
                f"the {name} and the {STATE_NAMES[state]} frames disagree (a frame owned twice?)"

    def held_by_plugin(self) -> int:
        return int(((self.state == TX) | (self.state == FILL)).sum())
