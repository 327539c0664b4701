"""VMware vmxnet3 in Uniform Passthrough (UPT) mode: command rings, completion rings, generation bits.

Modelled on Linux's vmxnet3 driver (vmxnet3_defs.h). One TX queue and one RX queue; each is a
command ring the driver fills plus a completion ring the device fills. Ownership is a generation
bit: a ring starts with gen 1, and the producer flips its gen every time it wraps, so an entry
belongs to the consumer exactly when its gen equals the consumer's current gen. Doorbells are
producer-index registers. The BAR1 registers of a real vmxnet3 sit at 0x1000 here (one BAR).

BAR0 registers (32-bit, byte offsets):
    0x000 + 8*v  IMR[v]  interrupt mask of vector v: write 1 to mask, write 0 to acknowledge the
                         vector's cause and unmask it. A vector that fires masks itself.
    0x600  TXPROD  TX doorbell: the driver's next TX fill index (0..size-1)
    0x800  RXPROD  RX doorbell: the driver's next RX fill index
    0x1000 VRRS    revision: reads 1
    0x1010 DSAL, 0x1014 DSAH  address of the queue config block (below), read on ACTIVATE_DEV
    0x1020 CMD     write a command, read its result: 0 done, 1 failed, 0xFFFFFFFF busy (reset)
                   0xCAFE0000 ACTIVATE_DEV   read the config block, start both queues
                   0xCAFE0001 QUIESCE_DEV    stop both queues; what is on the rings stays there
                   0xCAFE0002 RESET_DEV      function reset, takes RESET_US of device time
                   0xF00D0000 GET_QUEUE_STATUS  result: bit 0 TX stopped, bit 1 RX stopped
    0x1040 ECR     event causes, bit 0: a queue stopped on an error (DMA fault, bad descriptor);
                   read; write 1 to clear. Events raise vector 1; vector 0 is the queue.

Queue config block (64 bytes, little-endian, in DMA memory):
    u64 tx_ring, tx_comp, rx_ring, rx_comp   ring base addresses (16-byte entries, 64-aligned)
    u32 tx_size, tx_comp_size, rx_size, rx_comp_size   entries: 32..4096, multiples of 32;
                                             a completion ring holds at least its ring's size
    u32 rx_buf_size                          bytes in every RX buffer; a longer frame stops the
                                             RX queue before it (ECR, rx_oversize counted) and
                                             waits in the port; no write ever passes
                                             rx_buf_size bytes from a buffer's address

TX descriptor (Vmxnet3_TxDesc, 16 bytes):
    u64 addr
    u32 dword2  bits 13:0 len (0 means 16384), bit 14 gen, bit 16 dtype, bits 31:18 msscof
    u32 dword3  bits 9:0 hlen, bit 12 eop, bit 13 cq (request a completion), bits 31:16 tci
A frame is one descriptor here: eop must be set, len 14..MAX_FRAME, else the queue stops (ECR).
TX completion (Vmxnet3_TxCompDesc, 16 bytes):
    u32 dword0  bits 11:0 txdIdx: the descriptor with cq; it and every one before it are done
    u32 ext2, ext3; u32 dword3  bits 30:24 type (0), bit 31 gen
RX descriptor (Vmxnet3_RxDesc, 16 bytes):
    u64 addr; u32 dword2  bits 13:0 len, bit 14 btype (0 head), bit 31 gen; u32 ext1
RX completion (Vmxnet3_RxCompDesc, 16 bytes):
    u32 dword0  bits 11:0 rxdIdx, bit 14 eop, bit 15 sop, bits 25:16 rqID
    u32 rssHash (0 here)
    u32 dword2  bits 13:0 len, bit 14 err (nothing written: a DMA fault), bits 31:16 tci
    u32 dword3  bits 30:24 type (3), bit 31 gen
A driver keeps one command-ring entry free, so the doorbell alone tells full from empty.

Errors and reset, as a driver sees them:
    A queue stops (GET_QUEUE_STATUS says which; ECR bit 0 is set and vector 1 fires) on: a ring
    the IOMMU window does not cover (DMA fault, counted); a TX descriptor without eop or with a
    length outside 14..MAX_FRAME (9728 bytes, the largest jumbo frame; counted tx_errors, the
    descriptor consumed, nothing sent); an RX frame longer than rx_buf_size (it waits in the
    port; counted rx_oversize). A stopped queue stays stopped: RESET_DEV, then ACTIVATE_DEV.
    RESET_DEV (and a function-level reset by the hypervisor) takes RESET_US = 10 µs of device
    time, during which CMD reads 0xFFFFFFFF and commands are ignored; afterwards every register
    is at its default (TXPROD, RXPROD, DSAL, DSAH, ECR 0; both queues stopped; every vector
    masked, IMR reads 1), the rings and rx_buf_size are forgotten, and what the driver had
    posted is the shell's again: program the config block and ACTIVATE_DEV as at first.
"""
from __future__ import annotations

import numpy as np

from .switch import Port, Switch
from .vf import Vf

PCI_VENDOR, PCI_DEVICE = 0x15AD, 0x07B0  # VMware VMXNET3

IMR0, TXPROD, RXPROD = 0x000, 0x600, 0x800
VRRS, DSAL, DSAH, CMD, ECR = 0x1000, 0x1010, 0x1014, 0x1020, 0x1040
CMD_ACTIVATE_DEV, CMD_QUIESCE_DEV, CMD_RESET_DEV = 0xCAFE0000, 0xCAFE0001, 0xCAFE0002
CMD_GET_QUEUE_STATUS = 0xF00D0000
CMD_BUSY = 0xFFFFFFFF
ECR_QERR = 1 << 0

LEN_MASK, TXD_GEN_SHIFT = 0x3FFF, 14
TXD_EOP, TXD_CQ = 1 << 12, 1 << 13
RXD_GEN_SHIFT = 31
RCD_EOP, RCD_SOP = 1 << 14, 1 << 15
RCD_ERR = 1 << 14
RCD_TYPE = 3 << 24
COMP_GEN_SHIFT = 31
IDX_MASK = 0xFFF

MIN_FRAME, MAX_FRAME = 14, 9728
MIN_RING, MAX_RING = 32, 4096

DESC = np.dtype([("addr", "<u8"), ("dword2", "<u4"), ("dword3", "<u4")])
COMP = np.dtype([("dword0", "<u4"), ("dword1", "<u4"), ("dword2", "<u4"), ("dword3", "<u4")])
CONFIG = np.dtype([("tx_ring", "<u8"), ("tx_comp", "<u8"), ("rx_ring", "<u8"), ("rx_comp", "<u8"),
                   ("tx_size", "<u4"), ("tx_comp_size", "<u4"), ("rx_size", "<u4"),
                   ("rx_comp_size", "<u4"), ("rx_buf_size", "<u4"), ("reserved", "<u4", 3)])
assert DESC.itemsize == COMP.itemsize == 16 and CONFIG.itemsize == 64


class Ring:
    """One ring as the device walks it: base, size, next index, and the gen it expects/writes."""

    def __init__(self, base: int = 0, size: int = 0):
        self.base, self.size, self.next, self.gen = base, size, 0, 1

    def advance(self, n: int) -> None:
        self.next += n
        if self.next >= self.size:
            self.next -= self.size
            self.gen ^= 1

    def gens(self, n: int) -> np.ndarray:
        """The gen of each of the next n entries (it flips where the ring wraps)."""
        return np.where(self.next + np.arange(n) < self.size, self.gen, self.gen ^ 1)

    def slots(self, n: int) -> np.ndarray:
        return (self.next + np.arange(n)) % self.size


class Vmxnet3Vf(Vf):
    PCI_VENDOR, PCI_DEVICE = PCI_VENDOR, PCI_DEVICE
    MODEL = "vmxnet3"
    DESCRIPTION = "VMware vmxnet3 (UPT): command + completion rings, generation bits"
    SIZE = 0x2000

    def __init__(self, index: int, port: Port, switch: Switch):
        super().__init__(index, port, switch)
        for v in range(self.NUM_VECTORS):
            self.register(IMR0 + 8 * v, 1, on_write=lambda val, v=v: self._imr(v, val),
                          on_read=lambda v=v: 0 if self.eims & (1 << v) else 1)
        self.register(TXPROD, 0)
        self.register(RXPROD, 0)
        self.register(VRRS, 1, on_write=lambda v: None)
        self.register(DSAL, 0)
        self.register(DSAH, 0)
        self.register(CMD, 0, on_write=self._command,
                      on_read=lambda: CMD_BUSY if self.resetting else self.regs[CMD])
        self.register(ECR, 0, on_write=lambda v: self.regs.__setitem__(ECR, self.regs[ECR] & ~v))
        self._stop_queues()

    def _stop_queues(self) -> None:
        self.tx_on = self.rx_on = False
        self.txr, self.txc, self.rxr, self.rxc = Ring(), Ring(), Ring(), Ring()
        self.rx_buf_size = 0

    def _imr(self, vector: int, val: int) -> None:
        bit = 1 << vector
        if val & 1:
            self.disable_vectors(bit)
        else:
            self.eicr &= ~bit  # acknowledge, then unmask
            self.enable_vectors(bit)

    def _command(self, cmd: int) -> None:
        if self.resetting:
            return
        result = 0
        if cmd == CMD_ACTIVATE_DEV:
            result = 0 if self._activate() else 1
        elif cmd == CMD_QUIESCE_DEV:
            self.tx_on = self.rx_on = False
        elif cmd == CMD_RESET_DEV:
            self.reset()
        elif cmd == CMD_GET_QUEUE_STATUS:
            result = (0 if self.tx_on else 1) | (0 if self.rx_on else 2)
        else:
            result = 1
        self.regs[CMD] = result

    def _activate(self) -> bool:
        cfg = self.dma_view((self.regs[DSAH] << 32) | self.regs[DSAL], CONFIG.itemsize, CONFIG)
        if cfg is None:
            return False
        c = cfg[0].copy()  # read once
        sizes = [int(c[k]) for k in ("tx_size", "tx_comp_size", "rx_size", "rx_comp_size")]
        if any(s < MIN_RING or s > MAX_RING or s % 32 for s in sizes):
            return False
        if sizes[1] < sizes[0] or sizes[3] < sizes[2] or c["rx_buf_size"] < MIN_FRAME:
            return False
        bases = [int(c[k]) for k in ("tx_ring", "tx_comp", "rx_ring", "rx_comp")]
        if any(b % 64 or not self.iommu.covers(b, s * 16) for b, s in zip(bases, sizes)):
            return False
        self.txr, self.txc, self.rxr, self.rxc = (Ring(b, s) for b, s in zip(bases, sizes))
        self.rx_buf_size = int(c["rx_buf_size"])
        self.tx_on = self.rx_on = True
        self.regs[TXPROD] = self.regs[RXPROD] = 0
        return True

    def reset(self) -> None:
        super().reset()
        self._stop_queues()
        for off in (TXPROD, RXPROD, DSAL, DSAH, ECR):
            self.regs[off] = 0

    def _queue_error(self, queue: str) -> None:
        setattr(self, f"{queue}_on", False)
        self.regs[ECR] |= ECR_QERR
        self.raise_cause(1 << self.MISC_VECTOR)

    def _view(self, ring: Ring, dtype: np.dtype) -> np.ndarray | None:
        return self.dma_view(ring.base, ring.size * 16, dtype)

    def _owned(self, ring: Ring, desc: np.ndarray, gen_shift: int, doorbell: int) -> int:
        """How many entries from ring.next the device owns: up to the doorbell, while gen matches."""
        count = (doorbell - ring.next) % ring.size
        if not count:
            return 0
        d = desc[ring.slots(count)]["dword2"]
        mismatch = np.flatnonzero(((d >> gen_shift) & 1) != ring.gens(count))
        return int(mismatch[0]) if len(mismatch) else count

    def _complete(self, comp: Ring, view: np.ndarray, dword0: np.ndarray,
                  dword2: np.ndarray | int = 0, kind: int = 0) -> None:
        n = len(dword0)
        slots = comp.slots(n)
        view["dword0"][slots] = dword0
        view["dword1"][slots] = 0
        view["dword2"][slots] = dword2
        view["dword3"][slots] = kind | (comp.gens(n).astype(np.uint32) << COMP_GEN_SHIFT)
        comp.advance(n)

    # -- ring engine ---------------------------------------------------------------------------
    def tx(self) -> None:
        if self.resetting or not self.tx_on:
            return
        ring, comp = self._view(self.txr, DESC), self._view(self.txc, COMP)
        if ring is None or comp is None or self.regs[TXPROD] >= self.txr.size:
            return self._queue_error("tx")
        n = self._owned(self.txr, ring, TXD_GEN_SHIFT, self.regs[TXPROD])
        if not n:
            return
        slots = self.txr.slots(n)
        desc = ring[slots]  # read once
        length = (desc["dword2"] & LEN_MASK).astype(np.int64)
        length[length == 0] = 16384
        good = (desc["dword3"] & TXD_EOP != 0) & (length >= MIN_FRAME) & (length <= MAX_FRAME)
        if not good.all():  # a malformed descriptor stops the queue before it
            n = int(np.flatnonzero(~good)[0])
            self.stats.tx_errors += 1
            self._queue_error("tx")
            slots, desc, length = slots[:n], desc[:n], length[:n]
        frames, _ = self.dma_gather(desc["addr"], length)
        self.stats.tx_frames += len(frames)
        self.stats.tx_bytes += frames.nbytes
        self.switch.forward(self.port, frames)
        cq = slots[desc["dword3"] & TXD_CQ != 0]
        self.txr.advance(n)
        if len(cq):
            self._complete(self.txc, comp, cq.astype(np.uint32))
            self.raise_cause(1 << 0)

    def rx(self) -> None:
        if self.resetting or not self.rx_on or not self.port.pending():
            return
        ring, comp = self._view(self.rxr, DESC), self._view(self.rxc, COMP)
        if ring is None or comp is None or self.regs[RXPROD] >= self.rxr.size:
            return self._queue_error("rx")
        posted = self._owned(self.rxr, ring, RXD_GEN_SHIFT, self.regs[RXPROD])
        if not posted:
            return  # frames wait in the port's buffer
        frames, stopped = self.receive_fitting(posted, self.rx_buf_size)
        if stopped:  # the frame that does not fit waits in the port; the queue stops
            self._queue_error("rx")
        if not len(frames):
            return
        slots = self.rxr.slots(len(frames))
        n = self.dma_scatter_until(ring["addr"][slots], frames, self.rx_buf_size)
        if n < len(frames):  # a buffer the device may not write: that frame waits in the port
            self._queue_error("rx")
            slots, frames = self.rxr.slots(n), frames.take(slice(0, n))
        if not n:
            return
        self.stats.rx_frames += n
        self.stats.rx_bytes += frames.nbytes
        self._complete(self.rxc, comp, slots.astype(np.uint32) | RCD_EOP | RCD_SOP,
                       frames.lens.astype(np.uint32), RCD_TYPE)
        self.rxr.advance(n)
        self.raise_cause(1 << 0)
