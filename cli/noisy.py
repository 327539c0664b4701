"""A greedy plugin for `npa bench noisy`: the real ixgbevf driver, built from its source, that
burns a fixed number of instructions (fuel) or of register reads (wall time, little fuel) on
every poll after doing its work, so that a benchmark can show what fair shares of the host leave
to its neighbours."""
from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from npa.runtime.sandbox import NpaError
from npa.runtime.sandbox.wasm import with_custom_section
from npa.shell_api import MANIFEST_SECTION, PluginToml

from . import toolchain

SOURCE = """
#include "ixgbevf_wrapped.h"
NPA_EXPORT(npa_init) int32_t npa_init(uint32_t cfg) { return real_init(cfg); }
NPA_EXPORT(npa_poll) int32_t npa_poll(uint32_t q, uint32_t budget) {
    int32_t work = real_poll(q, budget);
    for (volatile uint32_t spin = 0; spin < SPIN; spin++) {}
    for (uint32_t i = 0; i < MMIO; i++) (void)shell_mmio_read32(0x1010); /* cheap in fuel, not in time */
    return work;
}
NPA_EXPORT(npa_intr) uint32_t npa_intr(uint32_t v) { return real_intr(v); }
NPA_EXPORT(npa_quiesce) int32_t npa_quiesce(void) { return real_quiesce(); }
NPA_EXPORT(npa_reset) int32_t npa_reset(void) { return real_reset(); }
"""


def greedy_image(src_root: Path, spin: int, mmio: int = 0) -> bytes:
    """ixgbevf from `src_root`/ixgbevf, spinning `spin` loop rounds and making `mmio` register
    reads per poll."""
    src = src_root / "ixgbevf"
    if not (src / "ixgbevf.c").exists():
        raise NpaError(f"{src}: no ixgbevf source to build the greedy plugin from (--src)")
    with tempfile.TemporaryDirectory() as tmp:
        c, out = Path(tmp) / "greedy.c", Path(tmp) / "greedy.wasm"
        c.write_text(SOURCE)
        cmd = [*toolchain.compiler(), *toolchain.CFLAGS, "-I", str(toolchain.INCLUDE_DIR),
               "-I", str(src), f"-DSPIN={spin}u", f"-DMMIO={mmio}u", "-o", str(out), str(c)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            raise NpaError(f"building the greedy plugin failed: {proc.stderr.strip()[-300:]}")
        man = PluginToml.load(src / toolchain.MANIFEST_FILE).to_manifest()
        return with_custom_section(out.read_bytes(), MANIFEST_SECTION, man.encode())
