"""Lifecycle: init, reset, quiesce and re-injection, each through the exports alone."""
from __future__ import annotations

import pytest

from npa.shell_api import Status

from npa.runtime.conformance.rig import BASES


def test_init_at_two_bases(make_rig):
    """npa_init succeeds with the image placed at two different bases, making the same host
    calls at both (the plugin does not depend on where the hypervisor put it)."""
    calls = []
    for base in BASES:
        rig = make_rig(base=base)
        rig.attach()
        calls.append(dict(rig.host.calls))
    assert calls[0] == calls[1], (f"host calls during init differ: {calls[0]} at 0x{BASES[0]:x}, "
                                  f"{calls[1]} at 0x{BASES[1]:x}")


def test_init_without_dma_memory(make_rig):
    """When every shell.dma_alloc fails, npa_init returns an error status (it does not trap or
    claim success); once memory is back, npa_reset then npa_init succeed."""
    rig = make_rig()
    rig.host.fail_dma_alloc = True
    ok = rig.shell.attach(rig.meter, rig.target.report.manifest.features)
    if ok and rig.host.calls["dma_alloc"] == 0:
        pytest.skip("the plugin allocates no DMA memory at init")
    assert not ok, f"npa_init returned OK although all {rig.host.calls['dma_alloc']} dma_alloc calls failed"
    reason = rig.faults()[-1]
    assert " returned " in reason, f"npa_init must return an error status, not fault: {reason}"
    rig.host.fail_dma_alloc = False
    status = rig.meter.npa_reset()
    assert status == Status.OK, f"npa_reset returned {Status.describe(status)}"
    rig.attach()


def test_reset_then_init(rig):
    """npa_reset on a running plugin returns OK; npa_init then brings the data path back."""
    rig.settle(2)
    status = rig.meter.npa_reset()
    assert status == Status.OK, f"npa_reset returned {Status.describe(status)}"
    rig.shell.drop_plugin()  # the hypervisor takes back what the reset plugin held
    rig.attach()
    rig.deliver(512)
    rig.expect_clean("after reset and init")


def test_quiesce_idle(rig):
    """npa_quiesce on an idle plugin returns OK and hands back every posted RX buffer."""
    rig.settle(2)
    assert rig.shell.held_by_plugin(), "the plugin took no RX buffer from the fill ring"
    rig.quiesce()
    rig.expect_conserved()
    rig.expect_clean("quiesce")


def test_reinjection(rig):
    """init, quiesce, init again (the hypervisor injecting the plugin anew) works, twice, and
    the data path carries traffic after each."""
    for _ in range(2):
        rig.deliver(300)
        rig.quiesce()
        rig.expect_conserved()
        rig.attach()
    rig.deliver(300)
    rig.expect_clean("after re-injection")
