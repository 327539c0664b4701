"""The plugin's linear memory (the VM's shared region): fixed size, laid out by the hypervisor.

    0            guard page: nothing is ever placed here, so address 0 is never valid
    plugin_base  plugin image (dylink memory), then its stack, inside the plugin slot
    dma_start    DMA heap (shell.dma_alloc): hardware rings, the frame pool, shell rings
    size         end; the memory never grows (min = max pages) and never moves
"""
from __future__ import annotations

import ctypes
import struct
from dataclasses import dataclass

import numpy as np
import wasmtime

WASM_PAGE = 65536
GUARD_SIZE = WASM_PAGE


@dataclass(frozen=True)
class RegionPlan:
    """Where things go in a VM's region; chosen by the hypervisor."""

    size: int = 16 << 20
    plugin_base: int = GUARD_SIZE
    plugin_slot: int = 1 << 20  # image + stack must fit in [plugin_base, plugin_base + slot)
    stack_size: int = 64 << 10

    def __post_init__(self):
        if self.size % WASM_PAGE or self.size <= 0:
            raise ValueError(f"region size {self.size} is not a positive multiple of 64 KiB")
        if self.plugin_base < GUARD_SIZE:
            raise ValueError(f"plugin base 0x{self.plugin_base:x} is inside the guard page")
        if self.plugin_base + self.plugin_slot > self.size:
            raise ValueError("the plugin slot runs past the end of the region")

    @property
    def dma_start(self) -> int:
        return (self.plugin_base + self.plugin_slot + 4095) & ~4095

    def at(self, plugin_base: int) -> "RegionPlan":
        """The same plan with the plugin placed elsewhere."""
        return RegionPlan(self.size, plugin_base, self.plugin_slot, self.stack_size)


class SharedRegion:
    """The memory itself, plus typed little-endian access for the shell and the NIC model."""

    def __init__(self, store: wasmtime.Store, plan: RegionPlan):
        pages = plan.size // WASM_PAGE
        self.plan = plan
        self.memory = wasmtime.Memory(store, wasmtime.MemoryType(wasmtime.Limits(pages, pages)))
        ptr = self.memory.data_ptr(store)
        self._buf = (ctypes.c_ubyte * plan.size).from_address(ctypes.addressof(ptr.contents))
        self.store = store  # one store per VM: the memory, the plugin and its budgets
        self.mem = memoryview(self._buf).cast("B")
        self.np = np.frombuffer(self._buf, dtype=np.uint8)
        self.size = plan.size

    def contains(self, addr: int, length: int) -> bool:
        return 0 <= addr and length >= 0 and addr + length <= self.size

    def read(self, addr: int, length: int) -> bytes:
        return bytes(self.mem[addr:addr + length])

    def write(self, addr: int, data: bytes) -> None:
        self.mem[addr:addr + len(data)] = data

    def u32(self, addr: int) -> int:
        return struct.unpack_from("<I", self.mem, addr)[0]

    def set_u32(self, addr: int, value: int) -> None:
        struct.pack_into("<I", self.mem, addr, value & 0xFFFFFFFF)
