"""The shell's side of a shell ring (AF_XDP style, see shell_api/ABI.md "Shell rings").

A ring knows nothing of the plugin or the device: it is a header and descriptors in the shared
region. Indices are free-running u32s. The shell is producer of `tx`/`fill` and consumer of
`txc`/`rx`; an index the other side publishes is read once and checked before use.
"""
from __future__ import annotations

import struct

import numpy as np

from runtime.sandbox import SharedRegion
from shell_api import RING_DESC, RING_HDR

_PROD = RING_HDR.offsets["producer"]
_CONS = RING_HDR.offsets["consumer"]
U32 = 0xFFFFFFFF
DESC = np.dtype([("addr", "<u8"), ("len", "<u4"), ("flags", "<u2"), ("vlan", "<u2")])
assert DESC.itemsize == RING_DESC.size


class RingError(ValueError):
    """The other side published an index that cannot be right."""


class ShellRing:
    def __init__(self, region: SharedRegion, addr: int, size: int):
        if size <= 0 or size & (size - 1):
            raise ValueError(f"ring size {size} is not a power of two")
        self.region, self.addr, self.size, self.mask = region, addr, size, size - 1
        self.desc_base = addr + RING_HDR.size
        region.write(addr, bytes(RING_HDR.size))
        self.desc = region.np[self.desc_base:self.desc_base + size * DESC.itemsize].view(DESC)

    @property
    def nbytes(self) -> int:
        return RING_HDR.size + self.size * RING_DESC.size

    @staticmethod
    def bytes_for(size: int) -> int:
        return RING_HDR.size + size * RING_DESC.size

    def producer(self) -> int:
        return struct.unpack_from("<I", self.region.mem, self.addr + _PROD)[0]

    def consumer(self) -> int:
        return struct.unpack_from("<I", self.region.mem, self.addr + _CONS)[0]

    def set_producer(self, v: int) -> None:
        struct.pack_into("<I", self.region.mem, self.addr + _PROD, v & U32)

    def set_consumer(self, v: int) -> None:
        struct.pack_into("<I", self.region.mem, self.addr + _CONS, v & U32)

    # -- producer side -------------------------------------------------------------------------
    def _published(self, consumer_side: bool) -> tuple[int, int]:
        """(producer, consumer), read once; RingError naming the index the other side broke."""
        prod, cons = self.producer(), self.consumer()
        if (prod - cons) & U32 > self.size:
            raise RingError(f"ring 0x{self.addr:x}: " + (
                f"producer index {prod} is more than {self.size} ahead of consumer {cons}"
                if consumer_side else f"consumer index {cons} is ahead of producer {prod}"))
        return prod, cons

    def free_slots(self) -> int:
        prod, cons = self._published(consumer_side=False)
        return self.size - ((prod - cons) & U32)

    def available(self) -> int:
        prod, cons = self._published(consumer_side=True)
        return (prod - cons) & U32

    def produce_burst(self, addr: np.ndarray, length: np.ndarray, flags=0, vlan=0) -> int:
        """Write as many entries as fit from parallel arrays (flags/vlan: arrays or one value
        for all), then publish; returns the count."""
        prod, cons = self._published(consumer_side=False)
        n = min(len(addr), self.size - ((prod - cons) & U32))
        if n:
            idx = (prod + np.arange(n)) & self.mask
            d = self.desc
            d["addr"][idx] = addr[:n]
            d["len"][idx] = length[:n]
            d["flags"][idx] = flags if np.ndim(flags) == 0 else flags[:n]
            d["vlan"][idx] = vlan if np.ndim(vlan) == 0 else vlan[:n]
            self.set_producer(prod + n)
        return n

    def consume_burst(self, limit: int | None = None) -> np.ndarray:
        """Copy out the published entries (each read exactly once) and release them."""
        prod, cons = self._published(consumer_side=True)
        n = (prod - cons) & U32
        if limit is not None:
            n = min(n, limit)
        out = self.desc[(cons + np.arange(n)) & self.mask]  # fancy index: a copy
        self.set_consumer(cons + n)
        return out

    # -- one entry at a time, as (addr, len, flags, vlan) tuples (tools and tests) --------------
    def produce(self, entries: list[tuple[int, int, int, int]]) -> int:
        e = np.array(entries, DESC) if entries else np.zeros(0, DESC)
        return self.produce_burst(e["addr"], e["len"], e["flags"], e["vlan"])

    def consume(self, limit: int | None = None) -> list[tuple[int, int, int, int]]:
        return [tuple(e) for e in self.consume_burst(limit).tolist()]

    def reset(self) -> None:
        """Both indices back to 0 (only while nobody else uses the ring)."""
        self.set_producer(0)
        self.set_consumer(0)
