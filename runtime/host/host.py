"""A host: the NIC model, one VM per VF (sandbox, shell, plugin, guest), and the loop that
steps them in a fixed order. Nothing here depends on wall time, so a run is reproducible.

A step: every guest offers frames to its shell, shells with work poll their data path (the
plugin, or the hypervisor's emulated NIC), the NIC runs one tick (TX engines, switch, uplink, RX
engines), MSI-X messages are delivered to the shells, which ask their plugins which queues need a
poll on the next step, and the hypervisor handles faults and control requests.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from npa.nic_model.sriov import SriovNic
from npa.runtime.guest import Flow, Sink, TrafficGen
from npa.runtime.hypervisor import EMULATED, Hypervisor, Policy, Vm
from npa.runtime.sandbox import ImageReport, LoadError, RegionPlan, Sandbox, analyse
from npa.runtime.shell import Driver, Shell

STALL_STEPS = 2000  # steps without any frame moving before a run is declared stuck


def vm_mac(i: int) -> int:
    """Locally administered unicast MACs 02:00:00:00:00:01, ..."""
    return 0x02_00_00_00_00_00 | (i + 1)


def plugin_base(i: int) -> int:
    """The hypervisor places each VM's plugin somewhere else, to show it does not matter."""
    return 0x10000 * (1 + i % 8)


@dataclass
class GuestVm(Vm):
    """The hypervisor's VM record plus the guest's workload: what it sends and what it checks."""

    gen: TrafficGen
    sink: Sink


def new_vm(cls, nic: SriovNic, i: int, mac: int, region: RegionPlan, *, ring_size: int,
           frames: int, budget: int, frame_size: int = 2048, **guest):
    """VM i on VF i: its MAC programmed, its sandbox (plugin placed where `plugin_base` says),
    its shell; `guest` fills in the rest of `cls` (the guest's workload)."""
    vf = nic.vfs[i]
    nic.set_vf_mac(vf, mac)
    box = Sandbox(region.at(plugin_base(i)), bar=vf)
    shell = Shell(box, ring_size=ring_size, frames=frames, frame_size=frame_size, budget=budget,
                  reset_vf=vf.reset, clock=lambda: nic.now_us)
    return cls(i, mac, vf, box, shell, **guest)


def polls_now(hv: Hypervisor, vm: Vm, step: int) -> bool:
    """A managed VM's data path is polled when it has work (an emulated one: every step),
    unless the hypervisor holds an over-share plugin back this step."""
    return (vm.shell.need_poll or hv.mode(vm) == EMULATED) and hv.may_poll(vm, step)


def tick(nic: SriovNic, vms: list[Vm], hv: Hypervisor | None) -> None:
    """The NIC's tick, then MSI-X messages to the shells, plugin log budgets refilled, and the
    hypervisor's round (faults, watchdog, fair shares, control requests) when it manages them."""
    nic.step()
    for vm in vms:
        if fired := vm.vf.take_msix():
            vm.shell.interrupt(fired)
        vm.box.host.refill_log_tokens()
        if hv is not None:
            hv.check_faults(vm)
            hv.serve(vm)


def pairs(n: int) -> list[tuple[int, int]]:
    """VM-to-VM flows, both ways: (0,1), (2,3), ...; an odd last VM pairs with VM 0."""
    out = []
    for a in range(0, n - 1, 2):
        out += [(a, a + 1), (a + 1, a)]
    if n % 2 and n > 1:
        out += [(n - 1, 0), (0, n - 1)]
    return out


def drive(target, progress: Callable[[int], None] | None = None, on_step: Callable | None = None) -> None:
    """Step `target` (a `Host`, or a `Fabric` of two) until every flow is delivered, or nothing
    moves and no migration is under way for STALL_STEPS steps; then finish it. `on_step` runs
    after each step (start a migration, sample a timeline); `progress` gets frames received."""
    last, idle = -1, 0
    while not target.delivered() and idle < STALL_STEPS:
        target.step()
        if on_step is not None:
            on_step(target)
        moved = target.moved()
        idle = idle + 1 if moved == last and not target.migrating() else 0
        if progress is not None and moved != last:
            progress(target.frames_received())
        last = moved
    target.finish()


def wind_down(target, hosts) -> None:
    """Quiesce every plugin of `hosts`; frames received on the way still reach their guest. A
    plugin that fails its last quiesce has its frames settled: its VM finishes on the emulated
    path, sending what the device never read, before it is quiesced too. `target` (a host, or
    the fabric of several) steps meanwhile."""
    for h in hosts:
        h.quiesce_all()
    if not all(h.managed for h in hosts):
        return
    vms = [vm for h in hosts for vm in h.vms]
    for h in hosts:
        for vm in h.vms:
            h.hv.check_faults(vm)
    for _ in range(STALL_STEPS):
        if not any(len(vm.shell.pool.resend) for vm in vms):
            break
        target.step()
    for _ in range(8):  # what those frames set off on the way (the last burst, its echo)
        target.step()
    for h in hosts:
        h.quiesce_all()


class Host:
    GUEST = "traffic"  # its guests run a traffic generator and sink (see `runtime.host.migrate`)
    FORWARD_S = 0.00005  # a migration source forwards until its old port was quiet this long
    PAGES_PER_STEP = 32.0  # the migration stream's pace: 4 KiB pages per 10 µs step, ~100 Gbit/s

    def __init__(self, nic: SriovNic, image: bytes | ImageReport, vms: int, *, packets: int,
                 sizes: np.ndarray, window: int = 2048, ring_size: int = 512,
                 pool_frames: int = 2048, budget: int = 512, region: RegionPlan = RegionPlan(),
                 policy: Policy | None = None, repository=None, min_vms: int = 2):
        if not min_vms <= vms <= len(nic.vfs):
            raise ValueError(f"{vms} VMs: need {min_vms} to {len(nic.vfs)} (one VF each)")
        self.nic, self.window = nic, window
        self.region, self.ring_size, self.budget = region, ring_size, budget
        self.report = image if isinstance(image, ImageReport) else analyse(image)
        if self.report.error is not None:
            raise self.report.error
        self.hv = Hypervisor(nic, self.report, policy, repository)
        macs = [(self.hv.policy.for_vm(f"vm{i}").mac_ints or (vm_mac(i),))[0] for i in range(vms)]
        flows = [Flow(k, macs[a], macs[b], packets, sizes) for k, (a, b) in enumerate(pairs(vms))]
        self.flows = flows
        self.vms: list[GuestVm] = [
            new_vm(GuestVm, nic, i, macs[i], region, ring_size=ring_size, frames=pool_frames,
                   budget=budget, gen=TrafficGen([f for f in flows if f.src == macs[i]], burst=budget),
                   sink=Sink(macs[i], [f for f in flows if f.dst == macs[i]]))
            for i in range(vms)]
        self.sink_of = {f.id: vm.sink for vm in self.vms for f in flows if f.dst == vm.mac}
        self.known_flows = {f.id: f for f in flows}  # hosts of one run share both (`Fabric`)
        self.steps = 0
        self.managed = False  # VMs run under the hypervisor (modes), not a fixed driver
        self.migrations: list = []  # `runtime.host.migrate` Outgoing/Incoming, advanced each step

    def boot(self, driver: Callable[[GuestVm], Driver] | None = None, label: str = "host driver") -> None:
        """Boot every VM on the emulated path, then offer each its VF: the hypervisor injects the
        plugin at the base it chose and the shell initialises it. `driver` instead attaches
        another driver of the same ABI directly (benchmark baselines)."""
        m = self.report.manifest
        ids = {str(d) for d in m.devices}
        if driver is not None:
            for vm in self.vms:
                vm.shell.attach(driver(vm), m.features, label)
            return
        if (vf := self.nic.vfs[0]).pci_id not in ids:
            raise LoadError("device", f"plugin {m.name} drives {', '.join(sorted(ids))}, "
                            f"not this NIC's VFs ({vf.pci_id}, {self.nic.model.MODEL})")
        self.managed = True
        for vm in self.vms:
            self.hv.admit(vm)
            vm.sink.receive(self.hv.offer(vm))

    def offer(self, i: int, image: ImageReport | None = None) -> None:
        """Offer VM i its VF again, optionally with another plugin image."""
        self.vms[i].sink.receive(self.hv.offer(self.vms[i], image))

    def revoke(self, i: int, reason: str = "vf revoke") -> None:
        self.vms[i].sink.receive(self.hv.revoke(self.vms[i], reason))

    # -- the loop ------------------------------------------------------------------------------
    def _window(self, vm: GuestVm) -> dict[int, int]:
        return {f.id: self.window - (f.sent - self.received(f))
                for f in vm.gen.flows}

    def step(self) -> None:
        self.run_shells()
        self.run_nic()
        for m in self.migrations:
            m.advance()

    def run_shells(self) -> None:
        """Guests offer frames to their shells; shells with work poll their data path."""
        for vm in self.vms:
            if vm.paused:
                continue
            shell = vm.shell
            if not vm.gen.done and shell.active:
                burst = vm.gen.next_burst(shell.tx_room(), self._window(vm))
                if burst is not None:
                    flow, frames = burst
                    flow.sent += shell.transmit(frames)
            if not self.managed:
                if shell.need_poll:
                    vm.sink.receive(shell.poll())
            elif polls_now(self.hv, vm, self.steps):
                vm.sink.receive(shell.poll())

    def run_nic(self) -> None:
        """The NIC's tick, then MSI-X messages to the shells and the hypervisor's round."""
        tick(self.nic, self.vms, self.hv if self.managed else None)
        self.steps += 1

    def moved(self) -> int:
        return sum(f.sent for f in self.flows) + self.frames_received()

    def received(self, flow: Flow) -> int:
        """Frames of `flow` its destination's sink has received (good, first copies)."""
        return self.sink_of[flow.id].check[flow.id].received

    def delivered(self) -> bool:
        return all(f.sent == f.count and self.received(f) >= f.count
                   for f in self.flows)

    def frames_received(self) -> int:
        return sum(vm.sink.frames for vm in self.vms)

    def migrating(self) -> bool:
        return any(not m.finished for m in self.migrations)

    def run(self, progress: Callable[[int], None] | None = None,
            on_step: Callable[["Host"], None] | None = None) -> None:
        drive(self, progress, on_step)

    def finish(self) -> None:
        wind_down(self, (self,))

    def quiesce_all(self) -> None:
        for vm in self.vms:
            if vm.shell.active:
                vm.sink.receive(vm.shell.quiesce())

    # -- the guest's side of a migration (`runtime.host.migrate.GuestHost`) ---------------------
    def clock(self) -> float:
        return self.nic.now_us / 1e6

    def deliver(self, vm: GuestVm, frames) -> None:
        vm.sink.receive(frames)

    def guest_state(self, vm: GuestVm) -> tuple[dict, list[bytes]]:
        return {"gen": vm.gen.snapshot(), "sink": vm.sink.snapshot()}, []

    def gone(self, vm: GuestVm) -> None:
        pass  # its generator and sink hold nothing outside this process

    def hand_over(self, vm: GuestVm) -> None:
        pass  # and all of it goes in the migration stream

    def new_guest_vm(self, hello, vf) -> GuestVm:
        return new_vm(GuestVm, self.nic, vf.index, hello.mac, self.region, ring_size=self.ring_size,
                      frames=hello.frames, frame_size=hello.frame_size, budget=self.budget,
                      gen=TrafficGen([]), sink=Sink(hello.mac, []))

    def restore_guest(self, vm: GuestVm, state: dict, outbox: list[bytes]) -> None:
        """The guest's generator and sink from a migration stream, all or nothing: a state that
        is wrong anywhere leaves this host's flows as they were."""
        known = self.known_flows
        before = {fid: f.sent for fid, f in known.items()}
        try:
            gen = TrafficGen.restore(state["gen"], known)
            sink = Sink.restore(state["sink"], known)
            if sink.mac != vm.mac:
                raise ValueError("guest state: the sink's MAC is not the VM's")
        except BaseException:
            for fid in set(known) - set(before):
                del known[fid]
            for fid, sent in before.items():
                known[fid].sent = sent
            raise
        vm.gen, vm.sink = gen, sink
        self.sink_of.update((fid, vm.sink) for fid in vm.sink.check)

    # -- results -------------------------------------------------------------------------------
    def total_frames(self) -> int:
        return sum(f.count for f in self.flows)

    def conserved(self) -> bool:
        """Every pool frame is back with its shell (none with a plugin or a VF)."""
        return all(vm.shell.held_by_plugin() == 0 and
                   sum(vm.shell.holdings().values()) == vm.shell.nframes for vm in self.vms)

    def clean(self) -> bool:
        return (self.conserved() and all(vm.sink.clean() for vm in self.vms)
                and all(f.sent == f.count for f in self.flows)
                and not any(vm.shell.refused for vm in self.vms)
                and not any(e.kind == "fault" for vm in self.vms for e in vm.shell.events))

    def close(self) -> None:
        self.nic.close()


