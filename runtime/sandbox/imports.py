"""The host side of the Shell API imports (module `shell`) for one VM's plugin.

Each import is a thin, bounds-checked bridge: MMIO to the VF's BAR0, DMA memory from the VM's
heap, device time, and a rate-limited log. Calls are counted per import so that a test (or the
conformance suite) can tell a plugin that calls the host per packet from one that calls per burst.
"""
from __future__ import annotations

import logging
from collections import Counter, deque
from typing import Callable, Protocol

from .fastcall import HostTrap
from .heap import DmaHeap
from .memory import SharedRegion

log = logging.getLogger("npa.plugin")
LOG_LEVELS = ("error", "warn", "info", "debug")
MAX_LOG_LINE = 512
REFUSALS_LOGGED = 8  # per import; the count goes on


class Bar(Protocol):
    """A VF's BAR0 as the plugin sees it: 32-bit registers at byte offsets."""

    def read32(self, off: int) -> int: ...

    def write32(self, off: int, val: int) -> None: ...


class Window(Protocol):
    """The VF's IOMMU window: what `dma_alloc` hands out is mapped, what `dma_free` takes back
    is unmapped."""

    def map(self, iova: int, size: int) -> None: ...

    def unmap(self, iova: int) -> bool: ...


class NoDevice:
    """The BAR of a sandbox with no VF behind it (inspection, trial loads): as on hardware for
    an offset with no register, reads return 0 and writes are dropped; both are counted."""

    def __init__(self) -> None:
        self.ignored_reads = self.ignored_writes = 0

    def read32(self, off: int) -> int:
        self.ignored_reads += 1
        return 0

    def write32(self, off: int, val: int) -> None:
        self.ignored_writes += 1


class ShellImports:
    """Implements `shell.*` against one VM's region, DMA heap and VF BAR."""

    def __init__(self, region: SharedRegion, heap: DmaHeap, bar: Bar, *,
                 device_step: Callable[[int], None] | None = None, log_burst: int = 16,
                 iommu: Window | None = None):
        self.region, self.heap, self.bar, self.iommu = region, heap, bar, iommu
        self.device_step = device_step
        self.calls: Counter[str] = Counter()
        self.log_burst = log_burst
        self.log_tokens = log_burst
        self.logs: deque[tuple[str, str]] = deque(maxlen=256)
        self.logs_suppressed = 0
        self.udelay_us = 0
        self.fail_dma_alloc = False  # a test (or the conformance suite) makes dma_alloc fail
        self.refused: Counter[str] = Counter()  # calls refused, by import
        self.tag = "plugin"  # how log lines name this VM's plugin

    def mmio_read32(self, off: int) -> int:
        self.calls["mmio_read32"] += 1
        return self.bar.read32(off) & 0xFFFFFFFF

    def mmio_write32(self, off: int, val: int) -> None:
        self.calls["mmio_write32"] += 1
        self.bar.write32(off, val)

    def dma_alloc(self, size: int, align: int) -> int:
        self.calls["dma_alloc"] += 1
        if self.fail_dma_alloc:
            return 0
        addr = self.heap.alloc(size, align)
        if addr:
            self.region.np[addr:addr + size] = 0  # a freed block may have held anything
            if self.iommu is not None:
                self.iommu.map(addr, size)  # the VF may now reach it
        return addr

    def dma_free(self, addr: int) -> None:
        """Only a live block `dma_alloc` gave this plugin; anything else is ignored, counted
        and logged (the pool, a shell ring, the init block, a double free...)."""
        self.calls["dma_free"] += 1
        if not self.heap.free(addr):
            self.refuse("dma_free", f"0x{addr:x} is not a block dma_alloc gave this plugin")
        elif self.iommu is not None:
            self.iommu.unmap(addr)

    def refuse(self, what: str, why: str) -> None:
        """A Shell API call refused: counted, and logged for the first few of a kind."""
        self.refused[what] += 1
        if self.refused[what] <= REFUSALS_LOGGED:
            log.warning("%s: %s refused: %s", self.tag, what, why)

    def udelay(self, us: int) -> None:
        self.calls["udelay"] += 1
        self.udelay_us += us
        if self.device_step is not None:
            self.device_step(us)

    def log(self, level: int, ptr: int, length: int) -> None:
        self.calls["log"] += 1
        if not self.region.contains(ptr, length):
            raise HostTrap(f"buffer [0x{ptr:x}, +{length}) is outside memory")
        if self.log_tokens <= 0:
            self.logs_suppressed += 1
            return
        self.log_tokens -= 1
        text = self.region.read(ptr, min(length, MAX_LOG_LINE)).decode("utf-8", "replace")
        name = LOG_LEVELS[level] if level < len(LOG_LEVELS) else f"level{level}"
        self.logs.append((name, text))
        log.log({0: 40, 1: 30, 2: 20}.get(level, 10), "%s: %s", self.tag, text)

    def refill_log_tokens(self) -> None:
        """The rate limit: at most `log_burst` lines between two refills (one per host step)."""
        self.log_tokens = self.log_burst
