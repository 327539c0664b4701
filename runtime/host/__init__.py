"""A host: one NIC, its VMs, and the loop that steps guests, shells, the NIC and the hypervisor
in a fixed order: in simulated device time, reproducible (`host`), or as a process on a real
network, paced to real time (`realtime`, `npa host`) with a control socket (`control`). A VM
moves between hosts by live migration (`migrate`); `fabric` cables two hosts in one process and
`timeline` records a run for pictures.
"""
from .host import STALL_STEPS, GuestVm, Host, new_vm, pairs, plugin_base, vm_mac
from .fabric import Fabric
from .migrate import Incoming, Outgoing
from .realtime import NetVm, RealtimeHost, addresses
from .timeline import Timeline

__all__ = ["STALL_STEPS", "GuestVm", "Host", "new_vm", "pairs", "plugin_base", "vm_mac", "NetVm",
           "RealtimeHost", "addresses", "Fabric", "Incoming", "Outgoing", "Timeline"]
