"""What every vendor's VF shares: PCI ids, a BAR0, MSI-X vectors, DMA through an IOMMU window,
a switch port, and device time. A vendor model subclasses `Vf`, declares its registers and
implements `tx()` and `rx()`: its ring engine, stepped by the NIC, never inside an MMIO write.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .bar import Bar0
from .dma_record import READ, WRITE
from .frames import Frames
from .iommu import Iommu
from .switch import Port, Switch


def pci_id(model) -> str:
    """A VF model's PCI vendor:device ids as manifests write them ("8086:10ed")."""
    return f"{model.PCI_VENDOR:04x}:{model.PCI_DEVICE:04x}"


@dataclass
class VfStats:
    tx_frames: int = 0
    tx_bytes: int = 0
    rx_frames: int = 0
    rx_bytes: int = 0
    tx_errors: int = 0  # malformed TX descriptors, consumed and not sent
    rx_oversize: int = 0  # frames longer than the posted buffers, dropped
    dma_faults: int = 0  # accesses outside the IOMMU window, refused
    resets: int = 0


class Vf(Bar0):
    PCI_VENDOR = 0
    PCI_DEVICE = 0
    NUM_VECTORS = 2  # vector 0: queue 0; vector 1: misc (DMA fault, reset done)
    RESET_US = 10
    MISC_VECTOR = 1

    def __init__(self, index: int, port: Port, switch: Switch):
        super().__init__()
        self.index, self.port, self.switch = index, port, switch
        self.stats = VfStats()
        self.iommu: Iommu | None = None
        self._views: dict[tuple, tuple[int, np.ndarray]] = {}  # rings the engine reads every tick
        self.eims = 0  # enabled vectors
        self.eicr = 0  # latched causes, one bit per vector
        self.msix = 0  # messages sent and not yet taken by the host
        self.reset_left_us = 0
        self.mac = 0

    @property
    def name(self) -> str:
        return f"vf{self.index}"

    @property
    def pci_id(self) -> str:
        return pci_id(self)

    # -- assignment (the hypervisor's side) ---------------------------------------------------
    def attach(self, mem) -> Iommu:
        """Give the VF a VM's DMA space, `mem` at address 0 (more memories attach to the window
        later); it reaches them only through the returned IOMMU window."""
        self.iommu, self._views = Iommu(mem), {}
        return self.iommu

    @property
    def resetting(self) -> bool:
        return self.reset_left_us > 0

    def advance(self, us: int) -> None:
        """Device time passes (host steps and `shell.udelay`)."""
        if self.reset_left_us:
            self.reset_left_us = max(0, self.reset_left_us - us)

    # -- MSI-X ---------------------------------------------------------------------------------
    def raise_cause(self, bits: int) -> None:
        """Latch causes; an enabled vector sends its message and masks itself until re-armed."""
        self.eicr |= bits
        fire = bits & self.eims
        self.eims &= ~fire
        self.msix |= fire

    def enable_vectors(self, bits: int) -> None:
        self.eims |= bits
        if self.eicr & bits:  # a cause latched while masked fires on unmask
            self.raise_cause(self.eicr & bits)

    def disable_vectors(self, bits: int) -> None:
        self.eims &= ~bits

    def read_causes(self) -> int:
        causes, self.eicr = self.eicr, 0
        return causes

    def take_msix(self) -> int:
        """The vectors that fired since the last call (the host delivers them to the guest)."""
        fired, self.msix = self.msix, 0
        return fired

    # -- DMA -----------------------------------------------------------------------------------
    def dma_fault(self, addr: int, length: int, count: int = 1) -> None:
        self.iommu.fault(addr, length, count)
        self.stats.dma_faults += count
        self.raise_cause(1 << self.MISC_VECTOR)

    def dma_view(self, addr: int, nbytes: int, dtype: np.dtype) -> np.ndarray | None:
        """A typed view of descriptor memory [addr, +nbytes) (a ring, a completion queue, a
        config block, a doorbell record) if the window maps it outside the frame pool, else a
        fault and None: the caller's queue stops. Views are kept until the window changes (the
        rings are read on every tick)."""
        iommu = self.iommu
        if iommu is None:
            return None
        key = (addr, nbytes, dtype)
        if (kept := self._views.get(key)) is not None and kept[0] == iommu.generation:
            return kept[1]
        if not iommu.descriptor_memory(addr, nbytes):
            self.dma_fault(addr, nbytes)
            return None
        if len(self._views) >= 8:  # a plugin moving its rings about: keep the newest only
            self._views.clear()
        view = iommu.view(addr, nbytes).view(dtype)
        self._views[key] = (iommu.generation, view)
        return view

    def _faults(self, addr: np.ndarray, lens: np.ndarray, inside: np.ndarray) -> None:
        j = int(np.flatnonzero(~inside)[-1])
        self.dma_fault(int(addr[j]), int(lens[j]), len(inside) - int(np.count_nonzero(inside)))

    def _allowed(self, addr: np.ndarray, lens: np.ndarray, kind: int
                 ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """(allowed, granted but refused by the window: frames the device drops, or None when
        none is, and every address's frame index in the record, or None without a record)."""
        iommu, rec = self.iommu, self.iommu.record
        if rec is None:
            return iommu.covers_all(addr, lens), None, None
        granted, idx = rec.allowed(addr, lens, kind)
        if np.count_nonzero(granted) == len(granted) and iommu.pool_mapped():
            return granted, None, idx  # granted frames of a mapped pool: inside the window
        inside = iommu.covers_all(addr, lens)
        return inside & granted, granted & ~inside, idx

    def _recorded(self, idx: np.ndarray | None, lens: np.ndarray, used: np.ndarray,
                  dropped: np.ndarray | None, kind: int) -> None:
        if idx is None:
            return
        rec = self.iommu.record
        if np.count_nonzero(used) == len(used):
            rec.use(idx, lens, kind)
        else:
            rec.use(idx[used], lens[used], kind)
        if dropped is not None and np.count_nonzero(dropped):
            rec.fail(idx[dropped])

    def dma_gather(self, addr: np.ndarray, lens: np.ndarray) -> tuple[Frames, np.ndarray]:
        """Read the frames at `addr` (u64); a buffer the device may not read is a fault, not
        read. Returns the frames read and which addresses were allowed."""
        addr, lens = np.asarray(addr, np.uint64), np.asarray(lens, np.int64)
        allowed, dropped, idx = self._allowed(addr, lens, READ)
        self._recorded(idx, lens, allowed, dropped, READ)
        if np.count_nonzero(allowed) == len(allowed):
            return self.iommu.gather(addr, lens, idx), allowed
        self._faults(addr, lens, allowed)
        return self.iommu.gather(addr[allowed], lens[allowed], _part(idx, allowed)), allowed

    def dma_gather_until(self, addr: np.ndarray, lens: np.ndarray, good: np.ndarray
                         ) -> tuple[Frames, int, np.ndarray]:
        """For a queue that stops at its first bad entry: read the frames before the first one
        that is not `good` (well-formed, by the vendor's rules) or that the device may not
        read, checking each once. Returns the frames, how many, and which addresses were
        allowed (the caller reports the one it stopped at)."""
        addr, lens = np.asarray(addr, np.uint64), np.asarray(lens, np.int64)
        allowed, _, idx = self._allowed(addr, lens, READ)
        stop = np.flatnonzero(~(good & allowed))
        end = int(stop[0]) if len(stop) else len(addr)
        if idx is not None:
            self.iommu.record.use(idx[:end], lens[:end], READ)
        return self.iommu.gather(addr[:end], lens[:end], _part(idx, slice(0, end))), end, allowed

    def dma_scatter_until(self, addr: np.ndarray, frames: Frames, room) -> int:
        """For a receive queue that stops at its first bad buffer: write the frames before the
        first buffer the device may not write (a counted fault), and none after it; that frame
        and the rest go back to the head of the port, as hardware that refuses a DMA keeps what
        it has not written. Returns how many were written; below len(frames), the caller stops
        its queue with an error, as for a frame longer than its buffer."""
        addr, room = np.asarray(addr, np.uint64), np.asarray(room, np.int64)
        allowed, _, idx = self._allowed(addr, np.minimum(frames.lens, room), WRITE)
        refused = np.flatnonzero(~allowed)
        k = int(refused[0]) if len(refused) else len(frames)
        if k < len(frames):
            self.dma_fault(int(addr[k]), int(frames.lens[k]))
            self.port.unreceive(frames.take(slice(k, None)))
            frames, addr = frames.take(slice(0, k)), addr[:k]
            room, idx = (room if room.ndim == 0 else room[:k]), _part(idx, slice(0, k))
        if k:
            written = self.iommu.scatter(addr, frames, room, idx)
            self._recorded(idx, frames.lens, written, None, WRITE)
        return k

    def receive_fitting(self, limit: int, room) -> tuple[Frames, bool]:
        """Up to `limit` frames from the port, stopping before the first longer than its buffer
        (`room`: one size, or one per buffer): that frame and the rest stay in the port, so the
        plugin's misprogrammed buffer size loses nothing. Returns (frames, whether it stopped);
        on a stop the caller stops its queue with an error, as on a malformed ring."""
        frames = self.port.receive(limit)
        room = np.asarray(room, np.int64)
        over = frames.lens > (room if room.ndim == 0 else room[:len(frames)])
        if not np.count_nonzero(over):
            return frames, False
        k = int(np.argmax(over))
        self.port.unreceive(frames.take(slice(k, None)))
        self.stats.rx_oversize += 1
        return frames.take(slice(0, k)), True

    # -- the vendor's ring engine --------------------------------------------------------------
    def reset(self) -> None:
        """Function-level reset: registers back to defaults, vectors masked, takes RESET_US."""
        self.stats.resets += 1
        self.eims = self.eicr = self.msix = 0
        self.reset_left_us = self.RESET_US

    def tx(self) -> None:
        raise NotImplementedError

    def rx(self) -> None:
        raise NotImplementedError



def _part(idx: np.ndarray | None, sel) -> np.ndarray | None:
    """The pool frame indices of the accesses `sel` selects (None without a record)."""
    return None if idx is None else idx[sel]
