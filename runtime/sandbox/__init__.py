"""The sandbox: where an untrusted plugin image is checked, placed and run.

wasm parsing (`wasm`), the loader and its limits (`loader`), the engine and compiled-module cache
(`engine`), budgeted export calls (`fastcall`), the Shell API host side (`imports`), a loaded
plugin (`plugin`), the plugin's fixed-size linear memory and its plan (`memory`), the DMA heap
(`heap`), and one VM's sandbox tying them together (`box`). It knows no NIC and no shell.
"""
from . import wasm
from .box import Sandbox
from .engine import cache_dir
from .errors import LoadError, NpaError, PluginFault
from .heap import DmaHeap
from .imports import Bar, NoDevice, ShellImports
from .loader import (CHECKS, MAX_IMAGE_BYTES, ImageReport, Placement, analyse, measures, place,
                     read_manifest)
from .memory import GUARD_SIZE, WASM_PAGE, RegionPlan, SharedRegion
from .plugin import Budgets, Plugin, load

__all__ = ["wasm", "Sandbox", "cache_dir", "LoadError", "NpaError", "PluginFault", "DmaHeap", "Bar",
           "NoDevice", "ShellImports", "CHECKS", "MAX_IMAGE_BYTES", "ImageReport", "Placement",
           "analyse", "measures", "place", "read_manifest", "GUARD_SIZE", "WASM_PAGE", "RegionPlan",
           "SharedRegion", "Budgets", "Plugin", "load"]
