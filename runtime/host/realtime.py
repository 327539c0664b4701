"""A host process's loop (`npa host`): one NIC on a real network through its uplink (a TAP
device, or UDP datagrams to peer hosts), VMs each reachable at an IPv4 address through its
guest stack, and the hypervisor; paced to real time.

While there is work it steps as fast as it can (frames in flight, replies queued, frames at a
port); idle, it sleeps in `select` on the uplink's descriptor, the control socket and its
timers, so an idle host uses no core.
"""
from __future__ import annotations

import ipaddress
import logging
import os
import select
import time
from dataclasses import asdict, dataclass, field

from npa.nic_model.frames import Frames
from npa.nic_model.sriov import SriovNic
from npa.runtime.guest.linux import GuestState, LinuxGuest
from npa.runtime.guest.stack import IpStack
from npa.runtime.hypervisor import Hypervisor, Policy, Vm, format_mac
from npa.runtime.hypervisor.control import MAX_GROUPS, Reply, SetMac, SetMtu, SetMulticast, SetRxMode
from npa.runtime.hypervisor.stream import Listener, SocketLink
from npa.runtime.sandbox import ImageReport, RegionPlan
from npa.runtime.shell import TX

from .control import ask
from .host import new_vm, polls_now, tick
from .migrate import Incoming, Outgoing

log = logging.getLogger("npa.host")
IDLE_WAIT_S = 0.2  # the longest an idle host sleeps between looks at its timers
LINK_LOOK_S = 0.5  # how often a Linux guest's link is looked at (its multicast groups change
                   # without a netlink event)
BUSY_STEPS = 64  # steps between two looks at the outside while busy


@dataclass
class NetVm(Vm):
    """A VM reachable on the network: its IP stack and the frames it has yet to send; with a
    Linux guest (`linux`), the stack only names its address and the kernel behind the TAP
    answers instead."""

    stack: IpStack = None
    outbox: list[bytes] = field(default_factory=list)
    linux: LinuxGuest | None = None
    asked: dict = field(default_factory=dict)  # control request id -> what the guest changed
    handover: str = ""  # migrating a Linux guest: the destination's control socket, for its TAP
    events_seen: int = 0  # the shell's events already said (faults go to the log)


class Waking:
    """A migration stream in the loop's select: a message wakes the loop, which steps (and so
    advances the migration) at once."""

    def __init__(self, link):
        self.link = link

    def fileno(self) -> int:
        return self.link.fileno()

    def ready(self, host: "RealtimeHost") -> None:
        host.step()


class Listening:
    """A migration listener in the host loop's select: one connection becomes an `Incoming`."""

    def __init__(self, listener: Listener):
        self.listener = listener

    def fileno(self) -> int:
        return self.listener.fileno()

    def ready(self, host: "RealtimeHost") -> None:
        link = self.listener.accept()
        if link is not None:
            host.migrations.append(Incoming(host, link))
            host.listeners.remove(self)
            self.listener.close()


def ip_mac(address: str) -> int:
    """A VM's MAC from its IPv4 address, 02:00:a:b:c:d (locally administered, unicast): unique
    on a segment shared by several hosts, as long as the addresses are."""
    return 0x02_00_00_00_00_00 | int(ipaddress.IPv4Interface(address).ip)


def addresses(first: str, n: int) -> list[str]:
    """vm0 gets `first` (ADDR/PREFIX), vm1 the next address, and so on, all in its network."""
    iface = ipaddress.IPv4Interface(first)
    out = []
    for i in range(n):
        ip = iface.ip + i
        if ip not in iface.network or ip in (iface.network.network_address, iface.network.broadcast_address):
            raise ValueError(f"{n} VMs from {first}: {ip} is not a host address of {iface.network}")
        out.append(f"{ip}/{iface.network.prefixlen}")
    return out


class RealtimeHost:
    GUEST = "stack"  # its guests are IP stacks (see `runtime.host.migrate`)
    FORWARD_S = 0.01  # a migration source forwards until its old port was quiet this long
    PAGES_PER_STEP = 256.0  # pre-copy pages a loop step hands to the stream's writer thread

    def __init__(self, nic: SriovNic, report: ImageReport, vms: int, first_ip: str, *,
                 policy: Policy | None = None, region: RegionPlan = RegionPlan(),
                 ring_size: int = 256, pool_frames: int = 1024, budget: int = 256,
                 repository=None, guest: str = "stack", name: str = "npa"):
        if report.error is not None:
            raise report.error
        self.nic, self.report = nic, report
        self.region, self.ring_size, self.budget = region, ring_size, budget
        self.hv = Hypervisor(nic, report, policy, repository)
        self.migrations: list = []  # `runtime.host.migrate` Outgoing/Incoming, advanced each step
        self.listeners: list[Listening] = []  # open for an incoming migration
        self.migration_address = "127.0.0.1:0"  # where `listen` opens them
        ips = addresses(first_ip, vms) if vms else []
        self.vms: list[NetVm] = []
        for i, ip in enumerate(ips):
            mac = (self.hv.policy.for_vm(f"vm{i}").mac_ints or (ip_mac(ip),))[0]
            vm = new_vm(NetVm, nic, i, mac, region, ring_size=ring_size, frames=pool_frames,
                        budget=budget, stack=IpStack(mac, ip, clock=lambda: nic.now_us))
            self.vms.append(vm)
        try:
            for vm in self.vms if guest != "stack" else ():
                vm.linux = LinuxGuest(f"{name}-{vm.name}"[:15], vm.mac, vm.shell.mtu - 14,
                                      vm.stack.address,
                                      netns=f"npa-{name}-{vm.name}" if guest == "netns" else None)
        except OSError:
            self.close()
            raise
        self._link_looked = 0.0
        self.handed: dict[int, int] = {}  # Linux guests' TAPs handed over, by MAC, until restored
        self.steps = 0
        self.started = time.monotonic()

    def boot(self) -> None:
        """Each VM boots on the emulated path, then gets its VF and plugin, and announces its
        address (a gratuitous ARP) so that the segment learns where it is."""
        for vm in self.vms:
            self.hv.admit(vm)
            self._deliver(vm, self.hv.offer(vm))
            if vm.linux is None:  # a Linux guest announces itself
                vm.outbox.append(vm.stack.announce())

    # -- the loop ---------------------------------------------------------------------------------
    def step(self) -> None:
        for vm in self.vms:
            if vm.paused:
                continue
            if vm.linux is not None:
                self._from_guest(vm)
            elif vm.stack.pings:
                vm.outbox += vm.stack.pending()
            self._send(vm)
            if polls_now(self.hv, vm, self.steps):
                self._deliver(vm, vm.shell.poll())
                if vm.outbox:  # replies to what arrived go out in this step, not the next:
                    self._send(vm)  # a real network sees a round trip of one step
                    self._deliver(vm, vm.shell.poll())
        tick(self.nic, self.vms, self.hv)
        for vm in self.vms:
            if vm.asked:
                self._answers(vm)
            if len(vm.shell.events) != vm.events_seen:
                self._said(vm)
        self.steps += 1
        for m in self.migrations:
            m.advance()

    def _send(self, vm: NetVm) -> None:
        """The guest's waiting frames onto its shell's transmit path, as many as fit."""
        shell = vm.shell
        if vm.outbox and shell.active:
            sent = shell.transmit(Frames.from_bytes(vm.outbox[:shell.tx_room()]))
            del vm.outbox[:sent]

    def _from_guest(self, vm: NetVm) -> None:
        """What the guest kernel sent, as much as the shell has room for (the rest waits in the
        kernel's queue: npa drops nothing of its own)."""
        if not vm.outbox and vm.shell.active:
            vm.outbox = vm.linux.read(vm.shell.tx_room(), vm.shell.mtu)

    def guest_link(self, vm: NetVm) -> None:
        """The guest changed its link: each change becomes a control request, decided by the
        hypervisor's policy in this step's round (the answer is logged and counted)."""
        port = self.hv.ports[vm.index]
        for what, value in vm.linux.link_changes():
            if what == "mac":
                msg, said = SetMac(mac=format_mac(value)), f"MAC {format_mac(value)}"
            elif what == "mtu":
                msg, said = SetMtu(mtu=max(68, min(value, 65535))), f"MTU {value}"
            elif what == "multicast":
                groups = sorted(value)[:MAX_GROUPS]
                msg = SetMulticast(groups=[format_mac(g) for g in groups])
                said = f"multicast groups ({len(value)})"
            else:
                msg, said = SetRxMode(promisc=value, allmulti=False), f"promiscuous {'on' if value else 'off'}"
            vm.asked[port.guest.send(msg)] = said

    @staticmethod
    def _said(vm: NetVm) -> None:
        """A fault of a VM's plugin is said on stderr when it happens (and counted in `npa
        stat`): the VM goes on on the emulated path."""
        for e in vm.shell.events[vm.events_seen:]:
            if e.kind == "fault":
                log.warning("%s: plugin fault: %s; the VM goes on on the emulated path", vm.name,
                            e.reason)
        vm.events_seen = len(vm.shell.events)

    def _answers(self, vm: NetVm) -> None:
        """The hypervisor's answers to the guest's link requests."""
        port = self.hv.ports[vm.index]
        while (got := port.guest.recv()) is not None:
            msg_id, msg = got
            if not isinstance(msg, Reply) or msg_id not in vm.asked:
                continue
            said = vm.asked.pop(msg_id)
            vm.linux.stats[f"link_{msg.status}"] += 1
            vm.linux.decisions.append(f"{said}: {msg.status}" + (f" ({msg.rule}: {msg.message})" if msg.rule else ""))
            del vm.linux.decisions[:-16]
            if msg.status == "ok":
                log.info("%s: the guest's %s: allowed", vm.name, said)
            else:
                log.warning("%s: the guest's %s: %s by %s: %s", vm.name, said, msg.status,
                            msg.rule or "the hypervisor", msg.message)

    def _deliver(self, vm: NetVm, frames: Frames) -> None:
        if vm.linux is not None:
            if len(frames):
                vm.linux.write(frames.to_bytes())
            return
        rest, replies = vm.stack.receive(frames)
        vm.stack.stats["other_frames"] += len(rest)
        vm.outbox += replies

    def busy(self) -> bool:
        """Frames somewhere between a guest and the wire (posted RX buffers are not work), or a
        migration under way."""
        if any(m.sending for m in self.migrations):
            return True
        return any(vm.outbox or vm.shell.need_poll or len(vm.shell.pool.held(TX))
                   or len(vm.shell.pool.resend) or vm.vf.port.pending() for vm in self.vms) \
            or self.nic.uplink.port.pending() > 0

    def run(self, stop, others: list | None = None, tick=None) -> None:
        """Until `stop()`: step while busy, else wait for the uplink, `others` (objects with
        fileno() and ready()) or the idle timeout; busy, look at `others` every BUSY_STEPS
        steps without waiting. `tick()` runs between waits (live display)."""
        link = self.nic.uplink.fileno()
        waits = [link] if link is not None else []
        while not stop():
            for _ in range(BUSY_STEPS):
                self.step()
                if not self.busy():
                    break
            busy = self.busy()
            if tick is not None and not busy:
                tick()
            # what to wait on, as it is now: a step may have closed a descriptor (a guest's
            # dead TAP, a finished migration's stream), and select on a closed one fails
            guests = {fd: vm for vm in self.vms if vm.linux is not None and not vm.paused
                      and (fd := vm.linux.fileno()) is not None}
            watched = {fd: vm for vm in guests.values() if (fd := vm.linux.watch_fileno()) is not None}
            ours = [*(others or []), *self.listeners,
                    *(Waking(m.link) for m in self.migrations if not m.finished and hasattr(m.link, "fileno"))]
            try:
                ready, _, _ = select.select([*waits, *guests, *watched, *ours], [], [],
                                           0 if busy else IDLE_WAIT_S)
            except InterruptedError:
                continue
            for o in ours:
                if o in ready:
                    o.ready(self)
            look = time.monotonic() > self._link_looked + LINK_LOOK_S
            for vm in guests.values():
                if vm.linux is not None and (look or any(watched.get(fd) is vm for fd in ready)):
                    try:
                        self.guest_link(vm)
                    except Exception as e:  # noqa: BLE001 - netlink trouble: said, the loop goes on
                        log.warning("%s: watching the guest's link: %s", vm.name, e)
            if look:
                self._link_looked = time.monotonic()
            if any(fd == link or fd in guests for fd in ready):
                self.step()  # what arrived is processed at once

    def finish(self) -> None:
        """Quiesce every data path; frames received on the way still reach their guest."""
        for _ in range(1000):
            if not self.busy():
                break
            self.step()
        for vm in self.vms:
            if vm.shell.active:
                self._deliver(vm, vm.shell.quiesce())

    # -- live migration (`npa migrate`, through the control socket) ------------------------------
    def listen(self) -> str:
        """Open a listener for one incoming migration; returns its HOST:PORT."""
        listening = Listening(Listener(self.migration_address))
        self.listeners.append(listening)
        return listening.listener.address

    def migrate(self, vm: str, to: str, handover: str = "") -> None:
        """Start sending `vm` to the host listening at `to` (progress in `status`); a Linux
        guest's TAP goes to the destination's control socket `handover` at the stop-and-copy."""
        match = [v for v in self.vms if v.name == vm and not v.paused]
        if not match:
            raise ValueError(f"no running VM {vm!r} on this host")
        if match[0].linux is not None and not handover:
            raise ValueError(f"{vm}'s guest is a Linux stack: its TAP goes to the destination's "
                             "control socket, which `npa migrate` names (--to)")
        match[0].handover = handover
        if any(not m.finished and getattr(m, "vm", None) is match[0] for m in self.migrations):
            raise ValueError(f"{vm} is migrating already")
        self.migrations.append(Outgoing(self, match[0], SocketLink.connect(to)))

    def settle(self, vm: str, how: str) -> str:
        """A VM whose migration ended uncertain: `resume` it here (the destination does not run
        it) or `release` it (the destination does)."""
        match = [m for m in self.migrations if isinstance(m, Outgoing) and m.vm.name == vm
                 and m.phase == "uncertain"]
        if not match:
            raise ValueError(f"no migration of {vm!r} ended uncertain on this host")
        return match[-1].resume() if how == "resume" else match[-1].let_go()

    # -- the guest's side of a migration (`runtime.host.migrate.GuestHost`) ---------------------
    def clock(self) -> float:
        return time.monotonic()

    def deliver(self, vm: NetVm, frames: Frames) -> None:
        self._deliver(vm, frames)

    def hand_over(self, vm: NetVm) -> None:
        """The destination accepted `vm`: a Linux guest's TAP goes to it now, through its
        control socket, before pre-copy (a round trip to a busy host is no part of the pause).
        The destination holds it unused until the VM runs there; only then does the guest's
        queue change readers (this host stops reading at the pause). Should the migration fail,
        the destination closes its copy and the guest goes on here."""
        if vm.linux is None:
            return
        if (fd := vm.linux.fileno()) is None:
            raise OSError(f"{vm.name}'s guest device is gone: nothing to hand over")
        r = ask(vm.handover, "take_guest", mac=vm.mac, fds=[fd])
        if not r.ok:
            raise OSError(f"handing {vm.name}'s TAP to the destination: {r.error}")

    def guest_state(self, vm: NetVm) -> tuple[dict, list[bytes]]:
        """The guest's state (a Linux guest's: where its TAP and namespace are; the TAP went at
        `hand_over`). The VM is paused: what the guest sends meanwhile waits in the kernel."""
        state = {"stack": vm.stack.snapshot()}
        if vm.linux is not None:
            state["linux"] = vm.linux.state().model_dump()
        return state, list(vm.outbox)

    def take_guest(self, mac: int, fd: int) -> None:
        """A migration source hands a Linux guest's TAP over (before pre-copy; its state comes
        at the pause). Netlink's library is loaded now, not then: it takes 100-200 ms."""
        import pyroute2  # noqa: F401
        if (old := self.handed.pop(mac, None)) is not None:
            os.close(old)
        if len(self.handed) >= 64:  # never restored: the oldest goes
            os.close(self.handed.pop(next(iter(self.handed))))
        self.handed[mac] = fd

    def gone(self, vm: NetVm) -> None:
        """The VM runs elsewhere (or never ran here): let its Linux guest go, not end it."""
        if (fd := self.handed.pop(vm.mac, None)) is not None:  # handed over, never restored
            os.close(fd)
        if vm.linux is not None:
            vm.linux.release()
            vm.linux = None

    def new_guest_vm(self, hello, vf) -> NetVm:
        return new_vm(NetVm, self.nic, vf.index, hello.mac, self.region, ring_size=self.ring_size,
                      frames=hello.frames, frame_size=hello.frame_size, budget=self.budget,
                      stack=IpStack(hello.mac, hello.ip or "0.0.0.0/32", clock=lambda: self.nic.now_us))

    def restore_guest(self, vm: NetVm, state: dict, outbox: list[bytes]) -> None:
        vm.stack = IpStack.restore(state["stack"], clock=lambda: self.nic.now_us)
        if vm.stack.mac != vm.mac:
            raise ValueError("guest state: the stack's MAC is not the VM's")
        if any(not 14 <= len(f) <= vm.shell.mtu for f in outbox):
            raise ValueError(f"guest state: an outbox frame outside 14..{vm.shell.mtu} bytes")
        if "linux" in state:  # last: nothing after it can fail and leave the TAP adopted
            linux = GuestState.model_validate(state["linux"])
            fd = self.handed.pop(vm.mac, None)
            if fd is None:
                raise ValueError(f"guest state: {vm.name}'s TAP was not handed over")
            vm.linux = LinuxGuest.adopt(fd, linux, vm.mac)
            self._link_looked = 0.0  # its link is looked at on the next wake-up
        vm.outbox = outbox

    # -- what it reports --------------------------------------------------------------------------
    def status(self) -> dict:
        """What `npa stat` shows (schema npa.stat/1): the VMs, each VF's and switch port's
        counters (drops by reason), the data-path mode changes with their reasons, migrations."""
        return {
            "uptime_s": round(time.monotonic() - self.started, 3), "steps": self.steps,
            "nic": self.nic.model.MODEL, "plugin": self.report.manifest.name,
            "uplink": self.nic.uplink.stats,
            "migrations": [m.status() for m in self.migrations],
            "vms": [{"name": vm.name, "ip": vm.stack.address, "pings": vm.stack.pings,
                     "mac": format_mac(vm.mac),
                     "vf": vm.vf.name, "data_path": self.hv.mode(vm),
                     "faults": sum(e.kind == "fault" for e in vm.shell.events),
                     "tx_frames": vm.shell.stats["tx_frames"], "rx_frames": vm.shell.stats["rx_frames"],
                     "modes": [asdict(m) for m in self.hv.modes(vm)[-16:]],
                     "guest": self._guest_status(vm),
                     **dict(vm.stack.stats)} for vm in self.vms],
            "vfs": [{"name": vf.name, "pci_id": vf.pci_id, **asdict(vf.stats)} for vf in self.nic.vfs],
            "ports": [{"name": p.name, "kind": p.kind, **asdict(p.stats)}
                      for p in self.nic.switch.ports],
        }

    @staticmethod
    def _guest_status(vm: NetVm) -> dict:
        g = vm.linux
        if g is None:
            return {"kind": "stack"}
        return {"kind": g.kind, "where": g.where, "link_decisions": list(g.decisions),
                **dict(g.stats)}

    def ping(self, vm: str, target: str, count: int) -> None:
        """vm pings target (`npa host --control`'s `ping`): results show in `status`."""
        match = [v for v in self.vms if v.name == vm]
        if not match:
            raise ValueError(f"no VM {vm!r} on this host")
        if match[0].linux is not None:
            raise ValueError(f"{vm}'s guest is a Linux stack: run ping inside it "
                             f"(ip netns exec {match[0].linux.where} ping ...)")
        match[0].stack.ping(target, count)

    def conserved(self) -> bool:
        return all(vm.shell.held_by_plugin() == 0 for vm in self.vms)

    def close(self) -> None:
        for listening in self.listeners:
            listening.listener.close()
        for m in self.migrations:
            if not m.finished:
                m.link.close("the host stopped")
        for vm in self.vms:
            if vm.linux is not None:
                vm.linux.close()
        for fd in self.handed.values():
            os.close(fd)
        self.handed.clear()
        self.nic.close()
