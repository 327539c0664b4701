"""The embedded switch: forwards bursts among the VF ports, the PF port and the uplink port.

Forwarding is learning-free: the PF programs which MAC lives on which port (the FDB). In VEB
mode (the default, as on SR-IOV NICs) a unicast frame goes to the port that owns its destination
MAC, an unknown unicast to the uplink, and broadcast/multicast floods to every port but the one
it came from. In VEPA mode every frame from a VF or the PF goes to the uplink, and an external
switch (a reflective relay: the loopback uplink) sends it back to be delivered by MAC; that is
how VM-to-VM traffic becomes visible on the wire.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from .frames import Frames

FIFO_FRAMES = 4096  # per-port egress buffer, like a NIC's packet buffer share


@dataclass
class PortStats:
    """Counted from the switch's side: rx = frames it took from the port, tx = handed to it."""

    rx_frames: int = 0
    rx_bytes: int = 0
    tx_frames: int = 0
    tx_bytes: int = 0
    drops: int = 0  # egress buffer full, or a frame with nowhere to go


class Port:
    def __init__(self, index: int, name: str, kind: str, capacity: int = FIFO_FRAMES):
        self.index, self.name, self.kind, self.capacity = index, name, kind, capacity
        self.stats = PortStats()
        self._fifo: deque[Frames] = deque()
        self.queued = 0

    def deliver(self, frames: Frames) -> None:
        """Egress: buffer frames for the device behind the port; what does not fit is dropped."""
        room = self.capacity - self.queued
        if len(frames) > room:
            self.stats.drops += len(frames) - room
            frames = frames.take(slice(0, room))
        if len(frames):
            self._fifo.append(frames)
            self.queued += len(frames)
            self.stats.tx_frames += len(frames)
            self.stats.tx_bytes += frames.nbytes

    def pending(self) -> int:
        return self.queued

    def receive(self, limit: int) -> Frames:
        """Take up to `limit` buffered frames, oldest first."""
        parts, n = [], 0
        while self._fifo and n < limit:
            head = self._fifo[0]
            if len(head) <= limit - n:
                parts.append(self._fifo.popleft())
                n += len(head)
            else:
                k = limit - n
                parts.append(head.take(slice(0, k)))
                self._fifo[0] = head.take(slice(k, None))
                n += k
        self.queued -= n
        return Frames.concat(parts)

    def flush(self) -> int:
        """Drop everything buffered (the device behind the port was reset); returns the count."""
        n, self.queued = self.queued, 0
        self._fifo.clear()
        return n


class Switch:
    def __init__(self, mode: str = "veb"):
        if mode not in ("veb", "vepa"):
            raise ValueError(f"switch mode {mode!r}: use veb or vepa")
        self.mode = mode
        self.ports: list[Port] = []
        self.fdb: dict[int, int] = {}  # MAC -> port index, programmed through the PF
        self.uplink: Port | None = None

    def add_port(self, name: str, kind: str, capacity: int = FIFO_FRAMES) -> Port:
        port = Port(len(self.ports), name, kind, capacity)
        self.ports.append(port)
        if kind == "uplink":
            self.uplink = port
        return port

    def set_mac(self, port: Port, mac: int) -> None:
        self.fdb = {m: p for m, p in self.fdb.items() if p != port.index}
        self.fdb[mac] = port.index

    def forward(self, ingress: Port, frames: Frames) -> None:
        n = len(frames)
        if not n:
            return
        ingress.stats.rx_frames += n
        ingress.stats.rx_bytes += frames.nbytes
        if self.mode == "vepa" and ingress is not self.uplink and self.uplink is not None:
            self.uplink.deliver(frames)
            return
        group = (frames.data[:, 0] & 1).astype(bool)
        dest = np.full(n, -1, np.int64)  # -1: flood
        unicast = ~group
        if unicast.any():
            macs, inverse = np.unique(frames.macs(0)[unicast], return_inverse=True)
            miss = self.uplink.index if self.uplink is not None and ingress is not self.uplink else -2
            dest[unicast] = np.array([self.fdb.get(int(m), miss) for m in macs])[inverse]
        nowhere = (dest == ingress.index) | (dest == -2)
        ingress.stats.drops += int(nowhere.sum())
        for port in self.ports:
            if port is ingress:
                continue
            sel = (dest == port.index) | group
            if sel.all():
                port.deliver(frames)
            elif sel.any():
                port.deliver(frames.take(sel))
