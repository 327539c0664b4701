"""A pure-Python driver for the 82599 VF model: the benchmark's baseline, not a product.

It is the ixgbevf plugin's algorithm (plugins-src/ixgbevf/ixgbevf.c) written the way a Python
driver would be: one struct pack/unpack per descriptor, the same shell rings, the same BAR and
DMA imports. `npa bench datapath` runs it and the wasm plugin over the same host, same run.
"""
from __future__ import annotations

import struct

from npa.nic_model import ixgbe as hw
from npa.runtime.sandbox import ShellImports
from npa.shell_api import INIT_CFG, Status

HW_MAX = 512
_SHELL = struct.Struct("<QIHH")
_TX = struct.Struct("<QII")
_RX_WB = struct.Struct("<IIIHH")
_U32 = struct.Struct("<I")


class PyIxgbeVf:
    def __init__(self, host: ShellImports):
        self.host, self.mem = host, host.region.mem
        self.up = False

    def _u32(self, addr: int) -> int:
        return _U32.unpack_from(self.mem, addr)[0]

    def _set_u32(self, addr: int, v: int) -> None:
        _U32.pack_into(self.mem, addr, v & 0xFFFFFFFF)

    def npa_init(self, cfg_addr: int) -> int:
        h = self.host
        c = INIT_CFG.unpack(self.mem[cfg_addr:cfg_addr + INIT_CFG.size])
        self.c = c
        self.tx_n, self.rx_n = min(c["tx_size"], HW_MAX), min(c["fill_size"], HW_MAX)
        h.mmio_write32(hw.VFCTRL, hw.CTRL_RST)
        while h.mmio_read32(hw.VFCTRL) & hw.CTRL_RST:
            h.udelay(10)
        self.txr, self.rxr = h.dma_alloc(self.tx_n * 16, 128), h.dma_alloc(self.rx_n * 16, 128)
        if not (self.txr and self.rxr):
            return Status.NOMEM
        self.tx_shadow, self.tx_rs = [None] * self.tx_n, [False] * self.tx_n
        self.rx_shadow = [None] * self.rx_n
        self.tx_tail = self.tx_clean = self.rx_tail = self.rx_next = 0
        for off, v in ((hw.VFTDBAL, self.txr), (hw.VFTDBAH, 0), (hw.VFTDLEN, self.tx_n * 16),
                       (hw.VFTDH, 0), (hw.VFTDT, 0), (hw.VFTXDCTL, hw.DCTL_ENABLE),
                       (hw.VFRDBAL, self.rxr), (hw.VFRDBAH, 0), (hw.VFRDLEN, self.rx_n * 16),
                       (hw.VFSRRCTL, c["frame_size"] // 1024), (hw.VFRDH, 0), (hw.VFRDT, 0),
                       (hw.VFRXDCTL, hw.DCTL_ENABLE), (hw.VTEIMS, 3)):
            h.mmio_write32(off, v)
        self.up = True
        return Status.OK

    def _ring(self, name: str) -> tuple[int, int]:
        return self.c[f"{name}_ring"], self.c[f"{name}_size"]

    def npa_poll(self, queue: int, budget: int) -> int:
        if not self.up:
            return -Status.STATE
        return self._reclaim() + self._tx(budget) + self._rx(budget)

    def _reclaim(self) -> int:
        ring, size = self._ring("txc")
        m, prod, done = self.tx_n - 1, self._u32(ring), 0
        cons = self._u32(ring + 64)
        while self.tx_clean != self.tx_tail:
            end = self.tx_clean
            while not self.tx_rs[end & m]:
                end += 1
            if not self._u32(self.txr + (end & m) * 16 + 12) & hw.TXD_STA_DD:
                break
            while self.tx_clean != end + 1 and prod - cons < size:
                _SHELL.pack_into(self.mem, ring + 128 + (prod & (size - 1)) * 16,
                                 *self.tx_shadow[self.tx_clean & m])
                prod, self.tx_clean, done = prod + 1, self.tx_clean + 1, done + 1
            if self.tx_clean != end + 1:
                break
        self._set_u32(ring, prod)
        return done

    def _tx(self, budget: int) -> int:
        ring, size = self._ring("tx")
        m, cons = self.tx_n - 1, self._u32(ring + 64)
        n = min(self._u32(ring) - cons, self.tx_n - 1 - (self.tx_tail - self.tx_clean), budget)
        for i in range(n):
            d = _SHELL.unpack_from(self.mem, ring + 128 + ((cons + i) & (size - 1)) * 16)
            slot, ln = (self.tx_tail + i) & m, d[1] & 0xFFFF
            cmd = hw.TXD_DTYP_DATA | hw.TXD_DEXT | hw.TXD_EOP | hw.TXD_IFCS | ln
            _TX.pack_into(self.mem, self.txr + slot * 16, d[0], cmd | (hw.TXD_RS if i == n - 1 else 0), ln << 14)
            self.tx_shadow[slot], self.tx_rs[slot] = d, i == n - 1
        if n:
            self._set_u32(ring + 64, cons + n)
            self.tx_tail += n
            self.host.mmio_write32(hw.VFTDT, self.tx_tail & m)
        return n

    def _rx(self, budget: int) -> int:
        ring, size = self._ring("rx")
        m, prod, n = self.rx_n - 1, self._u32(ring), 0
        cons = self._u32(ring + 64)
        while n < budget and self.rx_next != self.rx_tail and prod - cons < size:
            _, _, status, length, _vlan = _RX_WB.unpack_from(self.mem, self.rxr + (self.rx_next & m) * 16)
            if not status & hw.RXD_STAT_DD:
                break
            addr = self.rx_shadow[self.rx_next & m][0]
            ok = not status & hw.RXD_ERR_RXE
            _SHELL.pack_into(self.mem, ring + 128 + (prod & (size - 1)) * 16, addr,
                             length if ok else 0, 0 if ok else 4, 0)
            prod, self.rx_next, n = prod + 1, self.rx_next + 1, n + 1
        self._set_u32(ring, prod)
        fring, fsize = self._ring("fill")
        fcons = self._u32(fring + 64)
        k = min(self._u32(fring) - fcons, self.rx_n - 1 - (self.rx_tail - self.rx_next))
        for i in range(k):
            d = _SHELL.unpack_from(self.mem, fring + 128 + ((fcons + i) & (fsize - 1)) * 16)
            slot = (self.rx_tail + i) & m
            struct.pack_into("<QQ", self.mem, self.rxr + slot * 16, d[0], 0)
            self.rx_shadow[slot] = d
        if k:
            self._set_u32(fring + 64, fcons + k)
            self.rx_tail += k
            self.host.mmio_write32(hw.VFRDT, self.rx_tail & m)
        return n

    def npa_intr(self, vector: int) -> int:
        self.host.mmio_write32(hw.VTEICR, 1 << vector)
        self.host.mmio_write32(hw.VTEIMS, 1 << vector)
        return 1

    def npa_quiesce(self) -> int:
        """Benchmark-grade: stop the queues, hand back every frame (room is not checked)."""
        h = self.host
        for off in (hw.VFTXDCTL, hw.VFRXDCTL):
            h.mmio_write32(off, 0)
        m, head = self.tx_n - 1, h.mmio_read32(hw.VFTDH)
        sent_end = self.tx_clean + ((head - self.tx_clean) & m)
        ring, size = self._ring("txc")
        prod = self._u32(ring)
        while self.tx_clean != self.tx_tail:
            a, ln, fl, vl = self.tx_shadow[self.tx_clean & m]
            fl |= 2 if self.tx_clean >= sent_end else 0
            _SHELL.pack_into(self.mem, ring + 128 + (prod & (size - 1)) * 16, a, ln, fl, vl)
            prod, self.tx_clean = prod + 1, self.tx_clean + 1
        self._set_u32(ring, prod)
        self._rx(1 << 30)
        ring, size = self._ring("rx")
        prod, m = self._u32(ring), self.rx_n - 1
        while self.rx_next != self.rx_tail:
            a = self.rx_shadow[self.rx_next & m][0]
            _SHELL.pack_into(self.mem, ring + 128 + (prod & (size - 1)) * 16, a, 0, 4, 0)
            prod, self.rx_next = prod + 1, self.rx_next + 1
        self._set_u32(ring, prod)
        self.up = False
        return Status.OK

    def npa_reset(self) -> int:
        self.up = False
        self.host.mmio_write32(hw.VFCTRL, hw.CTRL_RST)
        return Status.OK
