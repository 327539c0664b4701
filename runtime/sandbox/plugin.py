"""A loaded plugin: instantiation at a chosen base, and its exports as budgeted fast calls."""
from __future__ import annotations

from dataclasses import dataclass

import wasmtime

from npa.shell_api import Manifest
from npa.shell_api.abi import EXPORTS, IMPORT_MODULE, IMPORTS_BY_NAME, OPTIONAL_EXPORTS

from .engine import deadline_ticks
from .errors import LoadError, cause
from .fastcall import ExportCall, HostFuncs, StoreClock, trap_fault
from .imports import ShellImports
from .loader import ImageReport, Placement, analyse, place
from .memory import SharedRegion


DATA_PATH = ("npa_poll", "npa_intr", "npa_quiesce", "npa_reset")  # the rest: set-up calls


@dataclass(frozen=True)
class Budgets:
    """What one call into a plugin may spend: instructions (fuel) and wall time, the start
    function, constructors and `npa_init` under `init_deadline_s` (None: `deadline_s`)."""

    fuel: int = 20_000_000
    deadline_s: float = 0.5
    init_deadline_s: float | None = None

    @property
    def init_s(self) -> float:
        return self.deadline_s if self.init_deadline_s is None else self.init_deadline_s


class Plugin:
    """A plugin instance in a VM's region. Its `npa_*` attributes are the exports, callable."""

    npa_init: ExportCall
    npa_poll: ExportCall
    npa_intr: ExportCall
    npa_quiesce: ExportCall
    npa_reset: ExportCall

    def __init__(self, report: ImageReport, placement: Placement, instance: wasmtime.Instance,
                 calls: dict[str, ExportCall], host: ShellImports):
        self.report, self.placement, self.instance, self.host = report, placement, instance, host
        self.manifest: Manifest = report.manifest
        self.calls = calls
        for name, call in calls.items():
            setattr(self, name, call)

    @property
    def base(self) -> int:
        return self.placement.memory_base

    def __repr__(self) -> str:
        return f"<Plugin {self.manifest.name} {self.manifest.version} at 0x{self.base:x}>"


def load(image: bytes | ImageReport, region: SharedRegion, host: ShellImports, *,
         base: int | None = None, budgets: Budgets = Budgets(), use_cache: bool = True) -> Plugin:
    """Check `image`, place it at `base` (default: the region plan's) and instantiate it.

    Raises LoadError when a check fails and PluginFault when its start function or constructors
    trap or run out of budget.
    """
    rep = image if isinstance(image, ImageReport) else analyse(image, use_cache)
    if rep.error is not None:
        raise rep.error
    plan = region.plan
    pl = place(rep, plan.plugin_base if base is None else base, plan.plugin_slot,
               plan.stack_size, plan.size)
    store = region.store
    funcs = HostFuncs(store)
    i32 = wasmtime.ValType.i32()
    env = {
        "memory": lambda: region.memory,
        "__memory_base": lambda: wasmtime.Global(store, wasmtime.GlobalType(i32, False), pl.memory_base),
        "__table_base": lambda: wasmtime.Global(store, wasmtime.GlobalType(i32, False), pl.table_base),
        "__stack_pointer": lambda: wasmtime.Global(store, wasmtime.GlobalType(i32, True), pl.stack_top),
        "__indirect_function_table": lambda: wasmtime.Table(store, wasmtime.TableType(
            wasmtime.ValType.funcref(), wasmtime.Limits(pl.table_base + pl.table_size, None)), None),
    }
    externs = [funcs.define(IMPORTS_BY_NAME[imp.name], getattr(host, imp.name))
               if imp.module == IMPORT_MODULE else env[imp.name]()
               for imp in rep.module.imports]

    ticks, init_ticks = deadline_ticks(budgets.deadline_s), deadline_ticks(budgets.init_s)
    store.set_fuel(budgets.fuel)
    store.set_epoch_deadline(init_ticks)
    try:
        instance = wasmtime.Instance(store, rep.module, externs)
    except wasmtime.Trap as t:
        raise trap_fault("start function", t) from None
    except wasmtime.WasmtimeError as e:
        raise LoadError("instantiate", f"instantiation failed: {cause(e)}") from None
    if funcs.pending:
        funcs.reraise()

    exports = instance.exports(store)
    clock = StoreClock(store, ticks)
    init_clock = StoreClock(store, init_ticks, clock)
    call = {spec.name: ExportCall(store, exports[spec.name], spec, budgets.fuel,
                                  clock if spec.name in DATA_PATH else init_clock, funcs)
            for spec in (*OPTIONAL_EXPORTS, *EXPORTS) if spec.name in exports}
    for spec in OPTIONAL_EXPORTS:  # relocate data against our base, then run constructors
        if spec.name in call:
            call.pop(spec.name)()
    return Plugin(rep, pl, instance, call, host)
