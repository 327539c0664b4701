"""Faults: the device resets or refuses DMA under traffic; the plugin reports, or recovers,
and never traps or loops. The bench plays the hypervisor: npa_reset then npa_init on a status."""
from __future__ import annotations


def _in_flight(rig) -> int:
    return rig.flow.sent - rig.sink.frames


def _expect_recovered(rig, allowed: int, what: str) -> None:
    rig.deliver(1024)
    c = rig.sink.check[rig.flow.id]
    assert not (c.duplicates or c.reordered or c.corrupted), f"{what}: " + "; ".join(rig.problems())
    lost, abandoned = rig.sink.lost(rig.flow.id), rig.shell.stats["tx_abandoned"]
    assert lost <= allowed + abandoned, (f"{what}: {lost} frames lost; {allowed} were in flight "
                                         f"and the shell abandoned {abandoned} after a fault")
    rig.recover = False
    rig.quiesce()
    rig.expect_conserved()


def test_device_reset_under_traffic(make_rig):
    """A function-level reset of the VF in the middle of traffic: the plugin reports an error
    status (and works again after npa_reset and npa_init) or carries on by itself."""
    rig = make_rig(wire=True)
    rig.attach()
    rig.recover = True
    rig.deliver(512)
    rig.offer(256)
    rig.poll()
    allowed = _in_flight(rig)
    rig.vf.reset()
    _expect_recovered(rig, allowed, "after a VF reset")


def test_dma_fault(make_rig):
    """The IOMMU refuses the frame pool for 20 steps, so the NIC reports DMA faults: the plugin
    does not trap or loop, and traffic resumes once the mapping is back; the frames lost are
    only those in flight meanwhile."""
    rig = make_rig(wire=True)
    rig.attach()
    rig.recover = True
    rig.deliver(512)
    iommu, pool = rig.box.iommu, rig.shell.pool_base
    first = rig.flow.sent - rig.sink.frames
    iommu.unmap(pool)
    rig.offer(256)
    rig.settle(20)
    iommu.map(pool, rig.shell.nframes * rig.shell.frame_size)
    assert rig.vf.stats.dma_faults, "the NIC reported no DMA fault: the plugin sent nothing"
    allowed = first + 256
    _expect_recovered(rig, allowed, "after DMA faults")
