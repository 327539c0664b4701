"""A host: one NIC, its VMs, and the loop that steps guests, shells, the NIC and the hypervisor
in a fixed order (`host`), so a run in simulated device time is reproducible.
"""
from .host import STALL_STEPS, GuestVm, Host, pairs, plugin_base, vm_mac

__all__ = ["STALL_STEPS", "GuestVm", "Host", "pairs", "plugin_base", "vm_mac"]
