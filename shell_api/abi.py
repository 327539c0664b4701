"""ABI version, the import table (module `shell`) and the export table (prefix `npa_`)."""
from __future__ import annotations

from dataclasses import dataclass

ABI_MAJOR = 1
ABI_MINOR = 1  # 1.1 added `pool_base_hi` to the init block (frames moved above 4 GiB)

# Where the guest's memory (the frame pool) sits in a VM's 64-bit DMA address space: above
# everything a wasm32 plugin can address, so a frame address is a value it copies, never a
# pointer it can follow.
GUEST_MEMORY_BASE = 1 << 32

IMPORT_MODULE = "shell"
EXPORT_PREFIX = "npa_"

# C type of a parameter -> its wasm value type.
WASM_TYPE = {"u32": "i32", "i32": "i32", "u64": "i64", "i64": "i64"}
C_TYPE = {"u8": "uint8_t", "u16": "uint16_t", "u32": "uint32_t", "i32": "int32_t", "u64": "uint64_t", "i64": "int64_t"}


@dataclass(frozen=True)
class FuncSpec:
    """One function of the ABI: its name, typed parameters, results and one-line meaning."""

    name: str
    params: tuple[tuple[str, str], ...]
    results: tuple[str, ...]
    doc: str

    @property
    def wasm_params(self) -> tuple[str, ...]:
        return tuple(WASM_TYPE[t] for _, t in self.params)

    @property
    def wasm_results(self) -> tuple[str, ...]:
        return tuple(WASM_TYPE[t] for t in self.results)

    def wasm_signature(self) -> str:
        return f"({', '.join(self.wasm_params)}) -> ({', '.join(self.wasm_results)})"

    def c_prototype(self) -> str:
        ret = C_TYPE[self.results[0]] if self.results else "void"
        args = ", ".join(f"{C_TYPE[t]} {n}" for n, t in self.params) or "void"
        return f"{ret} {self.name}({args})"


IMPORTS: tuple[FuncSpec, ...] = (
    FuncSpec("mmio_read32", (("off", "u32"),), ("u32",),
             "Read the 32-bit VF BAR0 register at byte offset `off` (unmapped offsets read 0)."),
    FuncSpec("mmio_write32", (("off", "u32"), ("val", "u32")), (),
             "Write a 32-bit VF BAR0 register: ring base/length, head/tail doorbells, interrupt "
             "mask, reset. Registers outside the data path are ignored and counted."),
    FuncSpec("dma_alloc", (("size", "u32"), ("align", "u32")), ("u32",),
             "Allocate `size` bytes of zeroed DMA-able memory aligned to `align` (a power of two, "
             "at most 1 MiB) inside the VF's IOMMU window; returns its address, or 0 on failure."),
    FuncSpec("dma_free", (("addr", "u32"),), (),
             "Return memory obtained from `dma_alloc`; it leaves the IOMMU window. Any other "
             "address (never allocated, already freed, inside a block) is ignored, counted and "
             "logged."),
    FuncSpec("udelay", (("us", "u32"),), (),
             "Wait `us` microseconds of device time: the device makes progress meanwhile."),
    FuncSpec("log", (("level", "u32"), ("ptr", "u32"), ("len", "u32")), (),
             "Log `len` bytes of UTF-8 at `ptr` (level 0 error .. 3 debug) to the host's log "
             "(stderr, or `npa -v --log FILE`), tagged with the VM and the plugin; rate-limited "
             "per host step, lines over the limit are counted, not written."),
)

EXPORTS: tuple[FuncSpec, ...] = (
    FuncSpec("npa_init", (("cfg_addr", "u32"),), ("i32",),
             "Bring the VF's data path up from the init config block at `cfg_addr`; returns a "
             "status."),
    FuncSpec("npa_poll", (("queue", "u32"), ("budget", "u32")), ("i32",),
             "Move at most `budget` frames each way between the shell rings and the hardware "
             "rings of `queue` (up to `budget` taken from `tx`, and up to `budget` put on `txc` "
             "and on `rx`); returns the frames moved, or -status on error, which is a fault."),
    FuncSpec("npa_intr", (("vector", "u32"),), ("u32",),
             "Acknowledge interrupt `vector`; returns the mask of queues that need a poll."),
    FuncSpec("npa_quiesce", (), ("i32",),
             "Stop the data path and give every frame back to the shell: unsent TX on `txc` "
             "marked UNSENT, posted RX buffers on `rx` marked EMPTY; returns a status."),
    FuncSpec("npa_reset", (), ("i32",),
             "Reset the VF and the plugin's state so that `npa_init` may run again; returns a "
             "status."),
)

# Exports the PIC toolchain emits; the loader calls them, in this order, when present.
OPTIONAL_EXPORTS: tuple[FuncSpec, ...] = (
    FuncSpec("__wasm_apply_data_relocs", (), (), "Relocate data against `__memory_base`."),
    FuncSpec("__wasm_call_ctors", (), (), "Run the module's static constructors."),
)

# Module `env`: the dynamic-linking plumbing a position-independent module imports.
PIC_IMPORTS: dict[str, tuple[str, str]] = {
    "memory": ("memory", "the VM's shared linear memory, fixed size (min = max)"),
    "__memory_base": ("global i32", "where the hypervisor placed the image's data"),
    "__table_base": ("global i32", "first slot of the image's function-table entries"),
    "__stack_pointer": ("global mut i32", "top of the plugin stack the hypervisor reserved"),
    "__indirect_function_table": ("table funcref", "the image's indirect-call table"),
}

IMPORTS_BY_NAME = {f.name: f for f in IMPORTS}
EXPORTS_BY_NAME = {f.name: f for f in EXPORTS}
OPTIONAL_BY_NAME = {f.name: f for f in OPTIONAL_EXPORTS}


def abi_compatible(major: int, minor: int) -> bool:
    """Major must match; a runtime accepts a plugin built for its minor or an older one."""
    return major == ABI_MAJOR and 0 <= minor <= ABI_MINOR
