"""The guest's frame pool (in the guest's memory) and who holds each frame.

Every pool frame belongs to exactly one side at a time: the shell (FREE, or RESEND: came back
unsent and waits to go out first), or the plugin and its NIC (TX: handed over on `tx`; FILL:
posted on `fill`). Free frames are a stack; TX frames remember their length and the order the
guest handed them over in, so whatever comes back unsent is re-sent in the guest's order.
"""
from __future__ import annotations

from typing import Annotated

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictInt

FREE, TX, FILL, RESEND = 0, 1, 2, 3
STATE_NAMES = ("free", "tx", "fill", "resend")


Index = Annotated[StrictInt, Field(ge=0, lt=65536)]
Seq = Annotated[StrictInt, Field(ge=0, lt=1 << 63)]


class PoolState(BaseModel):
    """What `FramePool.snapshot` gives, as a migration stream must carry it: types, ranges and
    sizes checked before anything is applied (the other host is untrusted)."""

    model_config = ConfigDict(extra="forbid")
    frames: Annotated[StrictInt, Field(ge=2, le=65536)]
    frame_size: Annotated[StrictInt, Field(ge=256, le=16384)]
    resend: list[Index] = Field(max_length=65536)
    lens: list[Annotated[StrictInt, Field(ge=1, le=16384)]] = Field(max_length=65536)
    seq: list[Seq] = Field(max_length=65536)
    next_seq: Seq


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
        """Frames that went out on `tx` and came back unsent: first in line, merged with the
        re-send queue in the guest's order (whatever order a plugin handed them back in)."""
        self.state[idx] = RESEND
        pending = np.concatenate([self.resend, idx])
        self.resend = pending[np.argsort(self.tx_seq[pending], kind="stable")]

    def requeue_tx(self, tx: np.ndarray | None = None) -> int:
        """TX frames (default: every one) back to the re-send queue, in the guest's order.
        Returns how many."""
        tx = np.flatnonzero(self.state == TX) if tx is None else tx
        self.queue_resend(tx)
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

    # -- migration ------------------------------------------------------------------------------
    def snapshot(self) -> dict:
        """What moves with a quiesced VM besides the memory: the frames waiting to be re-sent,
        in order, with their lengths and guest order (every other frame is free)."""
        if self.held_by_plugin():
            raise ValueError(f"{self.held_by_plugin()} frames are with a driver: quiesce first")
        r = self.resend
        return {"frames": self.nframes, "frame_size": self.frame_size, "resend": r.tolist(),
                "lens": self.tx_len[r].tolist(), "seq": self.tx_seq[r].tolist(), "next_seq": self._seq}

    def restore(self, snap: dict) -> None:
        """The state `snapshot` gave, from a migration stream: every value is checked (the
        stream is as untrusted as any input); ValueError names the first that is wrong."""
        snap = PoolState.model_validate(snap).model_dump()
        if (snap["frames"], snap["frame_size"]) != (self.nframes, self.frame_size):
            raise ValueError(f"pool of {snap['frames']} x {snap['frame_size']} bytes; this VM's "
                             f"is {self.nframes} x {self.frame_size}")
        r, lens, seq = (np.asarray(snap[k], np.int64) for k in ("resend", "lens", "seq"))
        if not len(r) == len(lens) == len(seq):
            raise ValueError("pool: resend, lens and seq differ in length")
        if len(r) and (r.min() < 0 or r.max() >= self.nframes or len(np.unique(r)) != len(r)):
            raise ValueError("pool: a re-send frame index is out of the pool or given twice")
        if len(r) and (lens.min() < 1 or lens.max() > self.frame_size):
            raise ValueError(f"pool: a re-send length is outside 1..{self.frame_size}")
        if len(r) and (seq.min() < 0 or seq.max() >= snap["next_seq"] or len(np.unique(seq)) != len(seq)):
            raise ValueError("pool: a re-send order number is repeated or not below next_seq")
        self.state[:] = FREE
        self.state[r], self.tx_len[r], self.tx_seq[r] = RESEND, lens, seq
        self._seq, self.resend = int(snap["next_seq"]), r
        free = np.flatnonzero(self.state == FREE)[::-1]
        self.nfree = len(free)
        self._free[:self.nfree] = free

    def held_by_plugin(self) -> int:
        return int(((self.state == TX) | (self.state == FILL)).sum())
