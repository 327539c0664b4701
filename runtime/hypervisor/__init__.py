"""The hypervisor: the trusted side. It holds the policy and the plugin repository, programs the
embedded switch through the PF, and moves each VM between the emulated and the plugin data path.

The policy file and its rules (`policy`), the typed control channel to each VM's shell
(`control`), the plugin repository indexed by PCI ids (`repository`), the emulated vNIC a VM
boots on and falls back to (`emulated`), the VM record it needs (`vm`), and the hypervisor
itself: admission, VF offer and revoke, faults, control requests (`hypervisor`); for live
migration, its steps on the way out and in (`migration`) and the stream between hosts
(`stream`). It knows no host loop: a host passes its VMs in.
"""
from . import control, migration, stream
from .control import ChannelError, Endpoint, channel
from .emulated import EmulatedNic
from .hypervisor import EMULATED, PLUGIN, Hypervisor, ModeChange, VmPort
from .policy import Policy, PolicyError, Rules, format_mac, parse_mac
from .repository import Entry, Repository, image_for
from .vm import Vm

__all__ = ["control", "migration", "stream", "ChannelError", "Endpoint", "channel", "EmulatedNic", "EMULATED", "PLUGIN",
           "Hypervisor", "ModeChange", "VmPort", "Policy", "PolicyError", "Rules", "format_mac",
           "parse_mac", "Entry", "Repository", "image_for", "Vm"]
