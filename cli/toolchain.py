"""`npa build`: plugin sources to position-independent wasm images, reproducibly.

The compiler is clang as shipped inside the `ziglang` wheel (`python -m ziglang cc`), so the
exact compiler version is pinned with the Python dependencies and every machine builds the same
bytes. Sources are compiled from inside their directory with relative paths and without debug
info, so the image does not depend on where the tree lives.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from runtime.errors import NpaError
from runtime.loader import analyse
from runtime.wasm import with_custom_section
from shell_api import MANIFEST_SECTION, Manifest, PluginToml

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
    """A build that failed; `diagnostics` holds the compiler's own output."""

    def __init__(self, message: str, diagnostics: str = ""):
        super().__init__(message)
        self.diagnostics = diagnostics


@dataclass(frozen=True)
class Built:
    name: str
    path: Path
    size: int
    manifest: Manifest


def compiler() -> list[str]:
    return [sys.executable, "-m", "ziglang", "cc"]


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


def compile_image(src: Path) -> tuple[bytes, Manifest]:
    """Compile one plugin directory to image bytes with the manifest section embedded."""
    toml = PluginToml.load(src / MANIFEST_FILE)
    if toml.name != src.name:
        raise BuildError(f"{src / MANIFEST_FILE}: field 'name': {toml.name!r} must equal the "
                         f"directory name {src.name!r}")
    sources = sorted(p.name for p in src.glob("*.c"))
    if not sources:
        raise BuildError(f"{src}: no C sources (*.c)")
    manifest = toml.to_manifest()
    with tempfile.TemporaryDirectory(prefix="npa-build-") as tmp:
        out = Path(tmp) / f"{toml.name}.wasm"
        cmd = [*compiler(), *CFLAGS, "-I", str(INCLUDE_DIR), *toml.cflags, "-o", str(out), *sources]
        proc = subprocess.run(cmd, cwd=src, capture_output=True, text=True)
        diagnostics = "\n".join(ln for ln in proc.stderr.splitlines() if _NOISE not in ln)
        if proc.returncode != 0:
            raise BuildError(f"{src}: compilation failed", diagnostics)
        image = with_custom_section(out.read_bytes(), MANIFEST_SECTION, manifest.encode())
    return image, manifest


def build(src: Path, out_dir: Path) -> Built:
    """Build `src` into `out_dir/<name>.wasm`, refusing an image the loader would refuse."""
    image, manifest = compile_image(src)
    report = analyse(image, use_cache=False)
    if report.error is not None:
        raise BuildError(f"{src}: built, but the loader refuses it: {report.error}")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{manifest.name}.wasm"
    path.write_bytes(image)
    return Built(manifest.name, path, len(image), manifest)
