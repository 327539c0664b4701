"""Interrupts: the queue vector drives the data path; acks, re-arms, and masks on quiesce.

Only for a plugin whose manifest claims `features = ["intr"]`: the shell offers interrupts to no
other, and polls it instead; these checks then skip and say so."""
from __future__ import annotations

import pytest

from npa.shell_api import Feature

from npa.runtime.conformance.rig import Violation

QUEUE_VECTOR = 0
QUEUES = 0b1  # the shell configures one queue


@pytest.fixture(autouse=True)
def _claims_interrupts(target):
    m = target.report.manifest
    if m is not None and not m.features & Feature.INTR:
        pytest.skip('the manifest does not claim features = ["intr"]: the shell polls this plugin '
                    "and offers it no interrupt")


def test_interrupt_driven_traffic(make_rig):
    """Polled only when npa_intr names queue 0 (never on a timer), 20 bursts in a row arrive:
    the plugin enables the queue vector at init and re-arms it after every interrupt."""
    rig = make_rig(wire=True, interrupts=True)
    rig.attach()
    for burst in range(20):
        try:
            rig.deliver(64, burst=64)
        except Violation as e:
            n = sum(1 for c in rig.meter.log if c.export == "npa_intr")
            raise Violation(f"burst {burst + 1} of 20 never completed after {n} npa_intr calls "
                            f"(vector {QUEUE_VECTOR} not re-armed?): {e}") from None
    rig.expect_clean("interrupt-driven traffic")


def test_intr_acks_and_reports_queues(wired):
    """npa_intr(v) acknowledges the vector's cause, re-arms it, and returns a mask of queues the
    shell configured: bit 0 for the queue vector."""
    vf = wired.vf
    for vector in range(vf.NUM_VECTORS):
        vf.take_msix()
        vf.raise_cause(1 << vector)
        fired = vf.take_msix()
        if not fired:
            if vector == QUEUE_VECTOR:
                pytest.fail(f"vector {vector} is masked after npa_init", pytrace=False)
            continue
        mask = wired.meter.npa_intr(vector)
        assert not vf.eicr & (1 << vector), f"npa_intr({vector}) did not acknowledge the cause"
        assert vf.eims & (1 << vector), f"npa_intr({vector}) did not re-arm the vector"
        assert mask & ~QUEUES == 0, f"npa_intr({vector}) returned 0x{mask:x}: not a queue mask"
        if vector == QUEUE_VECTOR:
            assert mask & 1, f"npa_intr({vector}) returned 0x{mask:x}: queue 0's bit is missing"


def test_masked_vectors_raise_nothing(wired):
    """After npa_quiesce every vector is masked: a cause raised then sends no message."""
    wired.deliver(256)
    wired.quiesce()
    vf = wired.vf
    vf.take_msix()
    vf.raise_cause((1 << vf.NUM_VECTORS) - 1)
    fired = vf.take_msix()
    assert fired == 0, f"vectors 0x{fired:x} still enabled after npa_quiesce"
