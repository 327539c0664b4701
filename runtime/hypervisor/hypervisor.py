"""The hypervisor: the policy, the plugin image, the PF, and each VM's data-path mode.

A VM boots EMULATED (`EmulatedNic`). On a VF offer the hypervisor injects the plugin at the base
it chose, the shell initialises it and the VM is in PLUGIN mode. On a VF revoke the shell
quiesces the plugin (every frame comes back, unsent ones marked) and the VM carries on EMULATED,
re-sending first what came back unsent. On a plugin fault the shell has already disabled it and
reset the VF; its TX frames are re-sent on the emulated path. The control path never reaches the
plugin: guests ask here, over the control channel, and the policy decides; only then is the PF
programmed.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from npa.nic_model.frames import Frames, is_group
from npa.nic_model.sriov import SriovNic
from npa.runtime.sandbox import ImageReport, LoadError, NpaError, PluginFault, analyse

from .control import (
    AddVlan,
    Endpoint,
    LinkState,
    RemoveVlan,
    Reply,
    Request,
    SetMac,
    SetMtu,
    SetMulticast,
    SetRxMode,
    VfOffer,
    VfRevoke,
    channel,
)
from .emulated import EmulatedNic
from .policy import Policy, Rules, format_mac, parse_mac
from .repository import Repository
from .vm import Vm

EMULATED, PLUGIN = "emulated", "plugin"


@dataclass(frozen=True)
class ModeChange:
    time_us: int
    mode: str
    reason: str


@dataclass
class VmPort:
    """What the hypervisor keeps per VM: its rules, control channel, data paths, mode history."""

    rules: Rules
    guest: Endpoint  # the shell's side of the control channel
    host: Endpoint  # the hypervisor's side
    emulated: EmulatedNic
    report: ImageReport  # the image this VM's VF gets
    plugin: object | None = None
    mode: str = ""
    modes: list[ModeChange] = field(default_factory=list)
    control_errors: int = 0  # frames from the guest that were not a valid request
    progress: int = -1  # the watchdog's last view of the data path's progress
    progress_us: int = 0  # and when it last moved
    fuel_seen: int = 0  # the fairness account: the shell's fuel, wall time, poll and DMA fault
    wall_seen: float = 0.0  # counts at the last step
    polls_seen: int = 0
    dma_faults_seen: int = 0
    window: list = field(default_factory=lambda: [0, 0, 0.0, 0])  # fuel, polls, wall s, DMA faults
    strikes: int = 0  # windows in a row over the share
    throttle: int = 1  # polled every `throttle` steps


log = logging.getLogger("npa.hypervisor")


class Hypervisor:
    def __init__(self, nic: SriovNic, report: ImageReport, policy: Policy | None = None,
                 repository: str | Path | None = None):
        self.nic, self.report = nic, report
        self.policy = policy or Policy()
        self.repository = repository  # where VMs arriving by migration get their plugin from
        self.ports: dict[int, VmPort] = {}
        self._images: dict[tuple, ImageReport] = {}

    def image_for(self, vf) -> ImageReport:
        """The plugin for this VF: from the repository as it is now, by the VF's PCI ids (a VM
        arriving from a host with another NIC gets this NIC's plugin); without a repository,
        the image the host was started with. NpaError when there is none."""
        if self.repository is None:
            return self.report
        entry = Repository(self.repository).select(vf.pci_id, self.nic.model.MODEL)
        st = entry.path.stat()
        key = (str(entry.path), st.st_size, st.st_mtime_ns)
        if key not in self._images:
            report = analyse(entry.path.read_bytes())
            if report.error is not None:
                raise NpaError(f"{entry.path}: {report.error}")
            self._images[key] = report
        return self._images[key]

    # -- VMs -----------------------------------------------------------------------------------
    def admit(self, vm: Vm, rules: Rules | None = None, image: ImageReport | None = None) -> None:
        """Program the VF's port from the policy and boot the VM on the emulated path. A VM
        arriving by migration brings the `rules` and the `image` decided for it here."""
        rules = rules or self.policy.for_vm(vm.name)
        nic, vf = self.nic, vm.vf
        nic.set_vf_mac(vf, vm.mac)
        nic.set_vf_spoofchk(vf, rules.spoofchk)
        nic.set_vf_trust(vf, rules.trust)
        nic.set_vf_vlan(vf, rules.vlan)
        nic.set_vf_max_frame(vf, self._max_frame(vm, rules.max_frame))
        nic.set_vf_storm_control(vf, rules.storm_control.broadcast_pps, rules.storm_control.multicast_pps)
        up = rules.state != "disable"
        nic.set_vf_link(vf, up)
        guest, host = channel()
        emu = EmulatedNic(vm.shell.dp, vf.port, nic.switch)
        self.ports[vm.index] = VmPort(rules, guest, host, emu, image or self.report)
        host.send(LinkState(up=up))
        vm.shell.resend_after_fault = True  # the emulated path is always there to fall back to
        self._switch(vm, EMULATED, emu, "boot")

    @staticmethod
    def _max_frame(vm: Vm, policy_max: int) -> int:
        """The VF port never passes a frame longer than the guest's buffers, whatever the policy
        allows and whatever buffer size the plugin programs into its VF."""
        return min(policy_max, vm.shell.frame_size)

    def mode(self, vm: Vm) -> str:
        return self.ports[vm.index].mode

    def modes(self, vm: Vm) -> list[ModeChange]:
        return self.ports[vm.index].modes

    def _switch(self, vm: Vm, mode: str, driver, reason: str) -> bool:
        p = self.ports[vm.index]
        label = "emulated" if mode == EMULATED else f"{p.report.manifest.name} at 0x{p.plugin.base:x}"
        if not vm.shell.attach(driver, p.report.manifest.features if mode == PLUGIN else 0, label,
                               on_vf=mode == PLUGIN):
            return False
        p.mode, p.progress, p.strikes, p.throttle = mode, -1, 0, 1  # watchdog, account afresh
        p.fuel_seen, p.polls_seen, p.wall_seen = vm.shell.fuel, vm.shell.stats["polls"], vm.shell.wall_s
        p.dma_faults_seen, p.window = vm.vf.stats.dma_faults, [0, 0, 0.0, 0]
        p.modes.append(ModeChange(self.nic.now_us, mode, reason))
        return True

    def offer(self, vm: Vm, image: ImageReport | None = None) -> Frames:
        """EMULATED -> PLUGIN: the VF is the VM's, driven by `image` (default: the one it had).
        Returns frames received on the way."""
        p = self.ports[vm.index]
        if p.mode != EMULATED:
            return Frames.empty()
        if image is not None and image is not p.report:
            p.report, p.plugin = image, None
        got = vm.shell.quiesce()
        p.host.send(VfOffer(vf=vm.vf.index, pci_id=vm.vf.pci_id, bar0_size=vm.vf.SIZE))
        try:
            if p.plugin is None:
                vm.box.host.tag = f"{vm.name} {p.report.manifest.name}"  # its log lines say whose
                p.plugin = vm.box.load(p.report, budgets=p.rules.budgets())
        except (LoadError, PluginFault) as e:
            self._refused(vm, f"plugin refused: {e}")
            return got
        if not self._switch(vm, PLUGIN, p.plugin, "vf offer"):
            p.plugin = None
            self._refused(vm, f"plugin init failed: {vm.shell.events[-1].reason}")
        return got

    def _refused(self, vm: Vm, reason: str) -> None:
        """An offer the plugin could not take: the VM stays emulated, and the reason is in its
        mode history (`npa stat`, `npa run`'s verdict) and in the log."""
        log.warning("%s: %s; it runs on the emulated path", vm.name, reason)
        self._switch(vm, EMULATED, self.ports[vm.index].emulated, reason)

    def revoke(self, vm: Vm, reason: str = "vf revoke") -> Frames:
        """PLUGIN -> EMULATED, losing nothing: quiesce the plugin, reset the VF, re-send unsent."""
        p = self.ports[vm.index]
        if p.mode != PLUGIN:
            return Frames.empty()
        p.host.send(VfRevoke(reason=reason))
        got = vm.shell.quiesce()  # the shell no longer drives the plugin either way
        if vm.shell.events[-1].kind == "fault":  # it could not quiesce: the shell took its
            p.plugin = None                      # frames back and reset the VF
        else:
            vm.vf.reset()
        self._switch(vm, EMULATED, p.emulated, reason)
        return got

    def check_faults(self, vm: Vm) -> None:
        """A plugin the shell disabled (trap, fuel, deadline, bad status) or the watchdog
        caught: fall back."""
        p = self.ports[vm.index]
        if p.mode == PLUGIN and vm.shell.active:
            self._watchdog(vm, p)
            self._fairness(vm, p)
        if p.mode == PLUGIN and not vm.shell.active and vm.shell.events[-1].kind == "fault":
            p.plugin = None  # a faulted instance is never called again
            self._switch(vm, EMULATED, p.emulated, f"fault: {vm.shell.events[-1].reason}")

    def _watchdog(self, vm: Vm, p: VmPort) -> None:
        """Work the device could do (TX frames handed over and not read, RX frames written and
        not handed back, frames waiting at the VF's port while the plugin holds buffers) and no
        progress for `watchdog_us` of device time: the plugin is faulted."""
        shell, rec, now = vm.shell, vm.shell.record, self.nic.now_us
        if rec is None:
            return
        s = shell.stats
        progress = rec.position + s["tx_done"] + s["tx_unsent"] + s["rx_frames"] + s["rx_empty"]
        if progress != p.progress:
            p.progress, p.progress_us = progress, now
            return
        if now - p.progress_us <= p.rules.watchdog_us:
            return
        waiting = shell.waiting()
        if vm.vf.port.pending() and shell.pool.posted():
            waiting += vm.vf.port.pending()
        if waiting:
            shell.fault(f"watchdog: no progress for {now - p.progress_us} µs of device time "
                        f"with {waiting} frames waiting")
        else:
            p.progress_us = now  # idle, not stuck

    def _fairness(self, vm: Vm, p: VmPort) -> None:
        """The fuel and the wall time (host calls included) the plugin used per poll, over
        windows of polls: over its share of a host step in either, it is polled less (every
        `throttle` steps, so that it gets about its share), and faulted when it stays over for
        `fair_strikes` windows in a row. DMA faults over `dma_fault_limit` in a window fault it
        at once."""
        r, s = p.rules, vm.shell
        w = p.window
        w[0] += s.fuel - p.fuel_seen
        w[1] += s.stats["polls"] - p.polls_seen
        w[2] += s.wall_s - p.wall_seen
        w[3] += vm.vf.stats.dma_faults - p.dma_faults_seen
        p.fuel_seen, p.polls_seen, p.wall_seen = s.fuel, s.stats["polls"], s.wall_s
        p.dma_faults_seen = vm.vf.stats.dma_faults
        if w[3] > r.dma_fault_limit:
            s.fault(f"DMA faults: {w[3]:,} in a window of {w[1]} polls; the limit is "
                    f"{r.dma_fault_limit:,}")
            return
        if w[1] < r.fair_window_polls:
            return
        fuel, wall_us = w[0] // w[1], int(w[2] * 1e6 / w[1])
        p.window = [0, 0, 0.0, 0]
        over = max(-(-fuel // r.fuel_per_step), -(-wall_us // r.wall_us_per_step))
        if over <= 1:
            p.strikes, p.throttle = 0, 1
            return
        p.strikes += 1
        if p.strikes >= r.fair_strikes:
            s.fault(f"fairness: {fuel:,} fuel and {wall_us:,} µs per poll over {p.strikes} "
                    f"windows of {r.fair_window_polls} polls, polled every {p.throttle} steps; "
                    f"the share is {r.fuel_per_step:,} fuel and {r.wall_us_per_step:,} µs per host step")
        p.throttle = min(over, 64)

    def may_poll(self, vm: Vm, step: int) -> bool:
        """Whether the host polls this VM's data path on `step` (a plugin over its share of the
        host is polled every `throttle` steps)."""
        p = self.ports[vm.index]
        return p.throttle == 1 or p.mode != PLUGIN or step % p.throttle == 0

    # -- control path --------------------------------------------------------------------------
    def serve(self, vm: Vm) -> None:
        """Answer every request waiting on the VM's control channel. The guest is untrusted too:
        a frame that is not a valid request is answered with an error and counted, no more."""
        p = self.ports[vm.index]
        while p.host.pending():
            msg_id, rule = 0, None
            try:
                msg_id, msg = p.host.recv()
                rule, message = self._request(vm, p, msg)
                status = "refused" if rule else "ok"
            except (ValueError, PermissionError, NpaError) as e:  # ChannelError included
                message, status = str(e), "error"
                msg_id = getattr(e, "msg_id", msg_id)
                p.control_errors += 1
            p.host.send(Reply(id=msg_id, status=status, rule=rule, message=message), msg_id)

    def _refuse(self, vm: Vm, field_name: str, why: str) -> tuple[str, str]:
        return f"vm.{vm.name}.{field_name}", why

    def _request(self, vm: Vm, p: VmPort, msg: Request) -> tuple[str | None, str]:
        r, nic, vf = p.rules, self.nic, vm.vf
        if isinstance(msg, SetMac):
            mac = parse_mac(msg.mac)
            allowed = r.mac_ints or (vm.mac,)
            if mac not in allowed:
                return self._refuse(vm, "mac", f"{msg.mac} is not among {', '.join(format_mac(m) for m in allowed)}")
            nic.set_vf_mac(vf, mac)
            vm.mac = mac
        elif isinstance(msg, SetRxMode):
            if (msg.promisc or msg.allmulti) and not r.trust:
                return self._refuse(vm, "trust", "an untrusted VF gets no promiscuous or all-multicast mode")
            nic.set_vf_rx_mode(vf, msg.promisc, msg.allmulti)
        elif isinstance(msg, AddVlan):
            if r.vlan:
                return self._refuse(vm, "vlan", f"port VLAN {r.vlan} is set: the guest does not tag")
            if msg.vid not in r.guest_vlans:
                return self._refuse(vm, "guest_vlans", f"VLAN {msg.vid} is not among {list(r.guest_vlans)}")
            nic.set_vf_vlan_filter(vf, vf.port.policy.vlans | {msg.vid})
        elif isinstance(msg, RemoveVlan):
            nic.set_vf_vlan_filter(vf, vf.port.policy.vlans - {msg.vid})
        elif isinstance(msg, SetMulticast):
            groups = {int(g.replace(":", ""), 16) for g in msg.groups}
            if not all(map(is_group, groups)):
                raise ValueError("multicast list holds a unicast address")
            if len(groups) > r.multicast_limit:
                return self._refuse(vm, "multicast_limit", f"{len(groups)} groups; the limit is {r.multicast_limit}")
            nic.set_vf_multicast(vf, groups)
        elif isinstance(msg, SetMtu):
            if msg.mtu > r.max_mtu:
                return self._refuse(vm, "max_mtu", f"MTU {msg.mtu} is above {r.max_mtu}")
            if msg.mtu + 14 > vm.shell.frame_size:
                return self._refuse(vm, "max_mtu", f"MTU {msg.mtu} does not fit the guest's "
                                    f"{vm.shell.frame_size}-byte frame buffers")
            nic.set_vf_max_frame(vf, msg.mtu + 14)
        else:
            raise ValueError(f"{msg.kind} is not a request")
        return None, ""

