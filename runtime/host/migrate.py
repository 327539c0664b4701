"""Live migration of one VM to another host, whose NIC may be another vendor's.

`Outgoing` runs on the source host and `Incoming` on the destination; each host advances its
migrations once per loop step, so the VMs on both hosts keep running while memory is copied.

Source: hello; on accept the VF is revoked (plugin quiesced, frames settled once) and the VM goes
on on the emulated path while pre-copy rounds send its memory (round 0 every page, then what the
dirty log caught); when a round leaves few dirty pages (or after `max_rounds`) the VM is paused,
the last dirty pages and its state (pool, guest, frames waiting at its port) are sent, and the
source waits. Destination: admits the VM on a free VF with its port held, restores it, injects
the plugin its own repository holds for its own NIC, announces the MAC, says `resumed`. The
source then forwards whatever still reaches the VM's old port until it was quiet for FORWARD_S,
frees the VF and says `done`. Forwarded frames reach the VM as they come; those that came to the
destination directly (newer than any forwarded) wait at the held port until `done`. Nothing is lost, duplicated or reordered, and a failure at any point before `resumed`
leaves the VM running on the source (on its plugin again) with the reason.

The host supplies the guest's part (`GuestHost`): its state, its clock, where frames go.
"""
from __future__ import annotations

import ipaddress
import time
from typing import Protocol

import numpy as np

from npa.nic_model.frames import Frames, is_group
from npa.runtime.hypervisor import EMULATED, Hypervisor, Vm, format_mac
from npa.runtime.hypervisor import migration as hvm
from npa.runtime.hypervisor.stream import (
    MAX_FRAMES,
    PAGES_PER_MESSAGE,
    Abort,
    Accept,
    Done,
    Forward,
    Hello,
    Pages,
    Refuse,
    Resumed,
    Round,
    State,
    brief,
)
from npa.runtime.sandbox import LoadError, NpaError, PluginFault
from npa.runtime.shell.guest_memory import PAGE

MAX_ROUNDS = 8  # pre-copy rounds before the VM is paused whatever is still dirty
STOP_PAGES = 32  # dirty pages few enough to copy with the VM paused
MAX_GUEST_MEMORY = 256 << 20  # the largest guest memory a destination takes
FORWARD_MAX = 10  # forwarding ends after this many FORWARD_S, quiet or not


class GuestHost(Protocol):
    """What a host gives migration: its hypervisor, its VMs, and the guest's side of them."""

    hv: Hypervisor
    vms: list
    GUEST: str  # "traffic" or "stack": which guest this host runs
    FORWARD_S: float  # a source forwards until no frame reached the old port for this long
    PAGES_PER_STEP: float  # pre-copy pages a step sends: the stream's bandwidth, the VMs run between

    def clock(self) -> float: ...
    def deliver(self, vm: Vm, frames: Frames) -> None: ...
    def guest_state(self, vm: Vm) -> tuple[dict, list[bytes]]: ...
    def new_guest_vm(self, hello: Hello, vf) -> Vm: ...
    def restore_guest(self, vm: Vm, state: dict, outbox: list[bytes]) -> None: ...
    def gone(self, vm: Vm) -> None: ...  # the VM left this host (moved, or not admitted after all)
    def hand_over(self, vm: Vm) -> None: ...  # the destination accepted: what it needs beforehand


def _handled(vm: Vm) -> int:
    s = vm.shell.stats
    return s["tx_frames"] + s["rx_frames"] + s["tx_resent"]


def _u32(idx: np.ndarray) -> bytes:
    return idx.astype("<u4").tobytes()


def _frames(frames: Frames) -> list[bytes]:
    return frames.to_bytes() if len(frames) else []


class _Migration:
    def __init__(self, host: GuestHost, link):
        self.host, self.hv, self.link = host, host.hv, link
        self.phase = ""
        self.report: dict = {"phases": [], "wall": [], "outcome": "", "reason": ""}

    @property
    def finished(self) -> bool:
        return self.phase in ("done", "failed", "uncertain")

    @property
    def sending(self) -> bool:
        """The host must keep stepping for it (else it waits for the other host's messages)."""
        return self.phase in ("precopy", "paused", "forwarding") and isinstance(self, Outgoing)

    def _mark(self, phase: str) -> None:
        """A phase begins: its time on the host's clock, and on the wall (what a run costs)."""
        self.phase = phase
        self.report["phases"].append([phase, self.host.clock()])
        self.report["wall"].append(time.perf_counter())

    def advance(self) -> None:
        """One step of the migration; never raises (a failure is an outcome with its reason)."""
        if self.finished and not self._watching():
            return
        try:
            self._track()
            if not self.finished:
                getattr(self, "_" + self.phase)()
        except Exception as e:  # noqa: BLE001 - whatever the other host sent, the loop goes on
            plain = isinstance(e, (ValueError, NpaError, OSError)) and str(e)
            self._fail(str(e) if plain else f"{type(e).__name__}: {e}")

    def _watching(self) -> bool:
        return False

    def _abort(self, reason: str) -> None:
        """Tell the other host why, if the link still carries anything, and close it. Never
        raises: it runs on the failure path."""
        try:
            self.link.send(Abort(reason=brief(reason)))
        except Exception:  # noqa: BLE001 - a dead link, or a reason no message can hold
            pass
        self.link.close(brief(reason))

    def _track(self) -> None:
        pass

    def _next(self, *expected):
        """The next message if it is one of `expected` (None: none yet); anything else, or the
        link ending, is a failure."""
        msg = self.link.poll()
        if msg is None:
            if self.link.closed:
                raise OSError(f"migration stream: {self.link.error}")
            return None
        if isinstance(msg, Abort):
            raise NpaError(f"the other host aborted: {msg.reason}")
        if not isinstance(msg, expected):
            raise NpaError(f"migration stream: a {msg.kind} message in phase {self.phase}")
        return msg


class Outgoing(_Migration):
    def __init__(self, host: GuestHost, vm: Vm, link, *, max_rounds: int = MAX_ROUNDS,
                 stop_pages: int = STOP_PAGES):
        super().__init__(host, link)
        self.vm, self.max_rounds, self.stop_pages = vm, max_rounds, stop_pages
        self.guest = vm.shell.dp.guest
        self._departed, self._round, self._todo = False, 0, np.zeros(0, np.int64)
        self._credit = 0.0  # pages this step may still send
        self._queued, self._forwarded = Frames.empty(), 0
        self._seen, self._resumed_at, self._forward_until = _handled(vm), 0.0, 0.0
        self.report.update(vm=vm.name, mac=format_mac(vm.mac), rounds=[], last_frame=host.clock(),
                           source={"nic": self.hv.nic.model.MODEL, "plugin": self.hv.ports[vm.index].report.manifest.name,
                                   "vf": vm.vf.index, "mode": self.hv.mode(vm)})
        self._mark("accepting")
        stack = getattr(vm, "stack", None)
        link.send(Hello(vm=vm.name, mac=vm.mac, ip=stack.address if stack else "", guest=host.GUEST,
                        rules=self.hv.ports[vm.index].rules.model_dump(mode="json"),
                        frames=vm.shell.nframes, frame_size=vm.shell.frame_size,
                        nic=self.report["source"]["nic"], plugin=self.report["source"]["plugin"]))

    def _track(self) -> None:
        if (n := _handled(self.vm)) != self._seen:
            self._seen, self.report["last_frame"] = n, self.host.clock()

    # -- phases -----------------------------------------------------------------------------------
    def _accepting(self) -> None:
        msg = self._next(Accept, Refuse)
        if isinstance(msg, Refuse):
            self._fail(f"the destination refused {self.vm.name}: {msg.reason}")
        elif msg is not None:
            self.report["destination"] = {"nic": msg.nic, "plugin": msg.plugin, "vf": msg.vf}
            self.host.hand_over(self.vm)  # before the VM departs: a failure leaves it as it was
            self.host.deliver(self.vm, hvm.depart(self.hv, self.vm))
            self._departed = True
            self._todo = self.guest.take_dirty()
            self._mark("precopy")
            self._start_round()

    def _start_round(self) -> None:
        self.report["rounds"].append({"round": self._round, "pages": len(self._todo), "zero_pages": 0,
                                      "bytes": 0, "start": self.host.clock()})

    def _precopy(self) -> None:
        self._next()  # only an abort or the link ending can come now
        if self._send_some():
            return
        r = self.report["rounds"][-1]
        self.link.send(Round(round=self._round, pages=r["pages"], bytes=r["bytes"]))
        r["seconds"] = self.host.clock() - r.pop("start")
        self._todo = self.guest.take_dirty()
        self._round += 1
        if len(self._todo) <= self.stop_pages or self._round >= self.max_rounds:
            self._pause()
        else:
            self._start_round()

    def _send_some(self) -> bool:
        """Send the pages this step's share of the stream's bandwidth allows; True while some of
        the round are left."""
        self._credit = min(self._credit + self.host.PAGES_PER_STEP, PAGES_PER_MESSAGE)
        if (n := min(int(self._credit), len(self._todo))):
            self._send_pages(self._todo[:n])
            self._todo, self._credit = self._todo[n:], self._credit - n
        return bool(len(self._todo))

    def _send_pages(self, idx: np.ndarray) -> None:
        rows = self.guest.pages(idx)
        zero = ~rows.any(axis=1)
        self.link.send(Pages(round=self._round, index=_u32(idx[~zero]), data=rows[~zero].tobytes(),
                             zero=_u32(idx[zero])))
        r = self.report["rounds"][-1]
        r["zero_pages"] += int(zero.sum())
        r["bytes"] += int((~zero).sum()) * PAGE + 4 * len(idx)

    def _pause(self) -> None:
        """Stop the VM: its last dirty pages go at the stream's pace while it is paused."""
        self._mark("paused")
        self.vm.paused = True
        got, self._queued = hvm.pause(self.hv, self.vm)
        self.host.deliver(self.vm, got)
        self._track()
        self._todo = np.union1d(self._todo, self.guest.take_dirty()).astype(np.int64)
        self._start_round()
        self.report["rounds"][-1]["stop_and_copy"] = True

    def _paused(self) -> None:
        self._next()
        if self._send_some():
            return
        r = self.report["rounds"][-1]
        r["seconds"] = self.host.clock() - r.pop("start")
        self.link.send(Round(round=self._round, pages=r["pages"], bytes=r["bytes"]))
        guest, outbox = self.host.guest_state(self.vm)
        self.link.send(State(pool=self.vm.shell.pool.snapshot(), guest=guest,
                             queued=_frames(self._queued), outbox=outbox))
        self._mark("resuming")

    def _resuming(self) -> None:
        try:
            msg = self._next(Resumed)
        except OSError as e:
            self._mark("uncertain")
            self.report.update(outcome="uncertain", reason=(
                f"{e}, after {self.vm.name}'s state was sent: the destination may run it; it stays "
                "paused here until `resume`"))
            return
        if msg is not None:
            self.report["destination"].update(mode=msg.mode, plugin=msg.plugin, vf=msg.vf,
                                              reason=msg.reason)
            self._resumed_at = self.host.clock()
            # VMs on this host keep sending to the old port until it is freed: at most this long
            self._forward_until = self._resumed_at + FORWARD_MAX * self.host.FORWARD_S
            self._mark("forwarding")

    def _forwarding(self) -> None:
        """Frames that still reach the old port go to the destination, until the fabric learned."""
        port = self.vm.vf.port
        if len(frames := port.receive(port.pending())):
            self._forward(frames)
            self._resumed_at = self.host.clock()  # quiet for FORWARD_S since the last one
        now = self.host.clock()
        if now - self._resumed_at < self.host.FORWARD_S and now < self._forward_until \
                and not self.link.closed:
            return
        self._let_port_go()
        self.link.send(Done(forwarded=self._forwarded))
        self.link.close()
        self.report["reason"] = f"{self.vm.name} runs on the destination"

    def _let_port_go(self) -> None:
        """The VM runs on the destination: forward the last frames at its old port, free it."""
        self._forward(hvm.release(self.hv, self.vm))
        self.host.vms.remove(self.vm)
        self.host.gone(self.vm)
        self.report.update(outcome="moved", forwarded=self._forwarded)
        self._mark("done")

    def _forward(self, frames: Frames) -> None:
        if self.link.closed:  # the stream dropped: these frames cannot reach the VM any more
            self.report["forward_lost"] = self.report.get("forward_lost", 0) + len(frames)
            return
        for i in range(0, len(frames), MAX_FRAMES):
            self.link.send(Forward(frames=_frames(frames.take(slice(i, i + MAX_FRAMES)))))
        self._forwarded += len(frames)

    # -- failure ----------------------------------------------------------------------------------
    def _fail(self, reason: str) -> None:
        if self.phase in ("forwarding", "done"):  # the VM runs on the destination already
            self.report.setdefault("forward_error", reason)
            self.link.close()
            if self.phase == "forwarding":
                self._let_port_go()
            return
        self._abort(reason)
        self._stay()
        self.report.update(outcome="stayed", reason=f"{reason}; {self.vm.name} stays on the source "
                                                    f"({self.hv.nic.model.MODEL}, {self.hv.mode(self.vm)} path)")
        self._mark("failed")

    def _stay(self) -> None:
        self.vm.paused = False
        if self._departed:
            self.host.deliver(self.vm, hvm.stay(self.hv, self.vm, self._queued))
            self._queued = Frames.empty()

    def resume(self) -> str:
        """After an uncertain end, the operator found the destination does not run the VM."""
        if self.phase != "uncertain":
            raise ValueError(f"{self.vm.name}'s migration is {self.phase}, not uncertain")
        self._stay()
        self.report.update(outcome="stayed", reason=f"{self.vm.name} resumed on the source")
        self._mark("failed")
        return self.report["reason"]

    def let_go(self) -> str:
        """After an uncertain end, the operator found the destination runs the VM: free it here."""
        if self.phase != "uncertain":
            raise ValueError(f"{self.vm.name}'s migration is {self.phase}, not uncertain")
        self.report["forward_lost"] = len(hvm.release(self.hv, self.vm))  # reached it too late
        self.host.vms.remove(self.vm)
        self.host.gone(self.vm)
        self.report.update(outcome="moved", reason=f"{self.vm.name} runs on the destination; "
                                                   "the source let it go")
        self._mark("done")
        return self.report["reason"]

    def status(self) -> dict:
        return {"direction": "out", "phase": self.phase, **self.report}


class Incoming(_Migration):
    def __init__(self, host: GuestHost, link):
        super().__init__(host, link)
        self.vm: Vm | None = None
        self._rules = self._image = self._plugin = None
        self._seen = 0
        self.report.update(rounds=[], first_frame=None, destination={"nic": self.hv.nic.model.MODEL})
        self._mark("hello")

    def _watching(self) -> bool:
        return self.phase == "done" and self.report["first_frame"] is None

    def _track(self) -> None:
        if self.vm is not None and self.phase in ("forwarding", "done") and self.report["first_frame"] is None:
            if _handled(self.vm) != self._seen:
                self.report["first_frame"] = self.host.clock()

    # -- phases -----------------------------------------------------------------------------------
    def _hello(self) -> None:
        msg = self._next(Hello)
        if msg is None:
            return
        self.report.update(vm=msg.vm, mac=format_mac(msg.mac), source={"nic": msg.nic, "plugin": msg.plugin})
        try:
            vf = self._admissible(msg)
        except NpaError as e:
            self.link.send(Refuse(reason=brief(str(e))))
            self.link.close()
            self.report.update(outcome="refused", reason=str(e))
            self._mark("failed")
            return
        self.vm = self.host.new_guest_vm(msg, vf)
        self.vm.name = msg.vm
        # The plugin is instantiated now, while the source pre-copies: not during the pause.
        self.vm.box.host.tag = f"{msg.vm} {self._image.manifest.name}"
        try:
            self._plugin = self.vm.box.load(self._image, budgets=self._rules.budgets())
        except (LoadError, PluginFault) as e:  # it arrives all the same: on the emulated path
            self._plugin = None
            self.report["destination"]["plugin_refused"] = brief(str(e))
        self.report["destination"].update(plugin=self._image.manifest.name, vf=vf.index)
        self.link.send(Accept(nic=self.hv.nic.model.MODEL, plugin=self._image.manifest.name, vf=vf.index))
        self._mark("copying")

    def _admissible(self, hello: Hello):
        """The VF the VM gets here; NpaError why it cannot come."""
        if hello.guest != self.host.GUEST:
            raise NpaError(f"this host runs {self.host.GUEST} guests, not {hello.guest}")
        if any(vm.name == hello.vm for vm in self.host.vms):
            raise NpaError(f"a VM named {hello.vm} runs here already")
        if hello.mac == 0 or is_group(hello.mac):
            raise NpaError(f"MAC {format_mac(hello.mac)} is {'zero' if not hello.mac else 'a group address'}: "
                           "no VM may have it")
        if any(vm.mac == hello.mac for vm in self.host.vms):
            raise NpaError(f"MAC {format_mac(hello.mac)} belongs to a VM here already")
        if hello.ip:
            try:
                ip = ipaddress.IPv4Interface(hello.ip).ip.packed
            except ValueError:
                raise NpaError(f"address {hello.ip!r} is not an IPv4 ADDR/PREFIX") from None
            if any(getattr(getattr(vm, "stack", None), "ip", None) == ip for vm in self.host.vms):
                raise NpaError(f"address {hello.ip} belongs to a VM here already")
        if hello.frames * hello.frame_size > MAX_GUEST_MEMORY:
            raise NpaError(f"guest memory of {hello.frames} x {hello.frame_size} bytes; the limit "
                           f"is {MAX_GUEST_MEMORY >> 20} MiB")
        vf = self.hv.nic.free_vf()
        if vf is None:
            raise NpaError(f"no free VF on this {self.hv.nic.model.MODEL} NIC")
        self._rules = hvm.rules_for(self.hv, hello.vm, hello.mac, hello.rules)
        self._image = self.hv.image_for(vf)
        return vf

    def _copying(self) -> None:
        while (msg := self._next(Pages, Round, State)) is not None:
            if isinstance(msg, Pages):
                self._load(msg)
            elif isinstance(msg, Round):
                self.report["rounds"].append({"round": msg.round, "pages": msg.pages, "bytes": msg.bytes})
            else:
                self._resume(msg)
                return

    def _load(self, msg: Pages) -> None:
        guest = self.vm.shell.dp.guest
        idx = np.frombuffer(msg.index, "<u4").astype(np.int64) if len(msg.index) % 4 == 0 else None
        zero = np.frombuffer(msg.zero, "<u4").astype(np.int64) if len(msg.zero) % 4 == 0 else None
        if idx is None or zero is None or len(msg.data) != len(idx) * PAGE:
            raise NpaError("migration stream: a pages message whose index, zero list and data disagree")
        every = np.concatenate([idx, zero])
        if len(every) > PAGES_PER_MESSAGE or (len(every) and every.max() >= guest.npages):
            raise NpaError(f"migration stream: page numbers beyond the guest's {guest.npages} pages")
        guest.load(idx, np.frombuffer(msg.data, np.uint8).reshape(len(idx), PAGE))
        guest.load(zero, np.zeros((len(zero), PAGE), np.uint8))

    def _resume(self, msg: State) -> None:
        """Restore, admit with the port held, inject this NIC's plugin, announce, say so."""
        vm, hv = self.vm, self.hv
        vm.shell.pool.restore(msg.pool)
        self.host.restore_guest(vm, msg.guest, list(msg.outbox))
        hvm.arrive(hv, vm, self._rules, self._image, self._plugin)
        self._pass(Frames.from_bytes(msg.queued) if msg.queued else Frames.empty())
        self.host.vms.append(vm)
        self.host.deliver(vm, hv.offer(vm))
        hvm.announce(hv, vm)
        self._seen = _handled(vm)
        last = hv.modes(vm)[-1]
        self.report["destination"].update(mode=hv.mode(vm), reason=last.reason)
        self.link.send(Resumed(vf=vm.vf.index, mode=hv.mode(vm), plugin=self._image.manifest.name,
                               reason=brief(last.reason) if hv.mode(vm) == EMULATED else ""))
        self._mark("forwarding")

    def _forwarding(self) -> None:
        try:
            while (msg := self._next(Forward, Done)) is not None:
                if isinstance(msg, Forward):
                    self._pass(Frames.from_bytes(msg.frames))
                    self.report["forwarded"] = self.report.get("forwarded", 0) + len(msg.frames)
                else:
                    self._open(f"{msg.forwarded} frames forwarded")
                    return
        except (OSError, NpaError) as e:  # the VM runs here: it keeps running, the port opens
            self._open(f"the source went away before it was done ({e})")

    def _pass(self, frames: Frames) -> None:
        if (refused := hvm.pass_through(self.vm, frames)):
            self.report["refused_frames"] = self.report.get("refused_frames", 0) + refused

    def _open(self, note: str) -> None:
        hvm.open_port(self.vm)
        self.report.setdefault("forwarded", 0)
        self.report.update(outcome="moved", reason=note)
        self._mark("done")

    def _fail(self, reason: str) -> None:
        if self.phase in ("forwarding", "done"):
            self._open(reason)
            return
        self._abort(reason)
        if self.vm is not None:  # its VF (MAC programmed, maybe admitted) is free again
            hvm.release(self.hv, self.vm)
            if self.vm in self.host.vms:
                self.host.vms.remove(self.vm)
            self.host.gone(self.vm)
        self.vm = None
        self.report.update(outcome="failed", reason=reason)
        self._mark("failed")

    def status(self) -> dict:
        return {"direction": "in", "phase": self.phase, **self.report}


def downtime(out: dict, into: dict) -> float | None:
    """Seconds from the last frame the source handled to the first the destination handled."""
    if into.get("first_frame") is None or out.get("last_frame") is None:
        return None
    return into["first_frame"] - out["last_frame"]

