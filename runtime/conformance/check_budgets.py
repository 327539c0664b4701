"""Budgets: fuel per export call, the poll budget, and logging that stays off the fast path."""
from __future__ import annotations

import pytest

from npa.runtime.sandbox import PluginFault
from npa.shell_api import Status

from npa.runtime.conformance.rig import FUEL, Violation

BUDGET_FAULTS = ("out of fuel", "deadline exceeded")


def test_fuel_per_call(make_rig):
    """Every export call of a run (init, 4096 frames, interrupts, a full tx ring polled faster
    than the NIC sends, quiesce) stays within the suite's fuel budget and deadline per call."""
    rig = make_rig()
    rig.attach()
    try:
        rig.deliver(4096)
        rig.offer(rig.shell.tx_room())  # a full tx ring, polled faster than the NIC sends
        for _ in range(8):
            rig.poll()
        rig.drain()
        rig.quiesce()
    except Violation:
        pass  # the budget verdict below names the cause when there is one
    over = [f for f in rig.faults() if any(b in f for b in BUDGET_FAULTS)]
    assert not over, f"{over[0]} (budget {FUEL:,} instructions per call)"
    assert not rig.faults(), rig.faults()[-1]
    worst = max(rig.meter.log, key=lambda c: c.fuel)
    assert worst.fuel <= FUEL, f"{worst.export} used {worst.fuel:,} fuel"


def test_poll_honours_budget(make_rig):
    """npa_poll(0, budget) moves at most `budget` frames each way (taken from tx, put on rx),
    for budgets 64, 0, 1, 7; budget 0 moves nothing and does not trap."""
    rig = make_rig(ring_size=1024, frames=4096)
    rig.attach()
    rig.poll()  # post RX buffers
    rig.offer(1024)
    tx, rx = rig.shell.rings["tx"], rig.shell.rings["rx"]
    for budget in (64, 0, 1, 7, 64):
        t0, r0 = tx.consumer(), rx.producer()
        try:
            work = rig.meter.npa_poll(0, budget)
        except PluginFault as e:
            pytest.fail(f"npa_poll(0, {budget}): {e.reason}", pytrace=False)
        took, gave = tx.consumer() - t0, rx.producer() - r0
        assert work >= 0, f"npa_poll(0, {budget}) returned {Status.describe(-work)}"
        assert took <= budget, f"npa_poll(0, {budget}) took {took} frames from tx"
        assert gave <= budget, f"npa_poll(0, {budget}) put {gave} frames on rx"
        if rig.nic is not None:
            rig.nic.step()
    rig.drain()
    rig.expect_clean("after budgeted polls")


def test_log_off_the_fast_path(make_rig):
    """The plugin logs at most one line per 32 frames it moves (never per frame); the shell's
    rate limit of 16 lines per step is a safety net, not a throttle."""
    rig = make_rig()
    rig.attach()
    rig.deliver(4096)
    calls = [c for c in rig.meter.log if c.export in ("npa_poll", "npa_intr")]
    logs, moved = sum(c.logs for c in calls), sum(c.moved for c in calls)
    assert logs * 32 <= moved, (f"{logs} log calls for {moved} frames moved "
                                f"({rig.host.logs_suppressed} suppressed by the shell)")
