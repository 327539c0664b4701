"""The uplink port's far side: nothing (`null`), a reflective relay (`loopback`), a capture.

`null` discards what leaves the NIC, like an unplugged cable. `loopback` sends every frame
straight back in, like the external switch of a VEPA setup doing hairpin turns. Either can
also write every frame that leaves the NIC to a classic pcap file.
"""
from __future__ import annotations

from pathlib import Path

from .pcap import PcapWriter
from .switch import Port, Switch

KINDS = ("null", "loopback")


class Uplink:
    def __init__(self, switch: Switch, port: Port, kind: str = "null", pcap: str | Path | None = None):
        if kind not in KINDS:
            raise ValueError(f"uplink {kind!r}: use one of {', '.join(KINDS)}")
        self.switch, self.port, self.kind = switch, port, kind
        self.capture = PcapWriter(pcap) if pcap else None
        self.discarded = 0

    def step(self, now_us: int) -> None:
        frames = self.port.receive(self.port.pending())
        if not len(frames):
            return
        if self.capture:
            self.capture.write(frames, now_us)
        if self.kind == "loopback":
            self.switch.forward(self.port, frames)
        else:
            self.discarded += len(frames)

    def close(self) -> None:
        if self.capture:
            self.capture.close()
