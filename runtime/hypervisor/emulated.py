"""The hypervisor's emulated vNIC: serves a VM's shell rings in Python, no plugin, no VF engine.

It speaks the same exports as a plugin, so the shell drives both data paths alike. Its frames
enter and leave the embedded switch on the VF's own port, through the PF (as a switchdev
representor does): the PF sends and receives on behalf of the revoked VF. So one port policy
(anti-spoofing, VLANs, MTU) applies on both paths, and one port FIFO holds the VM's incoming
frames in order whichever path takes them next. It never holds a frame across calls: TX frames
are switched and completed in the poll that takes them, and it takes frames from the port only
into buffers the shell posted.
"""
from __future__ import annotations

import numpy as np

from npa.nic_model.frames import gather
from npa.nic_model.switch import Port, Switch
from npa.runtime.shell import DataPath
from npa.shell_api import DESC_FLAGS, Status

EMPTY = DESC_FLAGS["EMPTY"][0]


class EmulatedNic:
    def __init__(self, dp: DataPath, port: Port, switch: Switch):
        self.dp, self.port, self.switch = dp, port, switch
        self.guest = dp.guest  # it reaches the frames as the hypervisor: in the guest's memory
        self.rings = dp.rings
        self.posted = np.zeros(0, np.int64)  # RX buffers the shell posted, in order
        self.up = False
        self.stats = {"tx_frames": 0, "rx_frames": 0, "rx_oversize": 0}

    def npa_init(self, cfg_addr: int) -> int:
        if self.up:
            return Status.STATE
        self.up, self.posted = True, np.zeros(0, np.int64)
        return Status.OK

    def npa_poll(self, queue: int, budget: int) -> int:
        if not self.up:
            return -Status.STATE
        if queue != 0:
            return -Status.UNSUPPORTED
        return self._transmit(budget) + self._receive(budget)

    def _transmit(self, budget: int) -> int:
        n = min(budget, self.rings["txc"].free_slots())
        ent = self.rings["tx"].consume_burst(n)
        if not len(ent):
            return 0
        addr, lens = ent["addr"], ent["len"].astype(np.int64)
        self.switch.forward(self.port, gather(self.guest.np, self.guest.offsets(addr), lens))
        self.rings["txc"].produce_burst(addr, lens)
        self.stats["tx_frames"] += len(ent)
        return len(ent)

    def _receive(self, budget: int) -> int:
        fill = self.rings["fill"].consume_burst()
        if len(fill):
            self.posted = np.concatenate([self.posted, fill["addr"].astype(np.int64)])
        rx = self.rings["rx"]
        n = min(budget, len(self.posted), rx.free_slots(), self.port.pending())
        if not n:
            return 0
        frames = self.port.receive(n)
        if (over := frames.lens > self.dp.mtu).any():  # as a NIC with the VM's MTU would
            self.stats["rx_oversize"] += int(over.sum())
            frames = frames.take(~over)
        k = len(frames)
        addr, self.posted = self.posted[:k], self.posted[k:]
        self.guest.write(self.guest.offsets(addr), frames)
        rx.produce_burst(addr, frames.lens)
        self.stats["rx_frames"] += k
        return k

    def npa_intr(self, vector: int) -> int:
        return 0  # polled: the hypervisor runs it every step

    def npa_quiesce(self) -> int:
        """Hand the posted RX buffers back EMPTY; STATE while the rx ring has no room."""
        if not self.up:
            return Status.OK
        self._receive(0)  # take what is on the fill ring
        k = min(len(self.posted), self.rings["rx"].free_slots())
        self.rings["rx"].produce_burst(self.posted[:k], np.zeros(k, np.int64), flags=EMPTY)
        self.posted = self.posted[k:]
        if len(self.posted):
            return Status.STATE
        self.up = False
        return Status.OK

    def npa_reset(self) -> int:
        self.up, self.posted = False, np.zeros(0, np.int64)
        return Status.OK
