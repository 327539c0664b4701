"""The guest's own memory: where its frames live, out of the plugin's reach.

It sits at `GUEST_MEMORY_BASE` (4 GiB) in the VM's 64-bit DMA address space, above anything a
wasm32 plugin can address: the plugin handles frame addresses as opaque u64 values it copies
from shell-ring entries into descriptors, and the NIC's DMA engine reaches the frames through
the VF's IOMMU window. So a vendor plugin can neither read nor rewrite a guest's packets.

For live migration it keeps a dirty log of 4 KiB pages, as KVM's dirty bitmap does: while the
log is on, every write the shell (a guest frame handed over) or the hypervisor's emulated NIC (a
frame received) makes through `write` marks its pages. The VF's DMA engine writes only with a
grant from the shell, and migration revokes every grant before it starts the log.
"""
from __future__ import annotations

import mmap

import numpy as np

from npa.nic_model.frames import Frames, scatter
from npa.shell_api import GUEST_MEMORY_BASE

PAGE = 4096
HUGE_PAGE = 2 << 20


def ram(size: int) -> np.ndarray:
    """`size` zeroed bytes for a guest's memory, in a mapping aligned to 2 MiB and advised for
    transparent huge pages, as QEMU backs guest RAM: with 64 VMs the data path touches some
    50,000 distinct 4 KiB pages a step, far past the TLB, and a huge page covers 512 of them.
    Where the kernel gives none (THP off) the pages are ordinary ones."""
    room = mmap.mmap(-1, size + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    whole = np.frombuffer(room, np.uint8)
    start = -whole.__array_interface__["data"][0] % HUGE_PAGE
    advise = getattr(mmap, "MADV_HUGEPAGE", None)
    if advise is not None and size >= HUGE_PAGE:
        try:
            room.madvise(advise, start, size - size % HUGE_PAGE)
        except OSError:  # no THP in this kernel: 4 KiB pages
            pass
    return whole[start:start + size]  # the array keeps the mapping alive


class GuestMemory:
    def __init__(self, size: int, base: int = GUEST_MEMORY_BASE):
        self.base, self.size = base, size
        self.np = ram(size)
        self.np[::PAGE] = 0  # pinned: every page faulted in now, as VFIO pins what a VF may DMA
        # into, so the data path never takes a page fault (it cost 64 VMs 20% of a run)
        self.npages = -(-size // PAGE)
        self.dirty: np.ndarray | None = None  # the dirty log while it is on

    def offsets(self, addrs: np.ndarray) -> np.ndarray:
        """DMA addresses inside this memory (checked by the caller) as offsets into `np`."""
        return (np.asarray(addrs).astype(np.uint64) - np.uint64(self.base)).astype(np.int64)

    def write(self, offsets: np.ndarray, frames: Frames) -> None:
        """Frames into memory at `offsets` (each inside, checked by the caller), logged."""
        scatter(self.np, offsets, frames)
        if self.dirty is not None and len(frames):
            self.dirty[offsets // PAGE] = True
            self.dirty[(offsets + np.maximum(frames.lens, 1) - 1) // PAGE] = True

    # -- the dirty log ----------------------------------------------------------------------------
    def log_dirty(self) -> None:
        """Start the log with every page dirty: the first pre-copy round sends them all."""
        self.dirty = np.ones(self.npages, bool)

    def take_dirty(self) -> np.ndarray:
        """The pages written since the last call (sorted), and a clean log."""
        got = np.flatnonzero(self.dirty)
        self.dirty[:] = False
        return got

    def stop_log(self) -> None:
        self.dirty = None

    def pages(self, idx: np.ndarray) -> np.ndarray:
        """Page contents, one row each (a short last page is zero-padded)."""
        if self.size % PAGE == 0:
            return self.np.reshape(-1, PAGE)[idx]
        out = np.zeros((len(idx), PAGE), np.uint8)
        for row, p in enumerate(idx.tolist()):
            chunk = self.np[p * PAGE:(p + 1) * PAGE]
            out[row, :len(chunk)] = chunk
        return out

    def load(self, idx: np.ndarray, rows: np.ndarray) -> None:
        """Pages from a migration stream (indices checked by the caller)."""
        if self.size % PAGE == 0:
            self.np.reshape(-1, PAGE)[idx] = rows
            return
        for row, p in enumerate(idx.tolist()):
            chunk = self.np[p * PAGE:(p + 1) * PAGE]
            chunk[:] = rows[row, :len(chunk)]
