"""One VM's sandbox: its wasmtime store, shared region, DMA heap and the Shell API host side."""
from __future__ import annotations

import wasmtime

from .engine import engine
from .heap import DmaHeap
from .imports import Bar, NoDevice, ShellImports
from .loader import ImageReport
from .memory import RegionPlan, SharedRegion
from .plugin import Budgets, Plugin, load


class Sandbox:
    def __init__(self, plan: RegionPlan = RegionPlan(), bar: Bar | None = None):
        self.plan = plan
        self.bar = bar if bar is not None else NoDevice()
        self.store = wasmtime.Store(engine())
        self.region = SharedRegion(self.store, plan)
        self.heap = DmaHeap(plan.dma_start, plan.size)
        # A VF model reaches this VM's memory only through the IOMMU window attached here.
        self.iommu = self.bar.attach(self.region.np) if hasattr(self.bar, "attach") else None
        self.host = ShellImports(self.region, self.heap, self.bar, iommu=self.iommu,
                                 device_step=getattr(self.bar, "advance", None))

    def load(self, image: bytes | ImageReport, base: int | None = None,
             budgets: Budgets = Budgets()) -> Plugin:
        return load(image, self.region, self.host, base=base, budgets=budgets)
