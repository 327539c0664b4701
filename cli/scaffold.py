"""`npa new`: a plugin skeleton for a vendor, in C or Zig, that builds and loads at once.

Every entry point that a driver must fill returns NOT_IMPLEMENTED, so the skeleton passes the
loader (and the conformance suite's static checks) from the first build, and fails the rest
of the suite, each check saying which entry point is missing.
"""
from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

from npa import shell_api

from npa.nic_model.vf import pci_id
from npa.runtime.sandbox import NpaError
from npa.shell_api import ABI_MAJOR, ABI_MINOR
from npa.shell_api.manifest import NAME_PATTERN

from .resources import bundled

TOML = """\
# {name}: an NPA plugin for the {model} model ({doc}).
name = "{name}"
version = "0.1.0"
vendor = ""
abi = "1.0"
devices = ["{ids}"]
features = []
"""

C_SOURCE = """\
/* {name}: an NPA Shell API v1 plugin for the {model} model ({doc}).
 *
 * Write it from the ABI (ABI.md beside this file) and the device's datasheet, `npa datasheet
 * {model}`: registers, descriptor layouts field by field, errors and reset. A complete driver for
 * the same NIC, to compare with: {example_dir}.
 * Fill in each entry point marked TODO.
 */
#include "npa_shell.h"

static const struct npa_init_cfg *cfg;

NPA_EXPORT(npa_init) int32_t npa_init(uint32_t cfg_addr) {{
    cfg = (const struct npa_init_cfg *)(uintptr_t)cfg_addr;
    if (cfg->magic != NPA_CFG_MAGIC || cfg->abi_major != NPA_ABI_MAJOR) return NPA_CONFIG;
    /* TODO: reset the VF (shell_mmio_write32, then wait with shell_udelay), allocate hardware
     * rings with shell_dma_alloc, program them, enable the queues and interrupt vectors. */
    return NPA_NOT_IMPLEMENTED;
}}

NPA_EXPORT(npa_poll) int32_t npa_poll(uint32_t queue, uint32_t budget) {{
    (void)queue;
    (void)budget;
    /* TODO: completions -> txc; tx -> hardware (at most `budget`, one doorbell per burst);
     * received frames -> rx (at most `budget`); fill -> hardware RX buffers. */
    return -NPA_NOT_IMPLEMENTED;
}}

NPA_EXPORT(npa_intr) uint32_t npa_intr(uint32_t vector) {{
    (void)vector;
    /* TODO: acknowledge and re-arm `vector`; return the queues that need a poll (bit 0). */
    return 0;
}}

NPA_EXPORT(npa_quiesce) int32_t npa_quiesce(void) {{
    /* TODO: stop the queues, hand every frame back: unsent TX on txc with NPA_DESC_UNSENT,
     * posted RX buffers on rx with NPA_DESC_EMPTY. */
    return NPA_NOT_IMPLEMENTED;
}}

NPA_EXPORT(npa_reset) int32_t npa_reset(void) {{
    /* TODO: reset the VF, free what npa_init allocated. */
    return NPA_NOT_IMPLEMENTED;
}}
"""

ZIG_SOURCE = """\
//! {name}: an NPA Shell API v1 plugin for the {model} model ({doc}).
//!
//! Write it from the ABI (ABI.md beside this file) and the device's datasheet, `npa datasheet
//! {model}`: registers, descriptor layouts field by field, errors and reset. A complete driver for
//! the same NIC, to compare with: {example_dir} ({mlx5_dir} is a complete Zig one).
//! Fill in each entry point marked TODO.
const npa = @import("npa");

var cfg: ?*const npa.InitCfg = null;

export fn npa_init(cfg_addr: u32) i32 {{
    const c: *const npa.InitCfg = @ptrFromInt(cfg_addr);
    if (c.magic != npa.CFG_MAGIC or c.abi_major != npa.ABI_MAJOR) return npa.CONFIG;
    cfg = c;
    // TODO: reset the VF (npa.mmio_write32, then wait with npa.udelay), allocate hardware rings
    // with npa.dma_alloc, program them, enable the queues and interrupt vectors.
    return npa.NOT_IMPLEMENTED;
}}

export fn npa_poll(queue: u32, budget: u32) i32 {{
    _ = queue;
    _ = budget;
    // TODO: completions -> txc; tx -> hardware (at most `budget`, one doorbell per burst);
    // received frames -> rx (at most `budget`); fill -> hardware RX buffers.
    return -npa.NOT_IMPLEMENTED;
}}

export fn npa_intr(vector: u32) u32 {{
    _ = vector;
    // TODO: acknowledge and re-arm `vector`; return the queues that need a poll (bit 0).
    return 0;
}}

export fn npa_quiesce() i32 {{
    // TODO: stop the queues, hand every frame back: unsent TX on txc with npa.DESC_UNSENT,
    // posted RX buffers on rx with npa.DESC_EMPTY.
    return npa.NOT_IMPLEMENTED;
}}

export fn npa_reset() i32 {{
    // TODO: reset the VF, free what npa_init allocated.
    return npa.NOT_IMPLEMENTED;
}}
"""

README = """\
# {name}

An NPA plugin for the {model} model ({doc}), PCI id {ids}, written in {lang}.

    npa build {name}                                  # -> plugins-wasm/{name}.wasm
    npa inspect plugins-wasm/{name}.wasm              # what the loader sees
    npa conformance plugins-wasm/{name}.wasm          # certify it against the Shell API
    npa run plugins-wasm/{name}.wasm --nic {model}    # VM-to-VM traffic through it

Every entry point returns NOT_IMPLEMENTED until you fill it in (see the TODOs in `{source}`).

- The ABI: `ABI.md` beside this file (copied from npa {abi}; `npa new` writes it): the
  lifecycle, ring and ownership rules, what to do on device errors and resets.
- The device: `npa datasheet {model}` (its registers, descriptor layouts field by field with
  offsets, errors and reset, as npa models them; the model's source: {model_file}).
- To compare with once yours runs: a complete driver for the same NIC, {example_dir}.

A plugin imports only the Shell API: no libc, no WASI. `plugin.toml` holds the manifest: the PCI
ids it drives and the features it offers (`features = ["intr"]` for interrupts; without it the
shell polls the plugin).
"""

EXAMPLES = {"ixgbevf": "ixgbevf", "vmxnet3": "vmxnet3", "mlx5": "mlx5"}


def scaffold(name: str, lang: str, model, src_root: Path) -> Path:
    """Write plugins-src/<name>/ for `model` (a VF model class); returns the directory."""
    if not re.fullmatch(NAME_PATTERN, name):
        raise NpaError(f"{name!r}: a plugin name is 1 to 63 lower-case letters, digits, '-' "
                       "and '_', not starting with '-' or '_'")
    if lang not in ("c", "zig"):
        raise NpaError(f"--lang {lang}: use c or zig")
    d = src_root / name
    if d.exists():
        raise NpaError(f"{d} already exists")
    source = f"{name}.{lang}"
    fields = dict(name=name, model=model.MODEL, doc=model.DESCRIPTION, ids=pci_id(model),
                  module=model.__module__.rsplit(".", 1)[-1], example=EXAMPLES.get(model.MODEL, "ixgbevf"),
                  lang="C" if lang == "c" else "Zig", source=source)
    examples = bundled("plugins-src")
    fields.update(model_file=Path(sys.modules[model.__module__].__file__).resolve(),
                  example_dir=examples / fields["example"], mlx5_dir=examples / "mlx5",
                  abi=f"Shell API {ABI_MAJOR}.{ABI_MINOR}")
    d.mkdir(parents=True)
    shutil.copy(Path(shell_api.__file__).parent / "ABI.md", d / "ABI.md")
    (d / "plugin.toml").write_text(TOML.format(**fields))
    (d / source).write_text((C_SOURCE if lang == "c" else ZIG_SOURCE).format(**fields))
    (d / "README.md").write_text(README.format(**fields))
    return d
