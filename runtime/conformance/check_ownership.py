"""Frame ownership: after npa_quiesce the shell holds every frame again, each marked truly."""
from __future__ import annotations


def _interrupt_traffic(rig) -> None:
    """Leave frames everywhere: sent and completed, posted but unsent, received but not
    harvested, posted RX buffers."""
    rig.offer(1024)
    rig.poll()
    if rig.nic is not None:
        rig.nic.step()
        rig.poll()
        rig.nic.step()
    rig.offer(256)
    rig.poll()


def test_quiesce_returns_every_frame(make_rig):
    """After npa_quiesce in the middle of traffic every pool frame is back with the shell:
    frames the NIC sent come back done, the others UNSENT, posted RX buffers EMPTY."""
    rig = make_rig(ring_size=1024, frames=4096)
    rig.attach()
    _interrupt_traffic(rig)
    rig.quiesce()
    rig.expect_conserved()
    st = rig.shell.stats
    if rig.nic is not None:
        sent = rig.vf.stats.tx_frames
        assert st["tx_done"] == sent, (f"{st['tx_done']} frames completed as sent, the NIC sent "
                                       f"{sent}: {'un' if st['tx_done'] < sent else ''}sent frames "
                                       "marked wrongly")
    assert not rig.shell.refused, rig.problems()


def test_unsent_frames_resent(make_rig):
    """Frames handed back UNSENT are re-sent first when a data path comes back (the plugin
    injected again), and the flow arrives complete: nothing lost, nothing twice, in order."""
    rig = make_rig(ring_size=1024, frames=4096)
    rig.attach()
    _interrupt_traffic(rig)
    rig.quiesce()
    rig.attach()
    rig.drain()
    rig.deliver(512)
    rig.expect_clean("after re-sending unsent frames")
    rig.quiesce()
    rig.expect_conserved()
