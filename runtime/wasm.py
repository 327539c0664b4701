"""Just enough of the wasm binary format: sections, custom sections and the `dylink.0` record.

Everything else (types, imports, exports) is read through wasmtime once the module validates.
"""
from __future__ import annotations

from dataclasses import dataclass

MAGIC = b"\0asm\x01\0\0\0"
DYLINK = "dylink.0"
_MEM_INFO, _NEEDED = 1, 2


class WasmFormatError(ValueError):
    pass


def _leb(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise WasmFormatError("truncated LEB128")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 35:
            raise WasmFormatError("LEB128 too long")


def _encode_leb(value: int) -> bytes:
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        out.append(b | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _name(data: bytes, pos: int) -> tuple[str, int]:
    n, pos = _leb(data, pos)
    if pos + n > len(data):
        raise WasmFormatError("truncated name")
    return data[pos:pos + n].decode("utf-8", "replace"), pos + n


def sections(data: bytes) -> list[tuple[int, int, int]]:
    """(id, payload start, payload end) of every section, in order."""
    if data[:8] != MAGIC:
        raise WasmFormatError("not a wasm module (bad magic or version)")
    out, pos = [], 8
    while pos < len(data):
        sid = data[pos]
        size, start = _leb(data, pos + 1)
        if start + size > len(data):
            raise WasmFormatError(f"section {sid} runs past the end of the file")
        out.append((sid, start, start + size))
        pos = start + size
    return out


def custom_sections(data: bytes) -> dict[str, bytes]:
    """Payloads of the custom sections by name (the first one of each name)."""
    found: dict[str, bytes] = {}
    for sid, start, end in sections(data):
        if sid == 0:
            name, pos = _name(data, start)
            found.setdefault(name, data[pos:end])
    return found


def custom_section(name: str, payload: bytes) -> bytes:
    """A custom section, encoded."""
    raw = name.encode()
    body = _encode_leb(len(raw)) + raw + payload
    return b"\0" + _encode_leb(len(body)) + body


def with_custom_section(data: bytes, name: str, payload: bytes, first: bool = False) -> bytes:
    """`data` with a custom section added at the end, or first (where `dylink.0` must stand)."""
    sections(data)  # refuse anything that is not a module
    sec = custom_section(name, payload)
    return MAGIC + sec + data[8:] if first else data + sec


@dataclass(frozen=True)
class DylinkInfo:
    memory_size: int
    memory_align: int  # log2
    table_size: int
    table_align: int  # log2
    needed: tuple[str, ...] = ()


def dylink_info(data: bytes) -> DylinkInfo | None:
    """The `dylink.0` memory info of a position-independent module, None when it has none."""
    secs = sections(data)
    if not secs or secs[0][0] != 0:
        return None
    name, pos = _name(data, secs[0][1])
    if name != DYLINK:
        return None
    end = secs[0][2]
    mem = (0, 0, 0, 0)
    needed: list[str] = []
    while pos < end:
        kind = data[pos]
        size, pos = _leb(data, pos + 1)
        sub_end = pos + size
        if kind == _MEM_INFO:
            vals = []
            for _ in range(4):
                v, pos = _leb(data, pos)
                vals.append(v)
            mem = tuple(vals)
        elif kind == _NEEDED:
            count, pos = _leb(data, pos)
            for _ in range(count):
                lib, pos = _name(data, pos)
                needed.append(lib)
        pos = sub_end
    return DylinkInfo(*mem, needed=tuple(needed))


def dylink_section(memory_size: int, memory_align: int = 4, table_size: int = 0,
                   table_align: int = 0) -> bytes:
    """The payload of a `dylink.0` section with one memory-info record (for tooling and tests)."""
    body = b"".join(_encode_leb(v) for v in (memory_size, memory_align, table_size, table_align))
    return bytes([_MEM_INFO]) + _encode_leb(len(body)) + body
