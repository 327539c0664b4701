"""Little-endian layouts shared by the shell and plugins: the init config block and shell rings.

Shell rings are AF_XDP style: single producer, single consumer, free-running u32 indices, a
power-of-two number of fixed-size descriptors after a header. The producer and consumer indices
sit on separate 64-byte lines, as on real hardware where each side owns one.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

_SIZES = {"u8": 1, "u16": 2, "u32": 4, "u64": 8}
_STRUCT = {"u8": "B", "u16": "H", "u32": "I", "u64": "Q"}


@dataclass(frozen=True)
class Field:
    name: str
    ctype: str
    doc: str
    count: int = 1  # > 1: an array (used for padding and reserved words)

    @property
    def size(self) -> int:
        return _SIZES[self.ctype] * self.count


class Layout:
    """A C struct with natural alignment and no implicit padding (checked here, once)."""

    def __init__(self, name: str, doc: str, fields: list[Field]):
        self.name, self.doc, self.fields = name, doc, tuple(fields)
        self.offsets: dict[str, int] = {}
        off = 0
        for f in self.fields:
            if off % _SIZES[f.ctype]:
                raise ValueError(f"{name}.{f.name} at {off} is not naturally aligned")
            self.offsets[f.name] = off
            off += f.size
        self.size = off
        self.struct = struct.Struct("<" + "".join(
            f"{f.count}{_STRUCT[f.ctype]}" if f.count > 1 else _STRUCT[f.ctype] for f in self.fields))
        assert self.struct.size == self.size

    def pack(self, **values: int) -> bytes:
        """Pack named fields; unnamed ones (padding, reserved) are zero."""
        buf = bytearray(self.size)
        for name, value in values.items():
            f = self.field(name)
            struct.pack_into("<" + _STRUCT[f.ctype], buf, self.offsets[name], value)
        return bytes(buf)

    def unpack(self, data: bytes | memoryview) -> dict[str, int]:
        out = {}
        for f in self.fields:
            if f.count == 1:
                out[f.name] = struct.unpack_from("<" + _STRUCT[f.ctype], data, self.offsets[f.name])[0]
        return out

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"{self.name} has no field {name!r}")


CFG_MAGIC = 0x3141504E  # "NPA1", little-endian

RING_DESC = Layout("npa_desc", "One shell-ring entry (16 bytes).", [
    Field("addr", "u64", "frame address in the guest's memory (opaque: copy it, never dereference it)"),
    Field("len", "u32", "frame length in bytes; for `fill`, the buffer size"),
    Field("flags", "u16", "NPA_DESC_* flags"),
    Field("vlan", "u16", "VLAN TCI, valid when NPA_DESC_VLAN is set"),
])

RING_HDR = Layout("npa_ring_hdr", "Header in front of every shell ring; descriptors follow it.", [
    Field("producer", "u32", "free-running index of the next entry the producer writes"),
    Field("pad0", "u32", "keeps `consumer` on its own 64-byte line", 15),
    Field("consumer", "u32", "free-running index of the next entry the consumer reads"),
    Field("pad1", "u32", "reserved, zero", 15),
])

DESC_FLAGS: dict[str, tuple[int, str]] = {
    "VLAN": (1 << 0, "`vlan` holds a VLAN TCI (tx: insert it; rx: it was stripped)"),
    "UNSENT": (1 << 1, "txc: the frame was handed back unsent (quiesce)"),
    "EMPTY": (1 << 2, "rx: a posted buffer handed back without data (quiesce)"),
    "ERROR": (1 << 3, "txc: the device failed to send the frame"),
}

_RINGS = ("tx", "txc", "fill", "rx")

INIT_CFG = Layout("npa_init_cfg", "The init config block the shell writes before `npa_init`.", [
    Field("magic", "u32", "NPA_CFG_MAGIC"),
    Field("abi_major", "u16", "the shell's ABI major"),
    Field("abi_minor", "u16", "the shell's ABI minor"),
    Field("cfg_size", "u32", "size of this block in bytes"),
    Field("features", "u32", "NPA_F_* bits the shell offers (intersected with the manifest's)"),
    Field("pci_vendor", "u16", "the VF's PCI vendor id"),
    Field("pci_device", "u16", "the VF's PCI device id"),
    Field("bar0_size", "u32", "size of the VF's BAR0 in bytes"),
    Field("num_queues", "u16", "queue pairs the shell drives (queue ids 0..num_queues-1)"),
    Field("num_vectors", "u16", "interrupt vectors; queue q raises vector q"),
    Field("mtu", "u32", "largest frame the shell will send or accept, in bytes: Ethernet header "
          "included, FCS and VLAN tag not (1514 for an IP MTU of 1500)"),
    Field("frame_size", "u32", "size of every frame buffer of the pool"),
    Field("pool_base", "u32", "low 32 bits of the frame pool's DMA address"),
    Field("pool_frames", "u32", "number of frames in the pool"),
    *[f for r in _RINGS for f in (
        Field(f"{r}_ring", "u32", f"address of the `{r}` ring header"),
        Field(f"{r}_size", "u32", f"entries in the `{r}` ring, a power of two"))],
    Field("pool_base_hi", "u32", "high 32 bits of the frame pool's DMA address (v1.1)"),
    Field("reserved", "u32", "reserved, zero", 12),
])
