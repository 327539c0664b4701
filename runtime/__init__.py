"""The runtime: loader and sandbox, fast export calls, shell, hypervisor."""
from .errors import LoadError, NpaError, PluginFault
from .loader import ImageReport, analyse
from .plugin import Budgets, Plugin, load
from .region import DmaHeap, RegionPlan, SharedRegion
from .sandbox import Sandbox

__all__ = ["LoadError", "NpaError", "PluginFault", "ImageReport", "analyse", "Budgets", "Plugin",
           "load", "DmaHeap", "RegionPlan", "SharedRegion", "Sandbox"]
