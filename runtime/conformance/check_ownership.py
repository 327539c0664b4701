"""Frame ownership: after npa_quiesce the shell holds every frame again, each marked truly."""
from __future__ import annotations


def _quiesce_twice(rig) -> None:
    """Quiesce right after the NIC sent what the plugin posted (all of it must come back done,
    and what the NIC received must reach the shell), then right after a poll posted frames the
    NIC never saw (all must come back UNSENT); re-attach in between. After each, the frames
    completed as sent are exactly those the NIC sent."""
    for nic_runs in (True, False):
        rig.offer(300)
        rig.poll()
        if nic_runs and rig.nic is not None:
            rig.nic.step()
        rig.quiesce()
        rig.expect_conserved()
        if rig.nic is not None:
            done, sent = rig.shell.stats["tx_done"], rig.vf.stats.tx_frames
            assert done == sent, (f"{done} frames completed as sent, the NIC sent {sent}: "
                                  f"{'sent frames marked UNSENT' if done < sent else 'unsent frames marked sent'}")
            assert rig.sink.frames == rig.vf.stats.rx_frames, (
                f"the NIC received {rig.vf.stats.rx_frames} frames, the shell got {rig.sink.frames}")
        rig.attach()


def test_quiesce_returns_every_frame(make_rig):
    """After npa_quiesce every pool frame is back with the shell: frames the NIC sent come back
    done, frames it did not send come back UNSENT, received frames as received, posted RX
    buffers EMPTY."""
    rig = make_rig(ring_size=1024, frames=4096)
    rig.attach()
    _quiesce_twice(rig)
    assert not rig.shell.refused, rig.problems()


def test_unsent_frames_resent(make_rig):
    """Frames handed back UNSENT are re-sent first when a data path comes back (the plugin
    injected again), and the flow arrives complete: nothing lost, nothing twice, in order."""
    rig = make_rig(ring_size=1024, frames=4096)
    rig.attach()
    _quiesce_twice(rig)
    rig.drain()
    rig.deliver(512)
    rig.expect_clean("after re-sending unsent frames")
    rig.quiesce()
    rig.expect_conserved()
