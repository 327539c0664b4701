"""The SR-IOV NIC: a PF, N VFs of one vendor model, the embedded switch and the uplink.

`step()` is the hardware's clock: every VF's TX engine runs, then the uplink, then every VF's
RX engine, so a frame sent in a step is received in the same step. The PF control API here is
the hypervisor's only way to program the switch.
"""
from __future__ import annotations

from pathlib import Path

from .ixgbe import IxgbeVf
from .mlx5 import Mlx5Vf
from .switch import Switch
from .uplink import Uplink
from .vf import Vf
from .vmxnet3 import Vmxnet3Vf

MODELS: dict[str, type[Vf]] = {m.MODEL: m for m in (IxgbeVf, Vmxnet3Vf, Mlx5Vf)}
DEFAULT_MODEL = IxgbeVf.MODEL


class SriovNic:
    def __init__(self, model: str = DEFAULT_MODEL, num_vfs: int = 4, *, uplink: str = "null",
                 pcap: str | Path | None = None, switch_mode: str = "veb", tick_us: int = 10):
        if model not in MODELS:
            raise ValueError(f"unknown NIC model {model!r}; known: {', '.join(MODELS)}")
        if not 1 <= num_vfs <= 64:
            raise ValueError(f"{num_vfs} VFs: a PF has 1 to 64")
        self.model = MODELS[model]
        self.switch = Switch(switch_mode)
        self.pf_port = self.switch.add_port("pf", "pf")
        self.vfs: list[Vf] = [self.model(i, self.switch.add_port(f"vf{i}", "vf"), self.switch)
                              for i in range(num_vfs)]
        self.uplink = Uplink(self.switch, self.switch.add_port("uplink", "uplink"), uplink, pcap)
        self.tick_us = tick_us
        self.now_us = 0
        self.pf_discarded = 0

    # -- PF control API ------------------------------------------------------------------------
    def set_vf_mac(self, vf: Vf, mac: int) -> None:
        """Program the switch so that frames for `mac` reach `vf` (ip link set PF vf N mac)."""
        vf.mac = mac
        self.switch.set_mac(vf.port, mac)

    # -- the hardware clock --------------------------------------------------------------------
    def step(self) -> None:
        self.now_us += self.tick_us
        for vf in self.vfs:
            vf.advance(self.tick_us)
            vf.tx()
        self.uplink.step(self.now_us)
        self.pf_discarded += len(self.pf_port.receive(self.pf_port.pending()))  # no PF driver yet
        for vf in self.vfs:
            vf.rx()

    def close(self) -> None:
        self.uplink.close()
