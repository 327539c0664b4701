"""The DMA heap: `shell.dma_alloc`'s allocator over the DMA part of a VM's linear memory."""
from __future__ import annotations

import bisect


class DmaHeap:
    """First-fit allocator over [start, end) for `shell.dma_alloc`; never returns 0."""

    def __init__(self, start: int, end: int):
        if start <= 0 or end <= start:
            raise ValueError(f"bad DMA heap [0x{start:x}, 0x{end:x})")
        self.start, self.end = start, end
        self._free: list[tuple[int, int]] = [(start, end)]  # sorted, disjoint [a, b)
        self.allocated: dict[int, int] = {}  # addr -> size

    def alloc(self, size: int, align: int = 8) -> int:
        if size <= 0 or align <= 0 or align & (align - 1) or align > 1 << 20:
            return 0
        for i, (a, b) in enumerate(self._free):
            addr = (a + align - 1) & ~(align - 1)
            if addr + size <= b:
                pieces = [(a, addr)] if addr > a else []
                if addr + size < b:
                    pieces.append((addr + size, b))
                self._free[i:i + 1] = pieces
                self.allocated[addr] = size
                return addr
        return 0

    def free(self, addr: int) -> bool:
        size = self.allocated.pop(addr, None)
        if size is None:
            return False
        a, b = addr, addr + size
        i = bisect.bisect(self._free, (a, a))
        if i < len(self._free) and self._free[i][0] == b:  # merge with the next free range
            b = self._free.pop(i)[1]
        if i > 0 and self._free[i - 1][1] == a:  # and with the previous one
            i -= 1
            a = self._free.pop(i)[0]
        self._free.insert(i, (a, b))
        return True

    def in_use(self) -> int:
        return sum(self.allocated.values())
