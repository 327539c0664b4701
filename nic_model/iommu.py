"""A VF's IOMMU window: the device reaches the VM's memory only through mapped ranges.

Identity-mapped (an I/O virtual address is the address in the VM's shared region), as with a
guest whose DMA addresses are its physical addresses. The hypervisor maps what the DMA heap hands
out and the frame pool; everything else, the guard page and the plugin image included, is a DMA
fault: counted, remembered, and nothing is read or written.
"""
from __future__ import annotations

import bisect


class Iommu:
    def __init__(self, mem: memoryview):
        self.mem = mem
        self._starts: list[int] = []
        self._ends: list[int] = []
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

    def unmap(self, iova: int) -> bool:
        i = bisect.bisect_left(self._starts, iova)
        if i < len(self._starts) and self._starts[i] == iova:
            del self._starts[i], self._ends[i]
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

    def _fault(self, addr: int, length: int) -> None:
        self.faults += 1
        self.last_fault = (addr, length)

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
        self.mem[addr:addr + len(data)] = data
        return True
