"""Just enough of the wasm binary format: sections, custom sections, the `dylink.0` record, the
interface, and the shape of the code (counts, sizes, nesting) that the loader bounds before it
lets a compiler near an image.

Every read is bounds-checked: a malformed image raises `WasmFormatError` naming what is wrong,
never another exception.
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
    """The `dylink.0` memory info of a position-independent module, None when it has none;
    WasmFormatError naming the field for a record that is truncated or overruns."""
    try:
        return _dylink_info(data)
    except IndexError:
        raise WasmFormatError("truncated record") from None


def _dylink_info(data: bytes) -> DylinkInfo | None:
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
        if sub_end > end:
            raise WasmFormatError(f"subsection {kind} runs past the section")
        if kind == _MEM_INFO:
            vals = []
            for field in ("memory size", "memory alignment", "table size", "table alignment"):
                v, pos = _leb(data, pos)
                if pos > sub_end:
                    raise WasmFormatError(f"{field} runs past its subsection")
                vals.append(v)
            mem = tuple(vals)
        elif kind == _NEEDED:
            count, pos = _leb(data, pos)
            for _ in range(count):
                lib, pos = _name(data, pos)
                if pos > sub_end:
                    raise WasmFormatError("a needed library's name runs past its subsection")
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


def _imports(data: bytes, pos: int) -> list[tuple[str, str, int, object]]:
    """The import section's entries: (module, name, kind, what it describes: a type index, a
    table's (reftype, limits), a memory's limits, a global's (valtype, mutable))."""
    n, pos = _leb(data, pos)
    out = []
    for _ in range(n):
        mod, pos = _name(data, pos)
        name, pos = _name(data, pos)
        kind, pos = data[pos], pos + 1
        if kind == 0:
            desc, pos = _leb(data, pos)
        elif kind == 1:
            lim, end = _limits(data, pos + 1)
            desc, pos = (data[pos], lim), end
        elif kind == 2:
            desc, pos = _limits(data, pos)
        elif kind == 3:
            desc, pos = (data[pos], data[pos + 1]), pos + 2
        else:
            raise WasmFormatError(f"import {mod}.{name} has unsupported kind {kind}")
        out.append((mod, name, kind, desc))
    return out


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
            for mod, name, kind, desc in _imports(data, pos):
                if kind == 0:
                    imports.append(Extern(mod, name, "func", types[desc]))
                    func_types.append(types[desc])
                elif kind == 1:
                    ref, lim = desc
                    imports.append(Extern(mod, name, "table", f"table {_VALTYPES.get(ref, '?')}", lim))
                elif kind == 2:
                    imports.append(Extern(mod, name, "memory", _mem_type(desc), desc))
                else:
                    vt, mut = desc
                    imports.append(Extern(mod, name, "global", f"global {'mut ' if mut else ''}{_VALTYPES.get(vt, '?')}"))
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


# -- the shape of the code: what the loader bounds before compiling -----------------------------
@dataclass(frozen=True)
class DataSegment:
    active: bool
    base_global: int | None  # active: the global its offset is read from (None: a constant)
    offset: int  # active: the constant offset (added to the global's value, if any)
    size: int


@dataclass(frozen=True)
class Shape:
    types: int = 0
    functions: int = 0  # defined here, imports not counted
    code_bytes: int = 0
    largest_body: int = 0
    most_locals: int = 0
    total_locals: int = 0
    deepest_nesting: int = 0
    memory_grows: int = 0  # memory.grow instructions (always -1 here: the memory is fixed)
    tables: tuple[int, ...] = ()  # the minimum size of every table it defines
    globals: int = 0
    imported_globals: tuple[str, ...] = ()  # names, in global index order
    data: tuple[DataSegment, ...] = ()
    element_segments: int = 0


# Immediates of the instructions a plugin may use (MVP, sign extension, saturating truncation,
# bulk memory, reference types, multi-value). Anything else is refused by name: the engine runs
# with SIMD, threads, tail calls, exceptions and GC off, so no valid plugin uses them.
_NO_IMM = set(range(0x45, 0xC5)) | {0x00, 0x01, 0x05, 0x0F, 0x1A, 0x1B, 0xD1}
_ONE_LEB = {0x0C, 0x0D, 0x10, 0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x3F, 0x40, 0xD2}
_MEMARG = set(range(0x28, 0x3F))
_FC_IMMS = {**{k: 0 for k in range(8)}, 8: 2, 9: 1, 10: 2, 11: 1, 12: 2, 13: 1, 14: 2, 15: 1,
            16: 1, 17: 1}


def _skip_leb(data: bytes, pos: int, max_bytes: int) -> int:
    for i in range(max_bytes):
        if pos + i >= len(data):
            raise WasmFormatError("truncated LEB128")
        if not data[pos + i] & 0x80:
            return pos + i + 1
    raise WasmFormatError("LEB128 too long")


def _sleb(data: bytes, pos: int, max_bytes: int) -> tuple[int, int]:
    end = _skip_leb(data, pos, max_bytes)
    value = 0
    for i, b in enumerate(data[pos:end]):
        value |= (b & 0x7F) << (7 * i)
    if data[end - 1] & 0x40:
        value -= 1 << (7 * (end - pos))
    return value, end


def _blocktype(data: bytes, pos: int) -> int:
    b = data[pos]
    if b == 0x40 or b in _VALTYPES:
        return pos + 1
    return _skip_leb(data, pos, 5)  # a type index (s33)


def _body_nesting(data: bytes, pos: int, end: int, func: int) -> tuple[int, int]:
    """The deepest block nesting of one function body's instructions (the body itself is 1),
    and how many memory.grow instructions it holds."""
    depth = deepest = 1
    grows = 0
    while pos < end:
        op = data[pos]
        pos += 1
        if op in _NO_IMM:
            continue
        if op in (0x02, 0x03, 0x04):
            depth += 1
            deepest = max(deepest, depth)
            pos = _blocktype(data, pos)
        elif op == 0x0B:
            depth -= 1
            if depth == 0:
                if pos != end:
                    raise WasmFormatError(f"function {func}: code after its final end")
                return deepest, grows
        elif op in _ONE_LEB:
            grows += op == 0x40
            pos = _skip_leb(data, pos, 5)
        elif op in _MEMARG:
            pos = _skip_leb(data, _skip_leb(data, pos, 5), 10)
        elif op == 0x0E:
            n, pos = _leb(data, pos)
            if n > end - pos:
                raise WasmFormatError(f"function {func}: br_table longer than its body")
            for _ in range(n + 1):
                pos = _skip_leb(data, pos, 5)
        elif op == 0x11:
            pos = _skip_leb(data, _skip_leb(data, pos, 5), 5)
        elif op == 0x1C:
            n, pos = _leb(data, pos)
            pos += n
        elif op == 0x41:
            pos = _skip_leb(data, pos, 5)
        elif op == 0x42:
            pos = _skip_leb(data, pos, 10)
        elif op == 0x43:
            pos += 4
        elif op == 0x44:
            pos += 8
        elif op == 0xD0:
            pos += 1
        elif op == 0xFC:
            sub, pos = _leb(data, pos)
            if sub not in _FC_IMMS:
                raise WasmFormatError(f"function {func}: instruction 0xfc {sub} is not allowed")
            for _ in range(_FC_IMMS[sub]):
                pos = _skip_leb(data, pos, 5)
        else:
            raise WasmFormatError(f"function {func}: instruction 0x{op:02x} is not allowed "
                                  "(SIMD, atomics, tail calls, exceptions and GC are off)")
    raise WasmFormatError(f"function {func}: body runs past its end")


def _const_expr(data: bytes, pos: int) -> tuple[int | None, int, int]:
    """An offset expression (`global.get`, `i32.const`, and the extended-const `i32.add` that
    PIC code uses for `__memory_base + k`): (global index or None, constant, position after)."""
    stack: list[tuple[int | None, int]] = []
    while (op := data[pos]) != 0x0B:
        if op == 0x41:
            value, pos = _sleb(data, pos + 1, 5)
            stack.append((None, value))
        elif op == 0x23:
            glob, pos = _leb(data, pos + 1)
            stack.append((glob, 0))
        elif op == 0x6A and len(stack) >= 2:
            (g1, v1), (g2, v2) = stack.pop(), stack.pop()
            if g1 is not None and g2 is not None:
                raise WasmFormatError("offset expression adds two globals")
            stack.append((g1 if g1 is not None else g2, (v1 + v2) & 0xFFFFFFFF))
            pos += 1
        else:
            raise WasmFormatError(f"offset expression uses 0x{op:02x}: only global.get, i32.const "
                                  "and i32.add are allowed")
        if len(stack) > 2:
            raise WasmFormatError("offset expression is too deep")
    if len(stack) != 1:
        raise WasmFormatError("offset expression does not leave one value")
    glob, value = stack[0]
    return glob, value, pos + 1


def shape(data: bytes) -> Shape:
    """Counts, sizes and nesting of a module, from its binary alone (no validation, no
    compilation); WasmFormatError for anything it cannot read."""
    try:
        return _shape(data)
    except IndexError:
        raise WasmFormatError("truncated section") from None


def _shape(data: bytes) -> Shape:
    out: dict = {"tables": [], "data": [], "imported_globals": []}
    for sid, pos, end in sections(data):
        if sid == 1:
            out["types"], _ = _leb(data, pos)
        elif sid == 2:
            out["imported_globals"] = [name for _, name, kind, _ in _imports(data, pos) if kind == 3]
        elif sid == 4:
            n, pos = _leb(data, pos)
            for _ in range(n):
                (lo, _hi, _flags), pos = _limits(data, pos + 1)
                out["tables"].append(lo)
        elif sid == 6:
            out["globals"], _ = _leb(data, pos)
        elif sid == 9:
            out["element_segments"], _ = _leb(data, pos)
        elif sid == 10:
            n, pos = _leb(data, pos)
            out["functions"] = n
            out["code_bytes"] = end - pos
            largest = most_locals = deepest = total_locals = grows = 0
            for f in range(n):
                size, pos = _leb(data, pos)
                body_end = pos + size
                if body_end > end:
                    raise WasmFormatError(f"function {f}: body runs past the code section")
                largest = max(largest, size)
                groups, pos = _leb(data, pos)
                if groups > size:
                    raise WasmFormatError(f"function {f}: more local groups than bytes")
                locals_ = 0
                for _ in range(groups):
                    count, pos = _leb(data, pos)
                    locals_ += count
                    pos += 1
                most_locals = max(most_locals, locals_)
                total_locals += locals_
                depth, g = _body_nesting(data, pos, body_end, f)
                deepest, grows = max(deepest, depth), grows + g
                pos = body_end
            out.update(largest_body=largest, most_locals=most_locals, total_locals=total_locals,
                       deepest_nesting=deepest, memory_grows=grows)
        elif sid == 11:
            n, pos = _leb(data, pos)
            for i in range(n):
                flags, pos = _leb(data, pos)
                if flags == 1:
                    size, pos = _leb(data, pos)
                    out["data"].append(DataSegment(False, None, 0, size))
                elif flags in (0, 2):
                    if flags == 2:
                        _mem, pos = _leb(data, pos)
                    glob, value, pos = _const_expr(data, pos)
                    size, pos = _leb(data, pos)
                    out["data"].append(DataSegment(True, glob, value, size))
                else:
                    raise WasmFormatError(f"data segment {i}: unknown kind {flags}")
                if size > end - pos:
                    raise WasmFormatError(f"data segment {i}: {size} bytes run past the section")
                pos += size
    return Shape(types=out.get("types", 0), functions=out.get("functions", 0),
                 code_bytes=out.get("code_bytes", 0), largest_body=out.get("largest_body", 0),
                 most_locals=out.get("most_locals", 0), total_locals=out.get("total_locals", 0),
                 deepest_nesting=out.get("deepest_nesting", 0), memory_grows=out.get("memory_grows", 0),
                 tables=tuple(out["tables"]), globals=out.get("globals", 0),
                 imported_globals=tuple(out["imported_globals"]), data=tuple(out["data"]),
                 element_segments=out.get("element_segments", 0))
