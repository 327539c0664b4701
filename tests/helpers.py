"""Hand-made plugin images for negative tests: WAT, plus the sections `npa build` would add."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import wasmtime

from npa.cli import toolchain
from npa.runtime.sandbox.wasm import DYLINK, dylink_section, with_custom_section
from npa.shell_api import MANIFEST_SECTION, Manifest

ROOT = Path(__file__).resolve().parent.parent
NULLVF = ROOT / "plugins-wasm" / "nullvf.wasm"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
IXGBEVF = dict(devices=[{"vendor": 0x8086, "device": 0x10ED}], features=1)

EXPORTS = {
    "npa_init": "(param i32) (result i32) i32.const 0",
    "npa_poll": "(param i32 i32) (result i32) i32.const 0",
    "npa_intr": "(param i32) (result i32) i32.const 0",
    "npa_quiesce": "(result i32) i32.const 0",
    "npa_reset": "(result i32) i32.const 0",
}
BASE_IMPORTS = ['(import "env" "memory" (memory 1))',
                '(import "env" "__memory_base" (global i32))',
                '(import "shell" "mmio_write32" (func (param i32 i32)))']


def manifest(**over) -> Manifest:
    fields = dict(abi_major=1, abi_minor=0, name="fixture", version="0.0.1",
                  devices=[{"vendor": 0x1B36, "device": 0x00F0}])
    fields.update(over)
    return Manifest(**fields)


def wat_plugin(*, imports=None, exports=None, extra="", pic=True, memory_size=64,
               man: Manifest | None = None, with_manifest=True) -> bytes:
    """A plugin image from WAT: by default a valid do-nothing plugin; override one part."""
    exports = dict(EXPORTS, **(exports or {}))
    body = "\n".join(f'(func (export "{n}") {b})' for n, b in exports.items() if b is not None)
    wat = "(module\n" + "\n".join(BASE_IMPORTS if imports is None else imports) + "\n" + body + "\n" + extra + ")"
    image = bytes(wasmtime.wat2wasm(wat))
    if pic:
        image = with_custom_section(image, DYLINK, dylink_section(memory_size), first=True)
    if with_manifest:
        image = with_custom_section(image, MANIFEST_SECTION, (man or manifest()).encode())
    return image


def npa(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Run the real `npa` command line in a child process."""
    return subprocess.run([sys.executable, "-c", "from npa.cli.main import main; main()", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=120)


def build_broken(tmp: Path, bugs) -> dict[str, Path]:
    """Compile C fixtures at once (in parallel), each with the ixgbevf plugin's manifest."""
    return build_variants(tmp, FIXTURES / "broken.c", "BUG", bugs)


def build_variants(tmp: Path, source: Path, macro: str, names) -> dict[str, Path]:
    """Compile one C source wrapping the ixgbevf plugin once per `-D<macro>=<name>`, in
    parallel, each with the ixgbevf plugin's manifest."""
    src = ROOT / "plugins-src" / "ixgbevf"
    procs = {}
    for bug in names:
        out = tmp / f"{bug.lower()}.raw.wasm"
        cmd = [*toolchain.compiler(), *toolchain.CFLAGS, "-I", str(toolchain.INCLUDE_DIR),
               "-I", str(src), f"-D{macro}={bug}", "-o", str(out), str(source)]
        procs[bug] = (out, subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True))
    images = {}
    for bug, (out, proc) in procs.items():
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"{bug}: {err}"
        man = manifest(name=f"broken-{bug.lower().replace('_', '-')}", **IXGBEVF)
        path = tmp / f"{bug.lower()}.wasm"
        path.write_bytes(with_custom_section(out.read_bytes(), MANIFEST_SECTION, man.encode()))
        images[bug] = path
    return images
