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


_VALTYPES = {0x7F: "i32", 0x7E: "i64", 0x7D: "f32", 0x7C: "f64", 0x7B: "v128",
             0x70: "funcref", 0x6F: "externref"}


@dataclass(frozen=True)
class Extern:
    """An import or export as the loader checks it: names, kind, and a printable type."""

    module: str  # "" for exports
    name: str
    kind: str  # func | table | memory | global
    type: str  # e.g. "func (i32, i32) -> (i32)", "global mut i32", "memory 1.. pages"
    limits: tuple[int, int | None, int] = (0, None, 0)  # memory/table: min, max, flags


def _limits(data: bytes, pos: int) -> tuple[tuple[int, int | None, int], int]:
    flags = data[pos]
    lo, pos = _leb(data, pos + 1)
    hi = None
    if flags & 1:
        hi, pos = _leb(data, pos)
    return (lo, hi, flags), pos


def _functype(data: bytes, pos: int) -> tuple[str, int]:
    if data[pos] != 0x60:
        raise WasmFormatError(f"type 0x{data[pos]:02x} is not a function type")
    pos += 1
    parts = []
    for _ in range(2):
        n, pos = _leb(data, pos)
        parts.append(", ".join(_VALTYPES.get(b, f"0x{b:02x}") for b in data[pos:pos + n]))
        pos += n
    return f"func ({parts[0]}) -> ({parts[1]})", pos


def _mem_type(lim: tuple[int, int | None, int]) -> str:
    lo, hi, flags = lim
    extra = (" shared" if flags & 2 else "") + (" 64-bit" if flags & 4 else "")
    return f"memory {lo}..{'' if hi is None else hi} pages{extra}"


def interface(data: bytes) -> tuple[list[Extern], list[Extern]]:
    """The imports and exports of a (validated) module, read from its binary."""
    types: list[str] = []
    imports: list[Extern] = []
    func_types: list[str] = []  # the function index space: imported functions first
    exports: list[Extern] = []
    for sid, pos, _end in sections(data):
        if sid == 1:
            n, pos = _leb(data, pos)
            for _ in range(n):
                t, pos = _functype(data, pos)
                types.append(t)
        elif sid == 2:
            n, pos = _leb(data, pos)
            for _ in range(n):
                mod, pos = _name(data, pos)
                name, pos = _name(data, pos)
                kind = data[pos]
                pos += 1
                if kind == 0:
                    idx, pos = _leb(data, pos)
                    imports.append(Extern(mod, name, "func", types[idx]))
                    func_types.append(types[idx])
                elif kind == 1:
                    ref = _VALTYPES.get(data[pos], "?")
                    lim, pos = _limits(data, pos + 1)
                    imports.append(Extern(mod, name, "table", f"table {ref}", lim))
                elif kind == 2:
                    lim, pos = _limits(data, pos)
                    imports.append(Extern(mod, name, "memory", _mem_type(lim), lim))
                elif kind == 3:
                    vt, mut = _VALTYPES.get(data[pos], "?"), data[pos + 1]
                    pos += 2
                    imports.append(Extern(mod, name, "global", f"global {'mut ' if mut else ''}{vt}"))
                else:
                    raise WasmFormatError(f"import {mod}.{name} has unsupported kind {kind}")
        elif sid == 3:
            n, pos = _leb(data, pos)
            for _ in range(n):
                idx, pos = _leb(data, pos)
                func_types.append(types[idx])
        elif sid == 7:
            n, pos = _leb(data, pos)
            for _ in range(n):
                name, pos = _name(data, pos)
                kind = data[pos]
                idx, pos = _leb(data, pos + 1)
                kname = ("func", "table", "memory", "global", "tag")[kind] if kind < 5 else "?"
                exports.append(Extern("", name, kname, func_types[idx] if kind == 0 else kname))
    return imports, exports
