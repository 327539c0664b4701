"""What a run looked like over device time, for pictures (`npa run --plot`): each VM's received
frame count sampled every few steps, and the moments that explain the curve (data-path mode
changes and faults, migration phases)."""
from __future__ import annotations

from dataclasses import dataclass, field

SAMPLE_STEPS = 20  # 200 µs of device time at the default 10 µs tick


@dataclass
class Timeline:
    every: int = SAMPLE_STEPS
    t_us: list[int] = field(default_factory=list)
    frames: dict[str, list[int]] = field(default_factory=dict)  # VM name -> received, per sample

    def sample(self, step: int, now_us: int, vms) -> None:
        """Every `every` steps: each VM's frames received so far (a VM between hosts keeps its
        last count)."""
        if step % self.every:
            return
        self.t_us.append(now_us)
        n = len(self.t_us)
        counts: dict[str, int] = {}
        for vm in vms:  # a migrating VM is on both hosts for a moment: one count
            counts[vm.name] = max(counts.get(vm.name, 0), vm.sink.frames)
        for name, count in counts.items():
            self.frames.setdefault(name, [0] * (n - 1)).append(count)
        for series in self.frames.values():
            if len(series) < n:
                series.append(series[-1] if series else 0)


@dataclass(frozen=True)
class Mark:
    """A moment (`t1_us` None) or a span of device time, with what happened."""

    t0_us: int
    label: str
    kind: str  # "mode", "fault", "precopy", "paused", "forwarding"
    t1_us: int | None = None


def marks(hosts, moves) -> list[Mark]:
    """Mode changes after boot and faults on every host, and each migration's phases."""
    out = []
    for h in hosts:
        for vm in h.vms:
            for c in h.hv.modes(vm)[2:]:
                kind = "fault" if c.reason.startswith("fault") else "mode"
                out.append(Mark(c.time_us, f"{vm.name} {c.mode}: {c.reason}"[:60], kind))
    for o, _ in moves:
        phases = o.report["phases"]
        for (name, t0), (_, t1) in zip(phases, phases[1:]):
            if name in ("precopy", "paused", "forwarding"):
                out.append(Mark(round(t0 * 1e6), f"{o.vm.name} {name}", name, round(t1 * 1e6)))
    return out
