"""Intel 82599 virtual function (ixgbevf), one queue pair, advanced descriptors.

Modelled on the 82599 datasheet and Linux's ixgbevf; register offsets are the real ones.

BAR0 registers (32-bit, byte offsets):
    0x0000 VFCTRL    bit 26 RST: function reset; reads 1 until the reset is done (RESET_US)
    0x0008 VFSTATUS  reads 0
    0x0010 VFLINKS   bit 30 LINK_UP; bits 29:28 speed (11b = 10 Gb/s)
    0x0100 VTEICR    interrupt causes, bit v = MSI-X vector v; read to clear, write 1 to clear
    0x0104 VTEICS    write 1 to set a cause
    0x0108 VTEIMS    write 1 to enable a vector; reads the enabled mask. A vector that fires
                     masks itself (EIAM behaviour): the driver re-arms it by writing VTEIMS.
    0x010C VTEIMC    write 1 to disable a vector
    0x1000 VFRDBAL   RX ring base, low 32 bits (128-byte aligned); 0x1004 VFRDBAH high
    0x1008 VFRDLEN   RX ring length in bytes (a multiple of 128)
    0x1010 VFRDH     RX head: next descriptor the device writes back
    0x1014 VFSRRCTL  bits 4:0 BSIZEPKT, receive buffer size in KiB (default 2)
    0x1018 VFRDT     RX tail doorbell: descriptors before it are posted buffers
    0x101C VFGPRC    good packets received (read-only)
    0x1028 VFRXDCTL  bit 25 ENABLE
    0x2000 VFTDBAL, 0x2004 VFTDBAH, 0x2008 VFTDLEN, 0x2010 VFTDH, 0x2018 VFTDT (TX doorbell)
    0x201C VFGPTC    good packets transmitted (read-only)
    0x2028 VFTXDCTL  bit 25 ENABLE
Vector 0 is queue 0 (RX write-back or a TX descriptor with RS done); vector 1 is misc: a DMA
fault or a malformed descriptor.

Advanced TX data descriptor, read format (16 bytes, little-endian):
    u64 buffer_addr
    u32 cmd_type_len  bits 15:0 DTALEN (buffer length); bits 23:20 DTYP = 0011b (data);
                      DCMD bits 31:24: EOP 24, IFCS 25, RS 27 (report status), DEXT 29 (advanced)
    u32 olinfo_status bits 31:14 PAYLEN; bits 3:0 STA, written back: bit 0 DD
Write-back: when RS was set the device sets DD in olinfo_status and leaves the rest alone. Every
frame is one descriptor here (EOP set); a descriptor that is not an advanced data descriptor
with EOP, or a length below 14 (no Ethernet header) or above MAX_FRAME, is consumed, not sent, counted in tx_errors and
raises the misc vector (the 82599's malicious-driver detection reports the same to the PF).

Advanced RX descriptor, read format: u64 pkt_addr; u64 hdr_addr (bit 0 must be 0: DD lands there).
Write-back format:
    u32 pkt_info/hdr_info (0 here); u32 RSS hash (0 here)
    u32 status_error  bit 0 DD, bit 1 EOP, bit 3 VP (VLAN stripped); bit 29 RXE (frame error)
    u16 length; u16 vlan
A frame whose buffer lies outside the IOMMU window is not written: the descriptor comes back with
DD, EOP and RXE and length 0, a DMA fault is counted and the misc vector raised. A frame longer
than BSIZEPKT (0 included) stops the RX queue before it, with the misc vector raised and
rx_oversize counted; the frame waits in the port (the 82599 would spread it over several
descriptors; this model has one buffer per frame, and loses nothing to a misprogrammed size). No write ever
passes BSIZEPKT bytes from a buffer's address, and addresses are 64-bit and checked unsigned.
"""
from __future__ import annotations

import numpy as np

from .ring import read_once, slots
from .switch import Port, Switch
from .vf import Vf

PCI_VENDOR, PCI_DEVICE = 0x8086, 0x10ED  # 82599 Ethernet Controller Virtual Function

VFCTRL, VFSTATUS, VFLINKS = 0x0000, 0x0008, 0x0010
VTEICR, VTEICS, VTEIMS, VTEIMC = 0x0100, 0x0104, 0x0108, 0x010C
VFRDBAL, VFRDBAH, VFRDLEN, VFRDH, VFSRRCTL, VFRDT, VFGPRC, VFRXDCTL = (
    0x1000, 0x1004, 0x1008, 0x1010, 0x1014, 0x1018, 0x101C, 0x1028)
VFTDBAL, VFTDBAH, VFTDLEN, VFTDH, VFTDT, VFGPTC, VFTXDCTL = (
    0x2000, 0x2004, 0x2008, 0x2010, 0x2018, 0x201C, 0x2028)

CTRL_RST = 1 << 26
LINKS_UP = 1 << 30
LINKS_SPEED_10G = 3 << 28
DCTL_ENABLE = 1 << 25
SRRCTL_BSIZE_MASK = 0x1F

TXD_DTYP_MASK, TXD_DTYP_DATA = 0xF << 20, 0x3 << 20
TXD_EOP, TXD_IFCS, TXD_RS, TXD_DEXT = 1 << 24, 1 << 25, 1 << 27, 1 << 29
TXD_LEN_MASK = 0xFFFF
TXD_STA_DD = 1 << 0
RXD_STAT_DD, RXD_STAT_EOP, RXD_STAT_VP = 1 << 0, 1 << 1, 1 << 3
RXD_ERR_RXE = 1 << 29

MIN_FRAME, MAX_FRAME = 14, 9728  # an Ethernet header .. the model's jumbo limit, without FCS
DESC_SIZE = 16

TX_DESC = np.dtype([("addr", "<u8"), ("cmd_type_len", "<u4"), ("olinfo_status", "<u4")])
RX_READ = np.dtype([("pkt_addr", "<u8"), ("hdr_addr", "<u8")])
RX_WB = np.dtype([("pkt_info", "<u4"), ("rss", "<u4"), ("status_error", "<u4"),
                  ("length", "<u2"), ("vlan", "<u2")])
assert TX_DESC.itemsize == RX_READ.itemsize == RX_WB.itemsize == DESC_SIZE


class IxgbeVf(Vf):
    PCI_VENDOR, PCI_DEVICE = PCI_VENDOR, PCI_DEVICE
    MODEL = "ixgbevf"
    DESCRIPTION = "Intel 82599 VF, advanced 16-byte descriptors, head/tail doorbells"
    SIZE = 0x4000  # the 82599 VF's BAR0: 16 KiB of registers (queue registers at 0x1000-0x2FFF)

    def __init__(self, index: int, port: Port, switch: Switch):
        super().__init__(index, port, switch)
        ro = dict(on_write=lambda v: None)
        self.register(VFCTRL, 0, on_write=self._ctrl,
                      on_read=lambda: CTRL_RST if self.resetting else 0)
        self.register(VFSTATUS, 0, **ro)
        self.register(VFLINKS, 0, **ro, on_read=lambda: 0 if self.resetting else LINKS_UP | LINKS_SPEED_10G)
        self.register(VTEICR, 0, on_read=self.read_causes,
                      on_write=lambda v: setattr(self, "eicr", self.eicr & ~v))
        self.register(VTEICS, 0, on_write=self.raise_cause, on_read=lambda: self.eicr)
        self.register(VTEIMS, 0, on_write=self.enable_vectors, on_read=lambda: self.eims)
        self.register(VTEIMC, 0, on_write=self.disable_vectors, on_read=lambda: 0)
        self.register(VFGPRC, 0, **ro, on_read=lambda: self.stats.rx_frames & 0xFFFFFFFF)
        self.register(VFGPTC, 0, **ro, on_read=lambda: self.stats.tx_frames & 0xFFFFFFFF)
        self._queue_regs = (VFRDBAL, VFRDBAH, VFRDLEN, VFRDH, VFRDT, VFRXDCTL,
                            VFTDBAL, VFTDBAH, VFTDLEN, VFTDH, VFTDT, VFTXDCTL)
        for off in self._queue_regs:
            self.register(off, 0)
        self.register(VFSRRCTL, 2)

    def _ctrl(self, val: int) -> None:
        if val & CTRL_RST:
            self.reset()

    def reset(self) -> None:
        super().reset()
        for off in self._queue_regs:
            self.regs[off] = 0
        self.regs[VFSRRCTL] = 2

    # -- ring engine ---------------------------------------------------------------------------
    def _ring(self, bal: int, bah: int, dlen: int, dtype: np.dtype) -> np.ndarray | None:
        """The descriptor ring as a typed view, or None (a fault, queue disabled) if unusable."""
        r = self.regs
        base, nbytes = (r[bah] << 32) | r[bal], r[dlen]
        if nbytes == 0 or nbytes % 128 or base % 128:
            return None
        return self.dma_view(base, nbytes, dtype)

    def tx(self) -> None:
        r = self.regs
        if self.resetting or not r[VFTXDCTL] & DCTL_ENABLE:
            return
        ring = self._ring(VFTDBAL, VFTDBAH, VFTDLEN, TX_DESC)
        if ring is None or r[VFTDT] >= len(ring) or r[VFTDH] >= len(ring):
            r[VFTXDCTL] &= ~DCTL_ENABLE  # the queue stops, as on a malformed ring
            self.raise_cause(1 << self.MISC_VECTOR)
            return
        size, head, tail = len(ring), r[VFTDH], r[VFTDT]
        count = (tail - head) % size
        if not count:
            return
        at = slots(head, count, size)
        desc = read_once(ring, at)
        cmd = desc["cmd_type_len"]
        length = (cmd & TXD_LEN_MASK).astype(np.int64)
        good = (((cmd & (TXD_DTYP_MASK | TXD_DEXT | TXD_EOP)) == (TXD_DTYP_DATA | TXD_DEXT | TXD_EOP))
                & (length >= MIN_FRAME) & (length <= MAX_FRAME))
        if (bad := count - int(np.count_nonzero(good))):
            self.stats.tx_errors += bad
            self.raise_cause(1 << self.MISC_VECTOR)
            frames, _ = self.dma_gather(desc["addr"][good], length[good])
        else:
            frames, _ = self.dma_gather(desc["addr"], length)
        self.stats.tx_frames += len(frames)
        self.stats.tx_bytes += frames.nbytes
        self.switch.forward(self.port, frames)
        rs = (cmd & TXD_RS) != 0
        if np.count_nonzero(rs):
            ring["olinfo_status"][at] |= rs.astype(np.uint32) * TXD_STA_DD
            self.raise_cause(1 << 0)
        r[VFTDH] = tail

    def rx(self) -> None:
        r = self.regs
        if self.resetting or not r[VFRXDCTL] & DCTL_ENABLE or not self.port.pending():
            return
        ring = self._ring(VFRDBAL, VFRDBAH, VFRDLEN, RX_READ)
        if ring is None or r[VFRDT] >= len(ring) or r[VFRDH] >= len(ring):
            r[VFRXDCTL] &= ~DCTL_ENABLE
            self.raise_cause(1 << self.MISC_VECTOR)
            return
        size, head = len(ring), r[VFRDH]
        posted = (r[VFRDT] - head) % size
        if not posted:
            return  # frames wait in the port's buffer (and drop there when it is full)
        bsize = (r[VFSRRCTL] & SRRCTL_BSIZE_MASK) * 1024
        frames, stopped = self.receive_fitting(posted, bsize)
        if stopped:  # the frame that does not fit waits in the port; the queue stops
            r[VFRXDCTL] &= ~DCTL_ENABLE
            self.raise_cause(1 << self.MISC_VECTOR)
        if not len(frames):
            return
        at = slots(head, len(frames), size)
        n = self.dma_scatter_until(read_once(ring["pkt_addr"], at), frames, bsize)  # before the write-back
        if n < len(frames):  # a buffer the device may not write: that frame waits in the port
            r[VFRXDCTL] &= ~DCTL_ENABLE
            self.raise_cause(1 << self.MISC_VECTOR)
            at, frames = slots(head, n, size), frames.take(slice(0, n))
        if not n:
            return
        wb = ring.view(RX_WB)
        wb["pkt_info"][at] = 0
        wb["rss"][at] = 0
        wb["status_error"][at] = RXD_STAT_DD | RXD_STAT_EOP
        wb["length"][at] = frames.lens
        wb["vlan"][at] = 0
        self.stats.rx_frames += n
        self.stats.rx_bytes += frames.nbytes
        r[VFRDH] = (head + n) % size
        self.raise_cause(1 << 0)
