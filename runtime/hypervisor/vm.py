"""A VM as the hypervisor sees it: its VF, its sandbox and its shell.

The guest's workload is not the hypervisor's business: a host extends this record with it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from npa.nic_model.vf import Vf
from npa.runtime.sandbox import Sandbox
from npa.runtime.shell import Shell


@dataclass
class Vm:
    index: int
    mac: int
    vf: Vf
    box: Sandbox
    shell: Shell
    name: str = field(init=False, default="")  # the VM's own name: it keeps it when it migrates
    paused: bool = field(init=False, default=False)  # stopped for a migration's last copy

    def __post_init__(self) -> None:
        self.name = self.name or f"vm{self.index}"
