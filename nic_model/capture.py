"""Captures at the embedded switch's ports, as Wireshark and tshark read them.

A capture names the ports it watches (`uplink`, `pf`, `vf0`, ...). For each it records what the
port's device sent into the switch and what the switch delivered to it, so `--switch veb`
traffic, which never reaches the uplink, is seen at the VF ports. Classic pcap merges every
watched port into one stream; pcapng (dpkt's writer) gives each port its own interface, named
after it, so Wireshark's "Interface" column says where a frame was seen. Timestamps are the
wall clock when the capture started plus device time (`clock="device"`, `npa run`): they read as
dates of today, and a burst's frames are spread evenly over the tick that carried it, so rates a
tool computes from the capture are the run's. `npa host` stamps frames with the wall clock
(`clock="wall"`) when its host step handles them. In pcapng each packet
also says its direction (the `epb_flags` option), seen from the switch: inbound, entering the
switch at that port (sent by the VF, or coming from the link); outbound, leaving it there.
"""
from __future__ import annotations

import struct
import time
from pathlib import Path

from .frames import Frames
from .pcap import PcapWriter

FORMATS = ("pcap", "pcapng")
EPB_FLAGS = 2  # pcapng enhanced packet option: bits 0-1 direction, 1 inbound, 2 outbound


CLOCKS = ("device", "wall")


class Capture:
    def __init__(self, path: str | Path, ports, fmt: str = "pcap", start_s: float | None = None,
                 clock: str = "device", tick_us: int = 10):
        if fmt not in FORMATS:
            raise ValueError(f"capture format {fmt!r}: use {' or '.join(FORMATS)}")
        if clock not in CLOCKS:
            raise ValueError(f"capture clock {clock!r}: use {' or '.join(CLOCKS)}")
        self.path, self.fmt, self.clock, self.tick_us = Path(path), fmt, clock, tick_us
        self.start_s = time.time() if start_s is None else start_s
        self.ports = {p.index: k for k, p in enumerate(ports)}  # port index -> interface id
        self.frames = 0
        if fmt == "pcap":
            self._pcap = PcapWriter(self.path)
        else:
            import dpkt.pcapng as ng

            self._f = open(self.path, "wb")
            self._ng = ng
            idbs = [ng.InterfaceDescriptionBlockLE(snaplen=65535, linktype=1, opts=[
                ng.PcapngOptionLE(code=ng.PCAPNG_OPT_IF_NAME, data=p.name.encode()),
                ng.PcapngOptionLE(code=ng.PCAPNG_OPT_IF_TSRESOL, data=b"\x06"),  # µs
                ng.PcapngOptionLE(code=ng.PCAPNG_OPT_ENDOFOPT)]) for p in ports]
            self._writer = ng.Writer(self._f, idb=idbs)

    def watches(self, port) -> bool:
        return port.index in self.ports

    def record(self, port, frames: Frames, now_us: int, inbound: bool) -> None:
        """`frames` seen at `port` at device time `now_us`, entering the switch there
        (`inbound`) or leaving it (nothing if the port is not watched)."""
        if not len(frames) or port.index not in self.ports:
            return
        stamps = self.stamps(len(frames), now_us)
        if self.fmt == "pcap":
            self._pcap.write(frames, stamps)
        else:
            ng, iface = self._ng, self.ports[port.index]
            flags = [ng.PcapngOptionLE(code=EPB_FLAGS, data=struct.pack("<I", 1 if inbound else 2)),
                     ng.PcapngOptionLE(code=ng.PCAPNG_OPT_ENDOFOPT)]
            for i in range(len(frames)):
                data, ts_us = frames.frame(i), stamps[i]
                self._writer.writepkt(ng.EnhancedPacketBlockLE(
                    iface_id=iface, ts_high=ts_us >> 32, ts_low=ts_us & 0xFFFFFFFF, caplen=len(data),
                    pkt_len=len(data), pkt_data=data, opts=flags))
        self.frames += len(frames)

    def stamps(self, n: int, now_us: int) -> list[int]:
        """µs since the epoch of each of a burst's `n` frames seen at device time `now_us`."""
        if self.clock == "wall":
            return [int(time.time() * 1e6)] * n
        base = int(self.start_s * 1e6) + int(now_us)
        return [base + i * self.tick_us // n for i in range(n)]

    def close(self) -> None:
        if self.fmt == "pcap":
            self._pcap.close()
        elif not self._f.closed:
            self._f.close()
