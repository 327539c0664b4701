"""Captures at the embedded switch's ports, as Wireshark and tshark read them.

A capture names the ports it watches (`uplink`, `pf`, `vf0`, ...). For each it records what the
port's device sent into the switch and what the switch delivered to it, so `--switch veb`
traffic, which never reaches the uplink, is seen at the VF ports. Classic pcap merges every
watched port into one stream; pcapng (dpkt's writer) gives each port its own interface, named
after it, so Wireshark's "Interface" column says where a frame was seen. Timestamps are the
wall clock: a burst recorded at one moment is spread evenly over the time since the previous
record (at most SPREAD_US, so an idle gap is not filled), the way its frames arrived while the
host step ran. So the rates Wireshark or capinfos compute from a capture of `npa run` are the
run's own, and `npa host` captures line up with a tcpdump on the TAP. In pcapng each packet
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


SPREAD_US = 10_000  # a burst is spread over at most this much of the time before it


class Capture:
    def __init__(self, path: str | Path, ports, fmt: str = "pcap"):
        if fmt not in FORMATS:
            raise ValueError(f"capture format {fmt!r}: use {' or '.join(FORMATS)}")
        self.path, self.fmt = Path(path), fmt
        self._last_us = 0  # the wall-clock stamp of the last frame recorded
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

    def record(self, port, frames: Frames, inbound: bool) -> None:
        """`frames` seen at `port` now, entering the switch there (`inbound`) or leaving it
        (nothing if the port is not watched)."""
        if not len(frames) or port.index not in self.ports:
            return
        stamps = self.stamps(len(frames))
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

    def stamps(self, n: int) -> list[int]:
        """µs since the epoch of each of a burst's `n` frames recorded now: spread evenly over
        the time since the last record (at most SPREAD_US), the last one now; never backwards."""
        end = max(time.time_ns() // 1000, self._last_us)
        start = max(self._last_us, end - SPREAD_US) if self._last_us else end
        self._last_us = end
        return [start + (end - start) * (i + 1) // n for i in range(n)]

    def close(self) -> None:
        if self.fmt == "pcap":
            self._pcap.close()
        elif not self._f.closed:
            self._f.close()
