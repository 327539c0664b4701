"""Two hosts on one segment in one process (`npa run --migrate-to`): their uplinks cabled, both
stepped each step in device time, their guests' flows shared, a VM migrated between them over
an in-process migration stream. Deterministic, like a single host.
"""
from __future__ import annotations

from typing import Callable

from npa.nic_model.uplink import Uplink
from npa.runtime.hypervisor.stream import MemoryLink

from .host import Host, drive, wind_down
from .migrate import Incoming, Outgoing, downtime


class Fabric:
    """Host `a` boots the VMs and their flows; host `b` starts empty and takes VMs that migrate."""

    @classmethod
    def build(cls, image: bytes, model: str, other: str, other_image: bytes, *, vms: int, vfs: int,
              repository, policy=None, other_policy=None, nic_options: dict | None = None,
              **traffic) -> "Fabric":
        """Two NICs (`model` with `vms` VMs running `image`, `other` with none) on one cable;
        host b picks arriving VMs' plugins from `repository` by its own NIC's PCI ids;
        `nic_options` go to host a's NIC (a capture)."""
        from npa.nic_model.sriov import SriovNic

        a = Host(SriovNic(model, vfs, uplink="wire", **(nic_options or {})), image, vms, policy=policy,
                 **traffic)
        b = Host(SriovNic(other, vfs, uplink="wire"), other_image, 0, policy=other_policy,
                 repository=repository, min_vms=0, **traffic)
        return cls(a, b)

    def __init__(self, a: Host, b: Host):
        if a.nic.uplink.kind != "wire" or b.nic.uplink.kind != "wire":
            raise ValueError("hosts on one fabric need `wire` uplinks")
        Uplink.cable(a.nic.uplink, b.nic.uplink)
        b.sink_of, b.known_flows = a.sink_of, a.known_flows  # one set of flows, wherever the VMs are
        self.hosts = (a, b)
        self.flows = a.flows
        self.steps = 0
        self.moves: list[tuple[Outgoing, Incoming]] = []

    @property
    def vms(self) -> list:
        return [vm for h in self.hosts for vm in h.vms]

    def migrate(self, name: str, src: Host, dst: Host, **opts) -> tuple[Outgoing, Incoming]:
        """Start moving VM `name` from `src` to `dst`; it proceeds as the fabric steps."""
        vm = next((v for v in src.vms if v.name == name), None)
        if vm is None:
            raise ValueError(f"no VM {name!r} on the source host")
        here, there = MemoryLink.pair()
        move = Outgoing(src, vm, here, **opts), Incoming(dst, there)
        src.migrations.append(move[0])
        dst.migrations.append(move[1])
        self.moves.append(move)
        return move

    def boot(self) -> None:
        for h in self.hosts:
            h.boot()

    def migrate_when(self, name: str, frames: int, **opts) -> Callable[["Fabric"], None]:
        """An `on_step` that moves VM `name` from host a to host b once the sinks have received
        `frames` frames in all."""
        def on_step(fabric: Fabric) -> None:
            if not self.moves and fabric.frames_received() >= frames:
                self.migrate(name, *self.hosts, **opts)
        return on_step

    def step(self) -> None:
        for h in self.hosts:
            h.step()
        self.steps += 1

    def total_frames(self) -> int:
        return sum(f.count for f in self.flows)

    def frames_received(self) -> int:
        return sum(vm.sink.frames for vm in self.vms)

    def moved(self) -> int:
        return sum(f.sent for f in self.flows) + self.frames_received()

    def delivered(self) -> bool:
        return self.hosts[0].delivered() and not self.migrating()

    def migrating(self) -> bool:
        return any(not m.finished for move in self.moves for m in move)

    def run(self, progress: Callable[[int], None] | None = None,
            on_step: Callable[["Fabric"], None] | None = None) -> None:
        drive(self, progress, on_step)

    def finish(self) -> None:
        wind_down(self, self.hosts)

    def report(self) -> list[dict]:
        """Each migration: the source's and the destination's view, and the downtime."""
        out = []
        for o, i in self.moves:
            r = {**o.report, "destination": {**o.report.get("destination", {}), **i.report["destination"]},
                 "first_frame": i.report["first_frame"]}
            r["downtime_s"] = downtime(o.report, i.report)
            out.append(r)
        return out

    def conserved(self) -> bool:
        return all(h.conserved() for h in self.hosts)

    def clean(self) -> bool:
        return all(h.clean() for h in self.hosts)

    def close(self) -> None:
        for h in self.hosts:
            h.close()
