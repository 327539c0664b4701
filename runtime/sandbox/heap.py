"""The DMA heap: `shell.dma_alloc`'s allocator over the DMA part of a VM's linear memory.

The plugin allocates and frees here (hardware rings, doorbell records, queue configs). The
shell's own structures (its rings and the init block) are carved off the top once, with
`reserve`: they are never in the free list, so no `dma_free` or `dma_alloc` can reach them.
"""
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
        if not 0 < size <= self.end - self.start or align <= 0 or align & (align - 1) or align > 1 << 20:
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

    def reserve(self, size: int, align: int = 64) -> int:
        """Take [addr, addr + size) off the top of the heap for good (the shell's structures):
        out of the free list and not `allocated`, so `free` refuses it. 0 if it does not fit."""
        a, b = self._free[-1] if self._free else (0, 0)
        addr = (b - size) & ~(align - 1)
        if size <= 0 or addr < a:
            return 0
        self._free[-1:] = [(a, addr)] if addr > a else []
        if b > addr + size:  # the alignment slack stays free
            self._free.append((addr + size, b))
        return addr

    def free(self, addr: int) -> bool:
        """Give back a live block `alloc` returned; False (nothing changes) for any other
        address: never allocated, already freed, inside a block, or reserved."""
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
