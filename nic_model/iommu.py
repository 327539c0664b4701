"""A VF's IOMMU window on one VM's 64-bit DMA (guest-physical) address space.

The space is made of backing memories, each at a fixed base: the plugin's linear memory at 0,
the guest's memory (its frame pool) above 4 GiB. The window maps what the DMA heap hands out
and the frame pool; everything else (the guard page, the plugin image, the shell's rings, the
gap between the memories) is a DMA fault: counted, remembered, and nothing is read or written.
The two parts have different permissions: descriptors (rings, completion queues, config blocks,
doorbell records) only in what the DMA heap handed out (`descriptor_memory`), frames only in
the pool, each one with a one-use grant from the frame record.

Every address and length comes from a descriptor or a register the plugin wrote, so arithmetic
is unsigned 64-bit and never wraps: a range is inside when `addr <= end` and `len <= end - addr`
of one mapping (adjacent mappings join), never by computing `addr + len`.
"""
from __future__ import annotations

import bisect

import numpy as np

from .dma_record import FrameRecord
from .frames import Frames, gather, scatter

U64_MAX = (1 << 64) - 1


class Iommu:
    def __init__(self, mem=None):
        self._spaces: list[tuple[int, np.ndarray]] = []  # (base, memory), sorted by base
        self._space_bases = np.zeros(0, np.uint64)
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._arrays: tuple[np.ndarray, np.ndarray] | None = None
        self.generation = 0  # counts changes to the window or the space: views made before are stale
        self.faults = 0
        self.last_fault: tuple[int, int] | None = None  # (address, length)
        self.mem: np.ndarray | None = None  # the memory at DMA address 0 (the linear memory)
        self.record: FrameRecord | None = None  # per-frame grants and record over the frame pool
        self._pool: tuple[np.ndarray, int] | None = None  # the pool's memory, its offset there
        if mem is not None:
            self.attach(0, mem)

    # -- the address space (the hypervisor's side) ---------------------------------------------
    def attach(self, base: int, mem) -> np.ndarray:
        """Back [base, base + len(mem)) of the DMA space with `mem`; returns it as a u8 array."""
        arr = np.frombuffer(mem, np.uint8) if not isinstance(mem, np.ndarray) else mem
        if not 0 <= base <= U64_MAX - len(arr) + 1:
            raise ValueError(f"memory at 0x{base:x} does not fit in 64 bits")
        for b, m in self._spaces:
            if base < b + len(m) and b < base + len(arr):
                raise ValueError(f"memory at 0x{base:x} overlaps memory at 0x{b:x}")
        self._spaces = sorted([*self._spaces, (base, arr)], key=lambda s: s[0])
        self._space_bases = np.array([b for b, _ in self._spaces], np.uint64)
        self.generation += 1
        if base == 0:
            self.mem = arr
        return arr

    def _space_of(self, iova: int, size: int) -> tuple[int, np.ndarray] | None:
        for base, mem in self._spaces:
            if base <= iova and size <= len(mem) - (iova - base) and iova - base <= len(mem):
                return base, mem
        return None

    def map(self, iova: int, size: int) -> None:
        if size <= 0 or iova < 0 or self._space_of(iova, size) is None:
            raise ValueError(f"cannot map [0x{iova:x}, +{size}): not inside one memory of the space")
        i = bisect.bisect(self._starts, iova)
        if (i and self._ends[i - 1] > iova) or (i < len(self._starts) and self._starts[i] < iova + size):
            raise ValueError(f"[0x{iova:x}, +{size}) overlaps a mapping")
        self._starts.insert(i, iova)
        self._ends.insert(i, iova + size)
        self._arrays = None
        self.generation += 1

    def map_frames(self, base: int, frame_size: int, frames: int) -> FrameRecord:
        """Map a frame pool whose frames the device reaches only one grant at a time; returns
        the record the shell grants through and the hypervisor settles with."""
        self.map(base, frame_size * frames)
        self.record = FrameRecord(base, frame_size, frames)
        space, mem = self._space_of(base, frame_size * frames)
        self._pool = mem, base - space
        return self.record

    def pool_mapped(self) -> bool:
        """Whether the frame pool's mapping is still in the window (the record's frames are
        then all inside it: `allowed` has checked start and length)."""
        rec = self.record
        i = bisect.bisect_left(self._starts, rec.base)
        return i < len(self._starts) and self._starts[i] == rec.base \
            and self._ends[i] == rec.base + rec.frame_size * rec.frames

    def unmap(self, iova: int) -> bool:
        i = bisect.bisect_left(self._starts, iova)
        if i < len(self._starts) and self._starts[i] == iova:
            del self._starts[i], self._ends[i]
            self._arrays = None
            self.generation += 1
            return True
        return False

    # -- checks (untrusted addresses and lengths) ---------------------------------------------
    def covers(self, addr: int, length: int) -> bool:
        """True when every byte of [addr, addr+length) is mapped (adjacent mappings join)."""
        addr, length = int(addr), int(length)
        if addr < 0 or length < 0 or addr > U64_MAX or length > U64_MAX:
            return False
        i = bisect.bisect(self._starts, addr) - 1
        if i < 0 or addr > self._ends[i]:
            return False
        while length > self._ends[i] - addr:  # the rest lies in the next mapping, if adjacent
            if i + 1 >= len(self._starts) or self._starts[i + 1] != self._ends[i]:
                return False
            length -= self._ends[i] - addr
            addr = self._ends[i]
            i += 1
        return length == 0 or addr < self._ends[i]

    def descriptor_memory(self, addr: int, length: int) -> bool:
        """Whether [addr, +length) may hold what the device reads and writes as descriptors
        (rings, completion queues, config blocks, doorbell records): mapped, and no byte of it
        in the frame pool. Guest memory is reachable only as whole frames with a grant, as an
        IOMMU's per-mapping permissions would have it; a ring placed over frames is a fault."""
        if not self.covers(addr, length):
            return False
        rec = self.record
        if rec is None:
            return True
        addr, length = int(addr), int(length)
        pool_end = rec.base + rec.frame_size * rec.frames
        return addr + length <= rec.base or addr >= pool_end  # covered: no wrap past 2^64

    def covers_all(self, addrs: np.ndarray, lens: np.ndarray) -> np.ndarray:
        """`covers` for a burst: a boolean per (addr, len), one mapping lookup for all. Both are
        taken as unsigned 64-bit (an int64 -1 is 2^64-1, outside every mapping)."""
        a = np.asarray(addrs, np.uint64)
        n = np.asarray(lens, np.uint64)
        if not len(a) or not self._starts:
            return np.zeros(len(a), bool)
        lo, hi = int(np.minimum.reduce(a)), int(np.maximum.reduce(a))
        i = bisect.bisect(self._starts, lo) - 1
        if i >= 0 and hi <= self._ends[i]:  # the usual burst: every address in one mapping
            ok = n <= np.uint64(self._ends[i]) - a
            if np.count_nonzero(ok) == len(ok):
                return ok
        if self._arrays is None:
            self._arrays = (np.array(self._starts, np.uint64), np.array(self._ends, np.uint64))
        starts, ends = self._arrays
        i = np.searchsorted(starts, a, side="right").astype(np.int64) - 1
        end = ends[np.maximum(i, 0)]
        inside = (i >= 0) & (a <= end)
        ok = inside & (n <= np.where(inside, end - a, 0))
        for j in np.flatnonzero(~ok & inside):  # rare: a range across adjacent mappings
            ok[j] = self.covers(int(a[j]), int(n[j]))
        return ok

    def fault(self, addr: int, length: int, count: int = 1) -> None:
        """Record `count` refused device accesses, the last at [addr, +length)."""
        self.faults += count
        self.last_fault = (int(addr), int(length))

    # -- access (the caller checked the window) ----------------------------------------------
    def view(self, addr: int, nbytes: int) -> np.ndarray:
        """The bytes of a covered range, as a view of the memory backing it."""
        base, mem = self._space_of(int(addr), int(nbytes))
        off = int(addr) - base
        return mem[off:off + nbytes]

    def _offsets(self, addrs: np.ndarray, pool_frames: np.ndarray | None = None
                 ) -> list[tuple[np.ndarray | slice, np.ndarray, np.ndarray]]:
        """Covered addresses split by backing memory: (rows, memory, offsets) per memory used.
        `pool_frames`: the addresses are the starts of these pool frames (the record allowed
        each), so the offsets follow from the indices."""
        if pool_frames is not None:
            mem, at = self._pool
            return [(slice(None), mem, at + pool_frames * self.record.frame_size)]
        a = np.asarray(addrs, np.uint64)
        if len(a):
            lo, hi = int(np.minimum.reduce(a)), int(np.maximum.reduce(a))
            s = int(np.searchsorted(self._space_bases, np.uint64(lo), side="right")) - 1
            base, mem = self._spaces[max(s, 0)]
            if s >= 0 and hi - base < len(mem):  # the usual burst: every frame in one memory
                return [(slice(None), mem, (a - np.uint64(base)).astype(np.int64))]
        k = np.searchsorted(self._space_bases, a, side="right").astype(np.int64) - 1
        out = []
        for s in np.unique(k):
            base, mem = self._spaces[int(s)]
            rows = np.flatnonzero(k == s)
            out.append((rows, mem, (a[rows] - np.uint64(base)).astype(np.int64)))
        return out

    def gather(self, addrs: np.ndarray, lens: np.ndarray, pool_frames: np.ndarray | None = None
               ) -> Frames:
        """Read covered frames into a burst (`pool_frames`: as in `_offsets`)."""
        lens = np.asarray(lens, np.int64)
        parts = self._offsets(addrs, pool_frames)
        if len(parts) == 1:
            _, mem, off = parts[0]
            return gather(mem, off, lens)
        return Frames.placed(lens, [(rows, gather(mem, off, lens[rows])) for rows, mem, off in parts])

    def scatter(self, addrs: np.ndarray, frames: Frames, room, pool_frames: np.ndarray | None = None
                ) -> np.ndarray:
        """Write covered frames, each into a buffer of `room` bytes (one size, or one per
        frame): never past it, whatever the burst's width. A frame longer than its buffer is
        not written (the vendor model decides what that means first). Returns which were.
        `pool_frames`: as in `_offsets`."""
        room = np.asarray(room, np.int64)
        fits = frames.lens <= room
        if np.count_nonzero(fits) != len(fits):
            room = np.broadcast_to(room, (len(frames),))
            addrs, frames, room = np.asarray(addrs)[fits], frames.take(fits), room[fits]
            pool_frames = None if pool_frames is None else pool_frames[fits]
        if not len(frames):
            return fits
        frames = frames.trimmed()  # no wider than its frames, were some taken out of the burst
        # Whole rows are one numpy copy; exact writes when a row would leave its buffer or the
        # window.
        if not frames.exact():  # rows wider than some frames: check them
            width = frames.row_widths()
            inside = self.covers_all(addrs, width)
            exact = bool(np.count_nonzero(room < width)) or np.count_nonzero(inside) != len(inside)
        else:  # every row is its frame, which the caller checked
            exact = False
        for rows, mem, off in self._offsets(addrs, pool_frames):
            part = frames if isinstance(rows, slice) or len(rows) == len(frames) else frames.take(rows)
            scatter(mem, off, part, exact=exact)
        return fits

    def read(self, addr: int, length: int) -> bytes | None:
        """Device read; None (and a counted fault) outside the window."""
        if not self.covers(addr, length):
            self.fault(addr, length)
            return None
        return bytes(self.view(addr, length))

    def write(self, addr: int, data: bytes) -> bool:
        """Device write; False (a counted fault, nothing written) outside the window."""
        if not self.covers(addr, len(data)):
            self.fault(addr, len(data))
            return False
        self.view(addr, len(data))[:] = np.frombuffer(data, np.uint8)
        return True
