"""The loader: refuses what the Shell API does not allow, places the rest where it is told.

Checks, in this order, each failing with one line that names the cause: valid wasm within the
loader's limits (`shell_api.limits`, read from the bytes before any compiler runs); manifest
present and decodable; ABI compatible; imports; exports; position independence (`dylink.0`
well-formed, every data segment inside the memory it declares); then, for a given base, that
the image and its stack fit the hypervisor's plugin slot.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import wasmtime

from npa.shell_api import ABI_MAJOR, ABI_MINOR, LIMIT, MANIFEST_SECTION, Manifest, ManifestError, abi_compatible
from npa.shell_api.abi import (
    EXPORT_PREFIX,
    EXPORTS,
    EXPORTS_BY_NAME,
    IMPORT_MODULE,
    IMPORTS_BY_NAME,
    OPTIONAL_BY_NAME,
    PIC_IMPORTS,
)

from . import wasm
from .engine import compile_module, engine
from .errors import LoadError, cause
from .memory import WASM_PAGE

CHECKS = ("wasm", "manifest", "abi", "imports", "exports", "pic", "fit")  # in the order run
MAX_IMAGE_BYTES = LIMIT["image_bytes"]
TABLE_BASE = 1  # keep table slot 0 empty, so a null function pointer traps


@dataclass
class ImportRow:
    module: str
    name: str
    kind: str
    allowed: bool
    note: str = ""


@dataclass
class ExportRow:
    name: str
    kind: str
    role: str  # required | optional | ignored | refused
    note: str = ""


@dataclass
class ImageReport:
    """Everything the static checks learned about an image, and the first check it failed."""

    size: int
    manifest: Manifest | None = None
    imports: list[ImportRow] = field(default_factory=list)
    exports: list[ExportRow] = field(default_factory=list)
    dylink: wasm.DylinkInfo | None = None
    memory_import: wasm.Extern | None = None
    shape: wasm.Shape | None = None
    error: LoadError | None = None
    module: wasmtime.Module | None = None
    cached: bool = False
    compile_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


def _func_kind(spec) -> str:
    return f"func ({', '.join(spec.wasm_params)}) -> ({', '.join(spec.wasm_results)})"


def _check_import(imp: wasm.Extern) -> ImportRow:
    kind = imp.type
    if imp.module == IMPORT_MODULE:
        spec = IMPORTS_BY_NAME.get(imp.name)
        if spec is None:
            return ImportRow(imp.module, imp.name, kind, False, "not in the Shell API")
        if kind != _func_kind(spec):
            return ImportRow(imp.module, imp.name, kind, False,
                             f"wrong signature: the Shell API says func {spec.wasm_signature()}")
        return ImportRow(imp.module, imp.name, kind, True)
    if imp.module == "env" and imp.name in PIC_IMPORTS:
        want = PIC_IMPORTS[imp.name][0]
        if imp.kind == "memory" and want == "memory":
            if imp.limits[2] & ~1:  # flag bits beyond "has max": shared, 64-bit
                return ImportRow(imp.module, imp.name, kind, False,
                                 "must be a 32-bit unshared memory")
        elif kind != want:
            return ImportRow(imp.module, imp.name, kind, False, f"must be {want}")
        return ImportRow(imp.module, imp.name, kind, True)
    if imp.module.startswith("GOT."):
        return ImportRow(imp.module, imp.name, kind, False,
                         "symbol resolved through the GOT: build with -fvisibility=hidden")
    return ImportRow(imp.module, imp.name, kind, False,
                     f"only module '{IMPORT_MODULE}' (the Shell API) and env PIC imports are allowed")


def _check_export(exp: wasm.Extern) -> ExportRow:
    kind = exp.type
    spec = EXPORTS_BY_NAME.get(exp.name) or OPTIONAL_BY_NAME.get(exp.name)
    role = "required" if exp.name in EXPORTS_BY_NAME else "optional"
    if spec is not None:
        if kind != _func_kind(spec):
            return ExportRow(exp.name, kind, "refused",
                             f"wrong signature: the Shell API says func {spec.wasm_signature()}")
        return ExportRow(exp.name, kind, role)
    if exp.name.startswith(EXPORT_PREFIX):
        return ExportRow(exp.name, kind, "refused", f"unknown {EXPORT_PREFIX}* export in ABI "
                         f"{ABI_MAJOR}.{ABI_MINOR}")
    return ExportRow(exp.name, kind, "ignored")


def read_manifest(image: bytes) -> Manifest:
    """The manifest alone, without validating or compiling the module; LoadError ('wasm' or
    'manifest') when it cannot be read."""
    try:
        payload = wasm.custom_sections(image).get(MANIFEST_SECTION)
    except wasm.WasmFormatError as e:
        raise LoadError("wasm", f"invalid wasm: {cause(e)}") from None
    if payload is None:
        raise LoadError("manifest", f"no {MANIFEST_SECTION} section: not an NPA plugin "
                        "(images are made by `npa build`)")
    try:
        return Manifest.decode(payload)
    except ManifestError as e:
        raise LoadError("manifest", str(e)) from None


def measures(rep: ImageReport) -> dict[str, int]:
    """What the image measures against each loader limit it has been read far enough for."""
    out = {"image_bytes": rep.size}
    if (s := rep.shape) is not None:
        out.update(types=s.types, functions=s.functions, code_bytes=s.code_bytes,
                   body_bytes=s.largest_body, locals=s.most_locals, total_locals=s.total_locals,
                   nesting=s.deepest_nesting,
                   globals=s.globals, table_entries=max(s.tables, default=0),
                   data_segments=len(s.data), element_segments=s.element_segments)
    if (d := rep.dylink) is not None:
        out.update(memory_align=d.memory_align, table_align=d.table_align,
                   table_entries=max(out.get("table_entries", 0), d.table_size))
    return out


def _over_limits(rep: ImageReport) -> str | None:
    """The first loader limit the image's code breaks, as one line; None when within all."""
    for name, n in measures(rep).items():
        if n > LIMIT[name]:
            return f"exceeds the loader's limit on {name.replace('_', ' ')}: {n}, at most {LIMIT[name]}"
    return None


def _dylink_lies(d: wasm.DylinkInfo, shape: wasm.Shape) -> str | None:
    """What `dylink.0` declares against what the image does: alignments and table size within
    the limits, and every data segment inside the memory it declares, placed relative to
    `env.__memory_base` (an absolute offset would write wherever it names at injection)."""
    for name, value in (("memory_align", d.memory_align), ("table_align", d.table_align),
                        ("table_entries", d.table_size)):
        if value > LIMIT[name]:
            return f"dylink.0 asks for {name.replace('_', ' ')} {value}; at most {LIMIT[name]}"
    base = (shape.imported_globals.index("__memory_base")
            if "__memory_base" in shape.imported_globals else None)
    for i, seg in enumerate(shape.data):
        if seg.active and (seg.base_global is None or seg.base_global != base):
            return (f"data segment {i} is placed at an absolute offset, not relative to "
                    "env.__memory_base: not position-independent")
        start = seg.offset if seg.active else 0
        if seg.size > d.memory_size or start > d.memory_size - seg.size:
            return (f"data segment {i} ([{start}, +{seg.size})) lies outside the "
                    f"{d.memory_size} bytes dylink.0 declares")
    return None


def analyse(image: bytes, use_cache: bool = True) -> ImageReport:
    """Run the static checks; stops at the first failure, recording it in `error`."""
    rep = ImageReport(size=len(image))

    def fail(check: str, msg: str) -> ImageReport:
        rep.error = LoadError(check, msg)
        return rep

    if len(image) > MAX_IMAGE_BYTES:
        return fail("wasm", f"image is {len(image)} bytes, more than the {MAX_IMAGE_BYTES} allowed")
    if image[:4] != wasm.MAGIC[:4]:
        return fail("wasm", "not a wasm module (no \\0asm magic)")
    try:
        rep.shape = wasm.shape(image)
    except wasm.WasmFormatError as e:
        return fail("wasm", f"invalid wasm: {e}")
    if (over := _over_limits(rep)) is not None:
        return fail("wasm", over)
    try:
        wasmtime.Module.validate(engine(), image)
    except wasmtime.WasmtimeError as e:
        return fail("wasm", f"invalid wasm: {cause(e)}")
    try:
        m = rep.manifest = read_manifest(image)
    except LoadError as e:
        rep.error = e
        return rep
    if not abi_compatible(m.abi_major, m.abi_minor):
        return fail("abi", f"built for ABI {m.abi_major}.{m.abi_minor}; this runtime implements "
                    f"{ABI_MAJOR}.{ABI_MINOR} (major must be {ABI_MAJOR}, minor at most {ABI_MINOR})")

    imports, exports = wasm.interface(image)
    rep.memory_import = next((i for i in imports if i.kind == "memory"), None)
    rep.imports = [_check_import(i) for i in imports]
    rep.exports = [_check_export(e) for e in exports]
    for row in rep.imports:
        if not row.allowed:
            what = "forbidden import" if "wrong signature" not in row.note else "import"
            return fail("imports", f"{what} {row.module}.{row.name} ({row.kind}): {row.note}")
    for row in rep.exports:
        if row.role == "refused":
            return fail("exports", f"export {row.name} ({row.kind}): {row.note}")
    present = {e.name for e in rep.exports}
    for spec in EXPORTS:
        if spec.name not in present:
            return fail("exports", f"missing export {spec.name}: func {spec.wasm_signature()}")

    try:
        rep.dylink = wasm.dylink_info(image)
    except wasm.WasmFormatError as e:
        return fail("pic", f"dylink.0: {e}")
    if rep.dylink is None:
        return fail("pic", "not position-independent: no dylink.0 section first "
                    "(build with -fPIC -shared)")
    if rep.dylink.needed:
        return fail("pic", f"needs shared libraries {', '.join(rep.dylink.needed)}; "
                    "a plugin must be self-contained")
    if (lie := _dylink_lies(rep.dylink, rep.shape)) is not None:
        return fail("pic", lie)
    if any(sid == 5 for sid, _, _ in wasm.sections(image)):
        return fail("pic", "defines its own memory; a plugin must import env.memory")

    t0 = time.perf_counter()
    try:
        rep.module, rep.cached = compile_module(image, use_cache)
    except wasmtime.WasmtimeError as e:
        return fail("wasm", f"does not compile: {cause(e)}")
    rep.compile_s = time.perf_counter() - t0
    return rep


@dataclass(frozen=True)
class Placement:
    """Where an image lands: its data, its table slots and its stack."""

    memory_base: int
    table_base: int
    table_size: int
    stack_low: int
    stack_top: int


def place(rep: ImageReport, base: int, slot: int, stack_size: int, region_size: int) -> Placement:
    """Check that the image fits the plugin slot at `base`; raise LoadError naming why not."""
    d = rep.dylink
    assert d is not None and rep.module is not None
    align = 1 << d.memory_align
    if base % align:
        raise LoadError("fit", f"base 0x{base:x} is not aligned to the image's 2^{d.memory_align}")
    stack_low = (base + d.memory_size + 15) & ~15
    need = stack_low + stack_size - base
    if need > slot or base + slot > region_size:
        raise LoadError("fit", f"image needs {d.memory_size} bytes + {stack_size} stack = "
                        f"{need} bytes at base 0x{base:x}; the plugin slot holds {slot}")
    pages = region_size // WASM_PAGE
    if rep.memory_import is not None:
        lo, hi, _ = rep.memory_import.limits
        if lo > pages or (hi is not None and hi < pages):
            raise LoadError("fit", f"env.memory wants {lo}..{'' if hi is None else hi} pages; "
                            f"the region is {pages} pages")
    return Placement(base, TABLE_BASE, d.table_size, stack_low, stack_low + stack_size)
