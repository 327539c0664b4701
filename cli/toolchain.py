"""`npa build`: plugin sources to position-independent wasm images, reproducibly.

The compilers are those inside the `ziglang` wheel: clang (`python -m ziglang cc`) for C and
zig itself for Zig, so the exact compiler version is pinned with the Python dependencies and
every machine builds the same bytes. Sources are compiled from inside their directory with relative paths and without debug
info, so the image does not depend on where the tree lives.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from npa.runtime.sandbox import NpaError, analyse
from npa.runtime.sandbox.wasm import with_custom_section
from npa.shell_api import MANIFEST_SECTION, Manifest, ManifestError, PluginToml

INCLUDE_DIR = Path(__file__).resolve().parent.parent / "shell_api" / "include"
MANIFEST_FILE = "plugin.toml"
CFLAGS = (
    "-target", "wasm32-freestanding", "-O2", "-g0",
    "-fPIC", "-shared", "-nostdlib", "-fvisibility=hidden",
    "-std=c11", "-Wall", "-Werror=implicit-function-declaration",
    "-Wl,--import-memory", "-Wl,--no-entry",
)
_NOISE = "creating shared libraries, with -shared, is not yet stable"


class BuildError(NpaError):
    """A build the compiler or the loader refused (a verdict on the sources); `diagnostics`
    holds the compiler's own output. Errors in the plugin's directory or manifest are not
    BuildErrors: they are the input's."""

    def __init__(self, message: str, diagnostics: str = ""):
        super().__init__(message)
        self.diagnostics = diagnostics


@dataclass(frozen=True)
class Built:
    name: str
    path: Path
    size: int
    manifest: Manifest


def zig() -> list[str]:
    return [sys.executable, "-m", "ziglang"]


def compiler() -> list[str]:
    """The C compiler (and the linker of every image): clang as zig ships it."""
    return [*zig(), "cc"]


def plugin_dirs(src_root: Path) -> list[Path]:
    """Every plugin source directory (one holding a plugin.toml) under `src_root`, sorted."""
    return sorted(p.parent for p in src_root.glob(f"*/{MANIFEST_FILE}"))


def resolve(arg: str, src_root: Path) -> Path:
    """A plugin given as a directory, or as a name under `src_root`."""
    p = Path(arg)
    for cand in (p, src_root / arg):
        if (cand / MANIFEST_FILE).is_file():
            return cand
    raise BuildError(f"{arg}: no {MANIFEST_FILE} there or in {src_root / arg}")


ZIG_FLAGS = ("-target", "wasm32-freestanding", "-O", "ReleaseFast", "-fPIC", "-fstrip",
             "-fsingle-threaded")


def _run(cmd: list[str], cwd: Path, what: str) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        diagnostics = "\n".join(ln for ln in proc.stderr.splitlines() if _NOISE not in ln)
        raise BuildError(f"{cwd}: {what} failed", diagnostics)


def _zig_object(src: Path, name: str, sources: list[str], out: Path) -> Path:
    """Compile the Zig root file (`<name>.zig`, or the only .zig) to a PIC object; the Shell API
    is the module `npa` (`const npa = @import("npa");`)."""
    root = f"{name}.zig" if f"{name}.zig" in sources else (sources[0] if len(sources) == 1 else None)
    if root is None:
        raise NpaError(f"{src}: several .zig files and none is {name}.zig (the root file)")
    obj = out.with_suffix(".zig.o")
    _run([*zig(), "build-obj", *ZIG_FLAGS, "--dep", "npa", f"-Mroot={root}",
          f"-Mnpa={INCLUDE_DIR / 'npa_shell.zig'}", f"-femit-bin={obj}"], src, "zig compilation")
    return obj


def compile_image(src: Path) -> tuple[bytes, Manifest]:
    """Compile one plugin directory (C and/or Zig sources) to image bytes with the manifest
    section embedded. The compiler is picked by the sources: `.zig` files go through
    `zig build-obj`, `.c` files through clang; both link with wasm-ld as a PIC module."""
    toml = PluginToml.load(src / MANIFEST_FILE)
    if toml.name != src.name:
        raise ManifestError(f"{src / MANIFEST_FILE}: field 'name': {toml.name!r} must equal the "
                            f"directory name {src.name!r}")
    c_sources = sorted(p.name for p in src.glob("*.c"))
    zig_sources = sorted(p.name for p in src.glob("*.zig"))
    if not c_sources and not zig_sources:
        raise NpaError(f"{src}: no sources (*.c or *.zig)")
    manifest = toml.to_manifest()
    with tempfile.TemporaryDirectory(prefix="npa-build-") as tmp:
        out = Path(tmp) / f"{toml.name}.wasm"
        objects = [str(_zig_object(src, toml.name, zig_sources, out))] if zig_sources else []
        _run([*compiler(), *CFLAGS, "-I", str(INCLUDE_DIR), *toml.cflags, "-o", str(out),
              *c_sources, *objects], src, "compilation" if c_sources else "linking")
        image = with_custom_section(out.read_bytes(), MANIFEST_SECTION, manifest.encode())
    return image, manifest


def build(src: Path, out_dir: Path) -> Built:
    """Build `src` into `out_dir/<name>.wasm`, refusing an image the loader would refuse."""
    image, manifest = compile_image(src)
    report = analyse(image, use_cache=False)
    if report.error is not None:
        raise BuildError(f"{src}: built, but the loader refuses it: {report.error}")
    out_dir.mkdir(exist_ok=True)  # the directory the user named, never its parents
    path = out_dir / f"{manifest.name}.wasm"
    path.write_bytes(image)
    return Built(manifest.name, path, len(image), manifest)
