"""The SR-IOV NIC: a PF, N VFs of one vendor model, the embedded switch and the uplink.

`step()` is the hardware's clock: every VF's TX engine runs, then the uplink, then every VF's
RX engine, so a frame sent in a step is received in the same step. The PF control API here is
the hypervisor's only way to program the switch.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from .capture import Capture
from .ixgbe import IxgbeVf
from .mlx5 import Mlx5Vf
from .switch import PortPolicy, Switch
from .uplink import Uplink
from .vf import Vf
from .vmxnet3 import Vmxnet3Vf

MODELS: dict[str, type[Vf]] = {m.MODEL: m for m in (IxgbeVf, Vmxnet3Vf, Mlx5Vf)}
DEFAULT_MODEL = IxgbeVf.MODEL


class SriovNic:
    def __init__(self, model: str = DEFAULT_MODEL, num_vfs: int = 4, *, uplink: str = "null",
                 pcap: str | Path | None = None, switch_mode: str = "veb", tick_us: int = 10,
                 pcap_ports: tuple[str, ...] = ("uplink",), pcap_format: str = "pcap"):
        if model not in MODELS:
            raise ValueError(f"unknown NIC model {model!r}; known: {', '.join(MODELS)}")
        if not 1 <= num_vfs <= 64:
            raise ValueError(f"{num_vfs} VFs: a PF has 1 to 64")
        self.model = MODELS[model]
        self.switch = Switch(switch_mode)
        self.pf_port = self.switch.add_port("pf", "pf")
        self.vfs: list[Vf] = [self.model(i, self.switch.add_port(f"vf{i}", "vf"), self.switch)
                              for i in range(num_vfs)]
        self.uplink = Uplink(self.switch, self.switch.add_port("uplink", "uplink"), uplink)
        self.capture = self._capture(pcap, pcap_ports, pcap_format) if pcap else None
        self.tick_us = tick_us
        self.now_us = 0
        self.pf_discarded = 0

    def _capture(self, path, names, fmt) -> Capture:
        """A capture of the named switch ports (`all`: every one); the switch and the uplink
        record into it."""
        ports = {p.name: p for p in self.switch.ports}
        unknown = [n for n in names if n != "all" and n not in ports]
        if unknown:
            raise ValueError(f"capture port {unknown[0]!r}: this NIC has {', '.join(ports)} (or all)")
        chosen = list(ports.values()) if "all" in names else [ports[n] for n in dict.fromkeys(names)]
        cap = Capture(path, chosen, fmt)
        self.switch.capture = cap
        if cap.watches(self.uplink.port):
            self.uplink.capture = cap
        return cap

    # -- PF control API: the hypervisor's only way to program the switch (`ip link set PF vf N`)
    def set_vf_mac(self, vf: Vf, mac: int, *more: int) -> None:
        """`mac`: frames for these MACs reach `vf`, and (spoof checking on) only these may leave it."""
        vf.mac = mac
        self.switch.set_policy(vf.port, macs=frozenset((mac, *more)))

    def set_vf_vlan(self, vf: Vf, vid: int) -> None:
        """`vlan`: a port VLAN the switch adds and strips, invisible to the guest (0: none)."""
        self._check_vid(vid, allow_zero=True)
        self.switch.set_policy(vf.port, vlan=vid)

    def set_vf_vlan_filter(self, vf: Vf, vids: set[int]) -> None:
        """The guest VLANs the VF may send and receive tagged (without a port VLAN)."""
        for vid in vids:
            self._check_vid(vid)
        self.switch.set_policy(vf.port, vlans=frozenset(vids))

    def set_vf_spoofchk(self, vf: Vf, on: bool) -> None:
        """`spoofchk`: drop frames whose source MAC or VLAN the VF may not use."""
        self.switch.set_policy(vf.port, spoofchk=on)

    def set_vf_trust(self, vf: Vf, on: bool) -> None:
        """`trust`: the VF may ask for promiscuous and all-multicast; untrusting revokes both."""
        changes = dict(trusted=on) if on else dict(trusted=False, promisc=False, allmulti=False)
        self.switch.set_policy(vf.port, **changes)

    def set_vf_rx_mode(self, vf: Vf, promisc: bool, allmulti: bool) -> None:
        """Promiscuous / all-multicast reception; refused (PermissionError) for an untrusted VF."""
        if (promisc or allmulti) and not vf.port.policy.trusted:
            raise PermissionError(f"{vf.name} is not trusted: no promiscuous or all-multicast mode")
        self.switch.set_policy(vf.port, promisc=promisc, allmulti=allmulti)

    def set_vf_multicast(self, vf: Vf, groups: set[int]) -> None:
        """The multicast groups the VF receives."""
        self.switch.set_policy(vf.port, multicast=frozenset(groups))

    def set_vf_max_frame(self, vf: Vf, nbytes: int) -> None:
        """Frames longer than this (without FCS and VLAN tag) from the VF are dropped."""
        self.switch.set_policy(vf.port, max_frame=nbytes)

    def set_vf_storm_control(self, vf: Vf, broadcast_pps: int, multicast_pps: int) -> None:
        """Broadcast and multicast frames a second the VF may send (0: no limit); the rest are
        dropped at the switch and counted (`storm`)."""
        self.switch.set_policy(vf.port, broadcast_pps=broadcast_pps, multicast_pps=multicast_pps)

    def set_vf_link(self, vf: Vf, up: bool) -> None:
        """`state enable|disable`: a disabled VF's link is down, nothing passes the switch."""
        self.switch.set_policy(vf.port, link=up)

    def release_vf(self, vf: Vf) -> None:
        """The VF's VM left (migrated away): its MAC leaves the FDB (frames for it now take the
        uplink, where the VM is), the port goes back to the defaults with the link down, the
        function is reset. Frames still buffered at the port are the caller's to take first."""
        vf.mac = 0
        vf.port.policy = replace(PortPolicy(), link=False)
        self.switch.set_policy(vf.port)
        vf.port.held = False
        vf.port.flush()
        vf.reset()

    def free_vf(self) -> Vf | None:
        """A VF no VM has (no MAC programmed, link down), for a VM arriving by migration."""
        return next((vf for vf in self.vfs if not vf.port.policy.macs and not vf.mac), None)

    @staticmethod
    def _check_vid(vid: int, allow_zero: bool = False) -> None:
        if not (0 if allow_zero else 1) <= vid <= 4094:
            raise ValueError(f"VLAN id {vid}: use 1 to 4094")

    # -- the hardware clock --------------------------------------------------------------------
    def step(self) -> None:
        self.now_us += self.tick_us
        self.switch.now_us = self.now_us
        for vf in self.vfs:
            vf.advance(self.tick_us)
            vf.tx()
        self.uplink.step()
        self.pf_discarded += len(self.pf_port.receive(self.pf_port.pending()))  # no PF driver yet
        for vf in self.vfs:
            vf.rx()

    def close(self) -> None:
        self.uplink.close()
        if self.capture is not None:
            self.capture.close()
