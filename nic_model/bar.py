"""A VF's BAR0: a register file that exposes only data-path registers.

Device models subclass `Bar0`, declare their registers and react to writes. An access to an
offset that is not a declared register is not an error on real hardware: reads return 0, writes
are dropped. Here both are counted, so a plugin poking at registers it has no business with is
visible.
"""
from __future__ import annotations

from typing import Callable


class Bar0:
    SIZE = 0x1000

    def __init__(self) -> None:
        self.regs: dict[int, int] = {}
        self._on_write: dict[int, Callable[[int], None]] = {}
        self._on_read: dict[int, Callable[[], int]] = {}
        self.ignored_writes = 0
        self.ignored_reads = 0
        self.writes = 0

    def register(self, off: int, value: int = 0, *, on_write: Callable[[int], None] | None = None,
                 on_read: Callable[[], int] | None = None) -> None:
        self.regs[off] = value
        if on_write:
            self._on_write[off] = on_write
        if on_read:
            self._on_read[off] = on_read

    def read32(self, off: int) -> int:
        if off not in self.regs:
            self.ignored_reads += 1
            return 0
        hook = self._on_read.get(off)
        return hook() if hook else self.regs[off]

    def write32(self, off: int, val: int) -> None:
        if off not in self.regs:
            self.ignored_writes += 1
            return
        self.writes += 1
        hook = self._on_write.get(off)
        if hook:
            hook(val)
        else:
            self.regs[off] = val
