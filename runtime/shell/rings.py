"""The shell's side of a shell ring (AF_XDP style, see shell_api/ABI.md "Shell rings").

A ring knows nothing of the plugin or the device: it is a header and descriptors in the shared
region. Indices are free-running u32s. The shell is producer of `tx`/`fill` and consumer of
`txc`/`rx`; an index the other side publishes is read once and checked before use, and an
index of its own is never read back.
"""
from __future__ import annotations

import struct

import numpy as np

from npa.nic_model.ring import read_once, slots
from npa.runtime.sandbox import SharedRegion
from npa.shell_api import RING_DESC, RING_HDR

_PROD = RING_HDR.offsets["producer"]
_CONS = RING_HDR.offsets["consumer"]
U32 = 0xFFFFFFFF
DESC = np.dtype([("addr", "<u8"), ("len", "<u4"), ("flags", "<u2"), ("vlan", "<u2")])
assert DESC.itemsize == RING_DESC.size


class RingError(ValueError):
    """The other side published an index that cannot be right."""


class ShellRing:
    """One ring as either side sees it. Each side keeps its own index privately and only
    publishes it: an index is never read back from memory, where the other side could have
    rewritten it. The other side's index is read once per use and checked against what this
    side knows: it never moves backwards and never passes this side's own index."""

    def __init__(self, region: SharedRegion, addr: int, size: int):
        if size <= 0 or size & (size - 1):
            raise ValueError(f"ring size {size} is not a power of two")
        self.region, self.addr, self.size, self.mask = region, addr, size, size - 1
        self.desc_base = addr + RING_HDR.size
        self.desc = region.np[self.desc_base:self.desc_base + size * DESC.itemsize].view(DESC)
        region.write(addr, bytes(RING_HDR.size))
        self.reset()

    @property
    def nbytes(self) -> int:
        return RING_HDR.size + self.size * RING_DESC.size

    @staticmethod
    def bytes_for(size: int) -> int:
        return RING_HDR.size + size * RING_DESC.size

    def producer(self) -> int:
        """The producer index as published in memory (either side may have written it)."""
        return struct.unpack_from("<I", self.region.mem, self.addr + _PROD)[0]

    def consumer(self) -> int:
        """The consumer index as published in memory."""
        return struct.unpack_from("<I", self.region.mem, self.addr + _CONS)[0]

    def set_producer(self, v: int) -> None:
        """Place the producer index (tools and tests): published, and taken as both sides' view."""
        self._prod = self._seen_prod = v & U32
        struct.pack_into("<I", self.region.mem, self.addr + _PROD, self._prod)

    def set_consumer(self, v: int) -> None:
        """Place the consumer index (tools and tests): published, and taken as both sides' view."""
        self._cons = self._seen_cons = v & U32
        struct.pack_into("<I", self.region.mem, self.addr + _CONS, self._cons)

    def _publish_producer(self, v: int) -> None:
        self._prod = v & U32
        struct.pack_into("<I", self.region.mem, self.addr + _PROD, self._prod)

    def _publish_consumer(self, v: int) -> None:
        self._cons = v & U32
        struct.pack_into("<I", self.region.mem, self.addr + _CONS, self._cons)

    # -- the checks on the other side's index ---------------------------------------------------
    def _consumer_seen(self) -> int:
        """As producer: the consumer index the other side published, checked: not past our
        producer index and not behind the last one we accepted. RingError naming the index."""
        prod, cons = self._prod, self.consumer()
        if (prod - cons) & U32 > self.size:
            raise RingError(f"ring 0x{self.addr:x}: consumer index {cons} is ahead of producer {prod}")
        if (cons - self._seen_cons) & U32 > (prod - self._seen_cons) & U32:
            raise RingError(f"ring 0x{self.addr:x}: consumer index {cons} moved backwards "
                            f"from {self._seen_cons}")
        self._seen_cons = cons
        return cons

    def _producer_seen(self) -> int:
        """As consumer: the producer index the other side published, checked: at most `size`
        ahead of our consumer index and not behind the last one we accepted."""
        prod, cons = self.producer(), self._cons
        if (prod - cons) & U32 > self.size:
            raise RingError(f"ring 0x{self.addr:x}: producer index {prod} is more than "
                            f"{self.size} ahead of consumer {cons}")
        if (prod - self._seen_prod) & U32 > (cons + self.size - self._seen_prod) & U32:
            raise RingError(f"ring 0x{self.addr:x}: producer index {prod} moved backwards "
                            f"from {self._seen_prod}")
        self._seen_prod = prod
        return prod

    # -- producer side -------------------------------------------------------------------------
    @property
    def produced(self) -> int:
        """Our producer index (the producer side's own count, never read back)."""
        return self._prod

    def free_slots(self) -> int:
        return self.size - ((self._prod - self._consumer_seen()) & U32)

    def outstanding(self) -> tuple[int, int]:
        """As producer: (first index, count) of the entries published and not yet consumed."""
        cons = self._consumer_seen()
        return cons, (self._prod - cons) & U32

    def available(self) -> int:
        """As consumer: entries published and not yet consumed."""
        return (self._producer_seen() - self._cons) & U32

    def produce_burst(self, addr: np.ndarray, length: np.ndarray, flags=0, vlan=0) -> int:
        """Write as many entries as fit from parallel arrays (flags/vlan: arrays or one value
        for all), then publish; returns the count."""
        prod = self._prod
        n = min(len(addr), self.free_slots())
        if n:
            at = slots(prod, n, self.size)
            d = self.desc
            d["addr"][at] = addr[:n]
            d["len"][at] = length[:n]
            d["flags"][at] = flags[:n] if getattr(flags, "ndim", 0) else flags
            d["vlan"][at] = vlan[:n] if getattr(vlan, "ndim", 0) else vlan
            self._publish_producer(prod + n)
        return n

    def consume_burst(self, limit: int | None = None) -> np.ndarray:
        """Copy out the published entries (each read exactly once) and release them."""
        cons = self._cons
        n = (self._producer_seen() - cons) & U32
        if limit is not None:
            n = min(n, limit)
        out = read_once(self.desc, slots(cons, n, self.size))
        self._publish_consumer(cons + n)
        return out

    # -- one entry at a time, as (addr, len, flags, vlan) tuples (tools and tests) --------------
    def produce(self, entries: list[tuple[int, int, int, int]]) -> int:
        e = np.array(entries, DESC) if entries else np.zeros(0, DESC)
        return self.produce_burst(e["addr"], e["len"], e["flags"], e["vlan"])

    def consume(self, limit: int | None = None) -> list[tuple[int, int, int, int]]:
        return [tuple(e) for e in self.consume_burst(limit).tolist()]

    def reset(self) -> None:
        """Both indices back to 0, published and private (only while nobody else uses it)."""
        self.set_producer(0)
        self.set_consumer(0)
