"""The shell: the guest's side of the data path, the part every guest always has.

The guest's memory above 4 GiB, out of the plugin's reach (`guest_memory`), the frame pool
and who holds each frame (`pool`), the AF_XDP-style shell rings (`rings`), the
layout of a VM's data-path memory and its init block (`datapath`), reading and checking the
entries a plugin writes (`reaping`), settling a gone plugin's frames with the device's own
record, exactly once (`settle`), and the shell itself: the plugin's lifecycle and the guest's
transmit, poll and interrupt (`shell`). It drives any `Driver`: a sandboxed plugin or the
hypervisor's emulated vNIC.
"""
from .datapath import RING_NAMES, DataPath, setup
from .guest_memory import GuestMemory
from .pool import FILL, FREE, RESEND, STATE_NAMES, TX, FramePool
from .reaping import EMPTY, ERROR, ETH_HEADER, UNSENT, Reaper
from .rings import DESC, RingError, ShellRing
from .settle import settle
from .shell import Driver, Event, Shell

__all__ = ["RING_NAMES", "DataPath", "setup", "GuestMemory", "FILL", "FREE", "RESEND", "STATE_NAMES", "TX",
           "FramePool", "EMPTY", "ERROR", "ETH_HEADER", "UNSENT", "Reaper", "DESC", "RingError",
           "ShellRing", "settle", "Driver", "Event", "Shell"]
