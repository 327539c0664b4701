"""A VF's IOMMU window: the device reaches the VM's memory only through mapped ranges.

Identity-mapped (an I/O virtual address is the address in the VM's shared region), as with a
guest whose DMA addresses are its physical addresses. The hypervisor maps what the DMA heap hands
out and the frame pool; everything else, the guard page and the plugin image included, is a DMA
fault: counted, remembered, and nothing is read or written.
"""
from __future__ import annotations

import bisect

import numpy as np


class Iommu:
    def __init__(self, mem):
        self.mem = np.frombuffer(mem, np.uint8) if not isinstance(mem, np.ndarray) else mem
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._arrays: tuple[np.ndarray, np.ndarray] | None = None
        self.faults = 0
        self.last_fault: tuple[int, int] | None = None  # (address, length)

    def map(self, iova: int, size: int) -> None:
        if size <= 0 or iova < 0 or iova + size > len(self.mem):
            raise ValueError(f"cannot map [0x{iova:x}, +{size}) in a {len(self.mem)}-byte region")
        i = bisect.bisect(self._starts, iova)
        if (i and self._ends[i - 1] > iova) or (i < len(self._starts) and self._starts[i] < iova + size):
            raise ValueError(f"[0x{iova:x}, +{size}) overlaps a mapping")
        self._starts.insert(i, iova)
        self._ends.insert(i, iova + size)
        self._arrays = None

    def unmap(self, iova: int) -> bool:
        i = bisect.bisect_left(self._starts, iova)
        if i < len(self._starts) and self._starts[i] == iova:
            del self._starts[i], self._ends[i]
            self._arrays = None
            return True
        return False

    def covers(self, addr: int, length: int) -> bool:
        """True when every byte of [addr, addr+length) is mapped (adjacent mappings join)."""
        if length <= 0:
            return length == 0 and addr >= 0
        i = bisect.bisect(self._starts, addr) - 1
        end = addr + length
        while i >= 0 and i < len(self._starts) and self._starts[i] <= addr < self._ends[i]:
            if end <= self._ends[i]:
                return True
            addr = self._ends[i]
            i += 1
        return False

    def covers_all(self, addrs: np.ndarray, lens: np.ndarray) -> np.ndarray:
        """`covers` for a burst: a boolean per (addr, len), one mapping lookup for all."""
        if self._arrays is None:
            self._arrays = (np.array(self._starts, np.int64), np.array(self._ends, np.int64))
        starts, ends = self._arrays
        addrs, lens = addrs.astype(np.int64), lens.astype(np.int64)
        if not len(starts):
            return np.zeros(len(addrs), bool)
        i = np.searchsorted(starts, addrs, side="right") - 1
        ok = (i >= 0) & (lens >= 0) & (addrs + lens <= ends[np.maximum(i, 0)])
        for j in np.flatnonzero(~ok):  # rare: a range across adjacent mappings
            ok[j] = self.covers(int(addrs[j]), int(lens[j]))
        return ok

    def fault(self, addr: int, length: int, count: int = 1) -> None:
        """Record `count` refused device accesses, the last at [addr, +length)."""
        self.faults += count
        self.last_fault = (addr, length)

    def _fault(self, addr: int, length: int) -> None:
        self.fault(addr, length)

    def read(self, addr: int, length: int) -> bytes | None:
        """Device read; None (and a counted fault) outside the window."""
        if not self.covers(addr, length):
            self._fault(addr, length)
            return None
        return bytes(self.mem[addr:addr + length])

    def write(self, addr: int, data: bytes) -> bool:
        """Device write; False (a counted fault, nothing written) outside the window."""
        if not self.covers(addr, len(data)):
            self._fault(addr, len(data))
            return False
        self.mem[addr:addr + len(data)] = np.frombuffer(data, np.uint8)
        return True
