"""The conformance bench: one VM on one VF of a NIC model, its traffic looped back to it.

The VF's embedded switch runs in VEPA mode behind a reflective-relay uplink, so every frame the
plugin sends comes back to the same VF: one plugin instance both sends and receives, and every
difference between what the guest handed over and what came back is that plugin's doing (or its
NIC's, which the rig counts). The null VF has no wire: its rig only completes TX, and the checks
that need frames to come back skip on it.

The rig plays the hypervisor too: when the shell reports a plugin fault that is a status (not a
trap), it can reset the plugin and initialise it again, as a hypervisor would before giving up.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from npa.nic_model.frames import Frames
from npa.nic_model.null import NullVf
from npa.nic_model.sriov import MODELS as SRIOV_MODELS
from npa.nic_model.sriov import SriovNic
from npa.nic_model.vf import pci_id
from npa.runtime.guest import Flow, Sink, build
from npa.runtime.sandbox import Budgets, ImageReport, Plugin, RegionPlan, Sandbox, analyse
from npa.runtime.shell import Shell
from npa.shell_api import Status

MODELS = {**SRIOV_MODELS, NullVf.MODEL: NullVf}
MAC = 0x02_00_00_00_00_01
BASES = (0x10000, 0x80000)  # two places the hypervisor may inject the plugin
FUEL = 5_000_000  # per export call: a poll of 256 frames needs far less
DEADLINE_S = 0.5
STALL_STEPS = 200  # steps without progress before the rig calls traffic stuck
SUITE_BUDGET_S = 55.0  # the whole suite, whatever the plugin does (plus one call's deadline)
_deadline = [float("inf"), SUITE_BUDGET_S]  # when the running suite's budget runs out, and it


def start_clock(budget_s: float = SUITE_BUDGET_S) -> None:
    """The suite starts: its time budget runs from now."""
    _deadline[:] = [time.monotonic() + budget_s, budget_s]


def check_clock() -> None:
    if time.monotonic() > _deadline[0]:
        raise Violation(f"out of time: the suite's {_deadline[1]:g} s budget ran out "
                        "(slow export calls add up)")


class Violation(AssertionError):
    """A rule of the Shell API the plugin broke; the message says which and how."""


@dataclass
class Target:
    """The image under test and the NIC model it runs on."""

    path: Path
    image: bytes
    report: ImageReport
    model: str | None  # None: no NIC model here drives it
    model_note: str = ""  # why `model` was chosen, or why there is none

    @classmethod
    def open(cls, path: str | Path, nic: str | None = None) -> "Target":
        path = Path(path)
        image = path.read_bytes()
        report = analyse(image)
        if nic is not None:
            if nic not in MODELS:
                raise ValueError(f"unknown NIC model {nic!r}; known: {', '.join(MODELS)}")
            return cls(path, image, report, nic, "given with --nic")
        if report.manifest is None:
            return cls(path, image, report, None, "no manifest to match a NIC model against")
        ids = {str(d) for d in report.manifest.devices}
        match = [name for name, m in MODELS.items() if pci_id(m) in ids]
        if not match:
            return cls(path, image, report, None, f"no NIC model here has the ids it lists "
                       f"({', '.join(sorted(ids))}); known: " +
                       ", ".join(f"{n} {pci_id(m)}" for n, m in MODELS.items()))
        return cls(path, image, report, match[0], f"matched {pci_id(MODELS[match[0]])} in the manifest")

    @property
    def pci_id(self) -> str:
        return pci_id(MODELS[self.model])

    @property
    def drives_model(self) -> bool:
        """The manifest lists the model's ids (else the hypervisor would never load it)."""
        m = self.report.manifest
        return m is not None and self.model is not None and self.pci_id in {str(d) for d in m.devices}

    @property
    def wired(self) -> bool:
        return self.model is not None and MODELS[self.model] is not NullVf


@dataclass
class Call:
    export: str
    args: tuple[int, ...]
    result: int | None
    fuel: int
    host_calls: int
    logs: int
    moved: int  # frames taken from tx plus frames put on rx (npa_poll)
    entries: int = 0  # entries it moved across all four shell rings
    imports: list[tuple[str, tuple[int, ...]]] = field(default_factory=list)  # Shell API calls


RECORDED = ("mmio_read32", "mmio_write32", "dma_alloc", "dma_free", "udelay")
MAX_RECORDED = 4096  # Shell API calls kept per export call


class Meter:
    """A plugin's exports as the shell calls them, recording fuel, host calls and every Shell
    API call (name and arguments) per export call."""

    def __init__(self, host):
        """Before the plugin is loaded: its Shell API calls go through the recorder."""
        self.host, self.log = host, []
        self.current: list[tuple[str, tuple[int, ...]]] | None = None
        for name in RECORDED:
            setattr(host, name, self._recorder(name, getattr(host, name)))

    def _recorder(self, name: str, real):
        def record(*args):
            if self.current is not None and len(self.current) < MAX_RECORDED:
                self.current.append((name, args))
            return real(*args)
        return record

    def attach(self, plugin: Plugin, rings) -> "Meter":
        self.plugin, self.rings = plugin, rings
        return self

    def _indices(self) -> tuple[int, ...]:
        r = self.rings
        return (r["tx"].consumer(), r["fill"].consumer(), r["txc"].producer(), r["rx"].producer())

    def _call(self, export: str, *args: int) -> int | None:
        check_clock()
        calls = self.host.calls
        before, logs = calls.total(), calls["log"]
        idx = self._indices()
        fn = self.plugin.calls[export]
        result, self.current = None, []
        try:
            result = fn(*args)
            return result
        finally:
            moved = [(b - a) & 0xFFFFFFFF for a, b in zip(idx, self._indices())]
            self.log.append(Call(export, args, result, fn.fuel_used(), calls.total() - before,
                                 calls["log"] - logs, moved[0] + moved[3], sum(moved),
                                 self.current))
            self.current = None

    def npa_init(self, cfg_addr: int) -> int:
        return self._call("npa_init", cfg_addr)

    def npa_poll(self, queue: int, budget: int) -> int:
        return self._call("npa_poll", queue, budget)

    def npa_intr(self, vector: int) -> int:
        return self._call("npa_intr", vector)

    def npa_quiesce(self) -> int:
        return self._call("npa_quiesce")

    def npa_reset(self) -> int:
        return self._call("npa_reset")

    def polls(self) -> list[Call]:
        return [c for c in self.log if c.export == "npa_poll"]


class Rig:
    def __init__(self, target: Target, *, base: int = BASES[0], ring_size: int = 256,
                 frames: int = 2048, budget: int = 256, interrupts: bool = False,
                 sizes=(60,), fuel: int = FUEL):
        if target.model is None:
            raise Violation(f"no NIC model to run on: {target.model_note}")
        self.target = target
        model = MODELS[target.model]
        if model is NullVf:
            self.nic, self.vf = None, NullVf()
            reset = None
        else:
            self.nic = SriovNic(target.model, 1, uplink="loopback", switch_mode="vepa")
            self.vf = self.nic.vfs[0]
            self.nic.set_vf_mac(self.vf, MAC)
            reset = self.vf.reset
        self.box = Sandbox(RegionPlan().at(base), bar=self.vf)
        self.shell = Shell(self.box, ring_size=ring_size, frames=frames, budget=budget,
                           reset_vf=reset, clock=lambda: self.nic.now_us if self.nic else 0)
        self.flow = Flow(0, MAC, MAC, 1 << 40, np.asarray(sizes, np.int64))
        self.sink = Sink(MAC, [self.flow])
        self.received: list[Frames] = []
        recorder = Meter(self.box.host)
        self.plugin = self.box.load(target.report, budgets=Budgets(fuel, DEADLINE_S))
        self.meter = recorder.attach(self.plugin, self.shell.rings)
        self.interrupts = interrupts
        self.recover = False  # play the hypervisor: npa_reset + npa_init after a status fault
        self.steps = 0

    @property
    def host(self):
        return self.box.host

    # -- lifecycle -----------------------------------------------------------------------------
    def attach(self) -> None:
        m = self.target.report.manifest
        if not self.shell.attach(self.meter, m.features, f"{m.name} at 0x{self.plugin.base:x}"):
            raise Violation(f"npa_init failed: {self.faults()[-1]}")

    def quiesce(self) -> None:
        before = len(self.faults())
        self._take(self.shell.quiesce())
        if len(self.faults()) > before:
            raise Violation(self.faults()[-1])

    def faults(self) -> list[str]:
        return [e.reason for e in self.shell.events if e.kind == "fault"]

    # -- traffic -------------------------------------------------------------------------------
    def offer(self, n: int, frames: Frames | None = None) -> int:
        """Hand the flow's next `n` frames (or `frames`) to the shell; returns how many it took."""
        f = self.flow
        burst = frames if frames is not None else build(f, f.sent, n)
        took = self.shell.transmit(burst)
        f.sent += took
        return took

    def step(self) -> None:
        """One host step: poll (always, or only when an interrupt asked), then the NIC's tick."""
        shell = self.shell
        if shell.active and (shell.need_poll or not self.interrupts):
            self._take(shell.poll())
        if self.nic is not None:
            self.nic.step()
            if fired := self.vf.take_msix():
                shell.interrupt(fired)
        self.host.refill_log_tokens()
        self.steps += 1
        if self.recover and not shell.active:
            self._recover()

    def _recover(self) -> None:
        reason = self.faults()[-1] if self.faults() else ""
        if " returned " not in reason:
            raise Violation(f"the plugin faulted instead of reporting a status: {reason}")
        status = self.meter.npa_reset()
        if status != Status.OK:
            raise Violation(f"npa_reset after '{reason}' returned {Status.describe(status)}")
        self.attach()

    def _take(self, frames: Frames) -> None:
        if len(frames):
            self.received.append(frames)
            self.sink.receive(frames)

    def _progress(self) -> tuple[int, int]:
        return self.sink.frames, self.shell.stats["tx_done"] + self.shell.stats["tx_unsent"]

    def _back(self) -> int:
        """Frames that came back: received on a wire, completed without one; plus those a
        fault or a device drop took out of the loop, which `problems` accounts for."""
        st = self.shell.stats
        gone = st["tx_abandoned"] + (self.vf.stats.dma_faults if self.nic is not None else 0)
        return (self.sink.frames if self.nic is not None else st["tx_done"]) + gone

    def deliver(self, n: int, burst: int = 256, frames: Frames | None = None) -> None:
        """Send `n` more frames (the flow's, or `frames`) in bursts of at most `burst` as the
        shell takes them, stepping until every one is back (see `drain`)."""
        goal, offered, idle = self.flow.sent + n, 0, 0
        while self.flow.sent < goal and idle < STALL_STEPS:
            check_clock()
            k = min(burst, goal - self.flow.sent)
            part = frames.take(slice(offered, offered + k)) if frames is not None else None
            took = self.offer(k, part) if self.shell.active else 0
            offered += took
            before = self._progress()
            self.step()
            idle = 0 if took or self._progress() != before else idle + 1
        self.drain()

    def drain(self) -> None:
        """Step until every frame the shell took is back (received on a wire, completed
        without one); a Violation if nothing moves for STALL_STEPS steps first."""
        idle = 0
        while self._back() < self.flow.sent and idle < STALL_STEPS:
            check_clock()
            before = self._progress()
            self.step()
            idle = 0 if self._progress() != before else idle + 1
        if self._back() < self.flow.sent:
            raise Violation(f"traffic stopped: {self.flow.sent - self._back()} of the "
                            f"{self.flow.sent} frames sent never came back (waited {idle} steps)"
                            + (f"; plugin fault: {self.faults()[-1]}" if self.faults() else ""))

    def poll(self) -> None:
        self._take(self.shell.poll())

    def settle(self, steps: int = 8) -> None:
        for _ in range(steps):
            self.step()

    # -- verdicts ------------------------------------------------------------------------------
    def problems(self) -> list[str]:
        """What went wrong with the flow and the shell so far, each as a phrase."""
        out = []
        c = self.sink.check[self.flow.id]
        if self.nic is not None:
            if lost := self.sink.lost(self.flow.id):
                out.append(f"{lost} frames lost")
            for what, k in (("duplicated", c.duplicates), ("out of order", c.reordered),
                            ("corrupted", c.corrupted), ("unexpected", self.sink.unexpected)):
                if k:
                    out.append(f"{k} frames {what}")
        out += [f"{n}x refused on {why}" for why, n in sorted(self.shell.refused.items())]
        if self.shell.stats["tx_abandoned"]:
            out.append(f"{self.shell.stats['tx_abandoned']} frames abandoned by a plugin fault")
        return out

    def expect_clean(self, what: str) -> None:
        faults = [] if self.recover else self.faults()
        if probs := self.problems() + [f"plugin fault: {f}" for f in faults]:
            raise Violation(f"{what}: " + "; ".join(probs))

    def expect_conserved(self) -> None:
        held = self.shell.held_by_plugin()
        total = sum(self.shell.holdings().values())
        if held or total != self.shell.nframes:
            raise Violation(f"{held} pool frames still held by the plugin or its NIC "
                            f"({total} of {self.shell.nframes} accounted for)")

    def received_frames(self) -> Frames:
        return Frames.concat(self.received)

    def close(self) -> None:
        if self.nic is not None:
            self.nic.close()


def first_difference(sent: Frames, got: Frames) -> str | None:
    """None when `got` is `sent` frame for frame, byte for byte; else where they first differ."""
    if len(got) != len(sent):
        return f"{len(sent)} frames sent, {len(got)} received"
    bad = np.flatnonzero(got.lens != sent.lens)
    if len(bad):
        i = int(bad[0])
        return f"frame {i}: {sent.lens[i]} bytes sent, {got.lens[i]} received"
    width = min(sent.data.shape[1], got.data.shape[1])
    body = np.arange(width) < sent.lens[:, None]
    diff = (sent.data[:, :width] != got.data[:, :width]) & body
    if diff.any():
        i, j = (int(x) for x in np.argwhere(diff)[0])
        return f"frame {i} ({sent.lens[i]} bytes): byte {j} differs"
    return None

