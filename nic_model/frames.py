"""A burst of Ethernet frames as one 2-D byte array: the unit the model moves.

Per-frame Python work is what limits a simulator, so frames travel in bursts: row i of `data`
holds frame i in its first `lens[i]` bytes (the rest of the row is padding). Gathering a burst
from memory and scattering it back are one numpy fancy-index each.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BROADCAST = 0xFFFFFFFFFFFF


@dataclass
class Frames:
    data: np.ndarray  # uint8 [n, width]
    lens: np.ndarray  # int64 [n]

    def __len__(self) -> int:
        return len(self.lens)

    @staticmethod
    def empty() -> "Frames":
        return Frames(np.zeros((0, 0), np.uint8), np.zeros(0, np.int64))

    @staticmethod
    def from_bytes(frames: list[bytes]) -> "Frames":
        lens = np.array([len(f) for f in frames], np.int64)
        data = np.zeros((len(frames), int(lens.max()) if len(frames) else 0), np.uint8)
        for i, f in enumerate(frames):
            data[i, :len(f)] = np.frombuffer(f, np.uint8)
        return Frames(data, lens)

    def frame(self, i: int) -> bytes:
        return self.data[i, :self.lens[i]].tobytes()

    def to_bytes(self) -> list[bytes]:
        return [self.frame(i) for i in range(len(self))]

    def take(self, idx) -> "Frames":
        """The frames at `idx` (indices, a slice or a boolean mask), in that order."""
        return Frames(self.data[idx], self.lens[idx])

    @property
    def nbytes(self) -> int:
        return int(self.lens.sum())

    def macs(self, offset: int) -> np.ndarray:
        """The 48-bit MAC at byte `offset` of every frame (0: destination, 6: source) as u64."""
        wide = np.zeros((len(self), 8), np.uint8)
        wide[:, 2:] = self.data[:, offset:offset + 6]
        return wide.view(">u8").ravel().astype(np.uint64)

    @staticmethod
    def concat(parts: list["Frames"]) -> "Frames":
        parts = [p for p in parts if len(p)]
        if not parts:
            return Frames.empty()
        if len(parts) == 1:
            return parts[0]
        width = max(p.data.shape[1] for p in parts)
        data = np.zeros((sum(len(p) for p in parts), width), np.uint8)
        row = 0
        for p in parts:
            data[row:row + len(p), :p.data.shape[1]] = p.data
            row += len(p)
        return Frames(data, np.concatenate([p.lens for p in parts]))


def gather(mem: np.ndarray, addrs: np.ndarray, lens: np.ndarray) -> Frames:
    """Read frames at `addrs` (checked by the caller) into a burst."""
    n = len(addrs)
    width = int(lens.max()) if n else 0
    if n == 0 or width == 0:
        return Frames(np.zeros((n, 0), np.uint8), lens.astype(np.int64))
    idx = addrs.astype(np.int64)[:, None] + np.arange(width, dtype=np.int64)
    # Bytes past a frame's end are padding; clip keeps their reads inside memory.
    return Frames(np.take(mem, idx, mode="clip"), lens.astype(np.int64))


def scatter(mem: np.ndarray, addrs: np.ndarray, frames: Frames) -> None:
    """Write each frame at its address, exactly its length (checked by the caller)."""
    n, width = frames.data.shape
    if n == 0 or width == 0:
        return
    idx = addrs.astype(np.int64)[:, None] + np.arange(width, dtype=np.int64)
    if (frames.lens == width).all():
        mem[idx] = frames.data
    else:
        inside = np.arange(width) < frames.lens[:, None]
        mem[idx[inside]] = frames.data[inside]
