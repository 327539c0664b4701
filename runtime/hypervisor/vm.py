"""A VM as the hypervisor sees it: its VF, its sandbox and its shell.

The guest's workload is not the hypervisor's business: a host extends this record with it.
"""
from __future__ import annotations

from dataclasses import dataclass

from nic_model.vf import Vf
from runtime.sandbox import Sandbox
from runtime.shell import Shell


@dataclass
class Vm:
    index: int
    mac: int
    vf: Vf
    box: Sandbox
    shell: Shell

    @property
    def name(self) -> str:
        return f"vm{self.index}"
