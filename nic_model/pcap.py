"""Classic pcap files (the libpcap format Wireshark and tshark read), Ethernet link type."""
from __future__ import annotations

import struct
from pathlib import Path

from .frames import Frames

MAGIC_USEC = 0xA1B2C3D4
LINKTYPE_ETHERNET = 1
SNAPLEN = 65535
_GLOBAL = struct.Struct("<IHHiIII")
_RECORD = struct.Struct("<IIII")


class PcapWriter:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._f = open(self.path, "wb")
        self._f.write(_GLOBAL.pack(MAGIC_USEC, 2, 4, 0, 0, SNAPLEN, LINKTYPE_ETHERNET))
        self.frames = 0

    def write(self, frames: Frames, times_us) -> None:
        """Frames seen at `times_us` (one per frame, µs since the epoch)."""
        out = []
        for i in range(len(frames)):
            data = frames.frame(i)
            sec, usec = divmod(int(times_us[i]), 1_000_000)
            out.append(_RECORD.pack(sec, usec, len(data), len(data)))
            out.append(data)
        self._f.write(b"".join(out))
        self.frames += len(frames)

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()


def read_pcap(path: str | Path) -> list[bytes]:
    """Frames of a classic pcap file (for tools and checks; tests use an independent reader)."""
    data = Path(path).read_bytes()
    magic, _, _, _, _, _, link = _GLOBAL.unpack_from(data)
    if magic != MAGIC_USEC or link != LINKTYPE_ETHERNET:
        raise ValueError(f"{path}: not a little-endian Ethernet pcap file")
    off, out = _GLOBAL.size, []
    while off < len(data):
        _, _, incl, _ = _RECORD.unpack_from(data, off)
        off += _RECORD.size
        out.append(data[off:off + incl])
        off += incl
    return out
