"""The null VF: a device with no wire, the counterpart of DPDK's net_null.

BAR0 (32-bit registers): 0x00 ID reads 0x4e554c4c ("NULL"); 0x04 CTRL, bit 0 resets the device
(self-clearing); 0x08 STATUS, bit 0 ready; 0x0C ICR, read to clear; 0x10 IMS, interrupt mask;
0x14 TXDB, TX doorbell (frames sent so far); 0x18 RXBASE, where the driver keeps posted buffers.
A reset takes RESET_US microseconds of device time, during which STATUS reads 0: a driver must
wait for it with `shell.udelay`. Transmitted frames go nowhere; nothing is ever received. It lets
the Shell API be exercised end to end before a real NIC design is involved.
"""
from __future__ import annotations

from .bar import Bar0

PCI_VENDOR, PCI_DEVICE = 0x1B36, 0x00F0
NULL_ID = 0x4E554C4C
RESET_US = 20
REG_ID, REG_CTRL, REG_STATUS, REG_ICR, REG_IMS, REG_TXDB, REG_RXBASE = range(0, 0x1C, 4)


class NullVf(Bar0):
    PCI_VENDOR, PCI_DEVICE = PCI_VENDOR, PCI_DEVICE
    MODEL = "null"
    DESCRIPTION = "null VF: no wire, TX completes at once, nothing is received"

    def __init__(self) -> None:
        super().__init__()
        self.resets = 0
        self.busy_us = 0
        self.register(REG_ID, NULL_ID, on_write=lambda v: None)
        self.register(REG_CTRL, 0, on_write=self._ctrl)
        self.register(REG_STATUS, 1, on_write=lambda v: None,
                      on_read=lambda: 0 if self.busy_us else 1)
        self.register(REG_ICR, 0, on_read=self._read_icr)
        self.register(REG_IMS, 0)
        self.register(REG_TXDB, 0)
        self.register(REG_RXBASE, 0)

    def _ctrl(self, val: int) -> None:
        if val & 1:
            self.resets += 1
            self.busy_us = RESET_US
            for off in (REG_ICR, REG_IMS, REG_TXDB, REG_RXBASE):
                self.regs[off] = 0

    def advance(self, us: int) -> None:
        """Let `us` microseconds of device time pass."""
        self.busy_us = max(0, self.busy_us - us)

    def _read_icr(self) -> int:
        icr, self.regs[REG_ICR] = self.regs[REG_ICR], 0
        return icr

    def raise_interrupt(self) -> None:
        """Latch cause bit 0; the plugin sees it on its next ICR read."""
        self.regs[REG_ICR] |= 1

    @property
    def frames_sent(self) -> int:
        return self.regs[REG_TXDB]
