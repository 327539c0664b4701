"""ABI use: the plugin calls the Shell API as a driver should, not merely in ways the runtime
survives. Every import call is recorded (rig.Meter) and held to the limits in `abi_limits`."""
from __future__ import annotations

import pytest

from npa.runtime.conformance.abi_limits import (IDLE_STEPS, MAX_ALLOCS_OUTSIDE_INIT, MAX_ALLOCS_PER_INIT,
                         MAX_IDLE_INTERRUPTS, MAX_UDELAY_PER_CALL_US, MAX_UDELAY_US)
from npa.runtime.conformance.rig import Violation


@pytest.fixture
def traffic(make_rig):
    """A plugin that ran: init, 2048 frames both ways, a quiet spell, quiesce. Traffic that
    stalls or a fault on the way is other checks' business: what was recorded is judged here."""
    rig = make_rig(wire=True)
    rig.attach()
    try:
        rig.deliver(2048)
    except Violation:
        pass
    rig.idle_interrupts = rig.shell.stats["interrupts"]
    rig.settle(IDLE_STEPS)
    rig.idle_interrupts = rig.shell.stats["interrupts"] - rig.idle_interrupts
    try:
        rig.quiesce()
    except Violation:
        pass
    return rig


def _imports(rig, name: str):
    """(export, arguments) of every call of the Shell API import `name`."""
    return [(c.export, args) for c in rig.meter.log for n, args in c.imports if n == name]


def test_no_memory_grow(target):
    """The image never executes memory.grow: the memory is fixed in size (min = max pages) and
    a grow always fails, so a plugin that tries is counting on memory it will not get."""
    shape = target.report.shape
    if shape is None:
        pytest.skip(f"not reached: the image fails the static '{target.report.error.check}' check")
    if shape.memory_grows:
        raise Violation(f"{shape.memory_grows} memory.grow instructions in the code")


def test_dma_memory_set_up_at_init(traffic):
    """dma_alloc is called in npa_init, at most a few dozen times; never from the data path."""
    inits = [c for c in traffic.meter.log if c.export == "npa_init"]
    most = max((sum(n == "dma_alloc" for n, _ in c.imports) for c in inits), default=0)
    if most > MAX_ALLOCS_PER_INIT:
        raise Violation(f"{most} dma_alloc calls in one npa_init; at most {MAX_ALLOCS_PER_INIT}")
    outside = [e for e, _ in _imports(traffic, "dma_alloc") if e != "npa_init"]
    if len(outside) > MAX_ALLOCS_OUTSIDE_INIT:
        raise Violation(f"{len(outside)} dma_alloc calls outside npa_init (first in {outside[0]}); "
                        "DMA memory is set up at init")


def test_dma_free_only_what_it_allocated(traffic):
    """dma_free takes only addresses dma_alloc returned to this plugin, each once."""
    if (n := traffic.host.refused["dma_free"]):
        raise Violation(f"{n} dma_free calls on addresses dma_alloc never gave it (or gave back)")


def test_udelay_is_short(traffic):
    """Waits are short: the device makes progress in microseconds, and every wait stalls the
    host's single thread for every VM."""
    for c in traffic.meter.log:
        waits = [args[0] for n, args in c.imports if n == "udelay"]
        if waits and max(waits) > MAX_UDELAY_US:
            raise Violation(f"{c.export} called udelay({max(waits)}); at most {MAX_UDELAY_US} µs")
        if sum(waits) > MAX_UDELAY_PER_CALL_US:
            raise Violation(f"{c.export} waited {sum(waits)} µs in all; at most {MAX_UDELAY_PER_CALL_US}")


def test_poll_reports_the_work_it_did(traffic):
    """npa_poll returns at most the entries it moved across the shell rings (the shell polls
    again on what it returns: claiming work it did not do makes the host spin)."""
    for c in traffic.meter.polls():
        if c.result is not None and c.result > c.entries:
            raise Violation(f"npa_poll returned {c.result} after moving {c.entries} ring entries")


def test_registers_inside_the_data_path(traffic):
    """Every MMIO access is to a data-path register of the VF's BAR0, inside the BAR."""
    vf, size = traffic.vf, traffic.vf.SIZE
    for name in ("mmio_write32", "mmio_read32"):
        if outside := [args[0] for _, args in _imports(traffic, name) if args[0] >= size]:
            raise Violation(f"{name} at 0x{outside[0]:x}, outside the {size}-byte BAR0")
    if vf.ignored_writes or vf.ignored_reads:
        raise Violation(f"{vf.ignored_writes} writes and {vf.ignored_reads} reads of offsets that "
                        "are not data-path registers of the VF")


def test_no_interrupts_without_work(traffic):
    """A quiet data path raises no interrupt: no cause storm (a plugin setting causes itself)."""
    if traffic.idle_interrupts > MAX_IDLE_INTERRUPTS:
        raise Violation(f"{traffic.idle_interrupts} interrupts in {IDLE_STEPS} steps without "
                        f"traffic; at most {MAX_IDLE_INTERRUPTS}")
