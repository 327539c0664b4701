"""Data path: frames out and back on a wire, in order and byte for byte, in every shape."""
from __future__ import annotations

import numpy as np

from npa.nic_model.frames import Frames
from npa.runtime.guest import ETHERTYPE, IMIX
from npa.runtime.shell import ETH_HEADER

from npa.runtime.conformance.rig import MAC, first_difference


def test_every_frame_size(wired):
    """Every frame size from 14 bytes (an Ethernet header) to the MTU goes out and comes back,
    in order, byte for byte."""
    mtu = wired.shell.mtu
    lens = np.arange(ETH_HEADER, mtu + 1, dtype=np.int64)
    data = np.random.default_rng(14).integers(0, 256, (len(lens), mtu), dtype=np.uint8)
    data[:, 0:12] = np.frombuffer(MAC.to_bytes(6, "big") * 2, np.uint8)  # to and from the VF
    data[:, 12:14] = (ETHERTYPE >> 8, ETHERTYPE & 0xFF)  # not a VLAN tag by chance
    sent = Frames(data, lens)
    wired.deliver(len(sent), burst=64, frames=sent)
    diff = first_difference(sent, wired.received_frames())
    assert diff is None, diff
    assert not wired.shell.refused and not wired.faults(), wired.problems() + wired.faults()


def test_bursts_1_to_256(wired):
    """Bursts of every size from 1 to 256 frames, each sent and received before the next."""
    for n in range(1, 257):
        wired.deliver(n, burst=n)
    wired.expect_clean("bursts of 1 to 256")


def test_ring_wraparound(make_rig):
    """Ten times the ring size of IMIX traffic: every ring index wraps, nothing is lost."""
    rig = make_rig(wire=True, sizes=IMIX)
    rig.attach()
    rig.deliver(10 * rig.shell.rings["tx"].size, burst=96)
    rig.expect_clean("10x the ring size")


def test_backpressure(make_rig):
    """The shell fills a 2048-entry tx ring in one go, more than a hardware ring holds: the plugin
    takes what fits, leaves the rest on the ring, and loses nothing."""
    rig = make_rig(wire=True, ring_size=2048, frames=4096)
    rig.attach()
    took = rig.offer(2048)
    assert took == 2048, f"the shell took {took} of 2048 frames"
    for _ in range(8):  # the plugin polls faster than the NIC sends: its ring fills up
        rig.poll()
    rig.drain()
    rig.expect_clean("back-pressure")


def test_rx_starvation(make_rig):
    """With no RX buffer posted the plugin receives nothing and faults not; TX still completes.
    Once the shell posts buffers again, every frame that waited in the NIC arrives, in order."""
    rig = make_rig(wire=True)
    rig.shell.rx_buffers = 0
    rig.attach()
    rig.offer(200)
    rig.settle(20)
    assert rig.sink.frames == 0, f"{rig.sink.frames} frames received with no buffer posted"
    assert rig.shell.stats["tx_done"] == 200, \
        f"TX completed {rig.shell.stats['tx_done']} of 200 frames while RX starved"
    rig.shell.rx_buffers = rig.shell.nframes // 2
    rig.shell.need_poll = True
    rig.drain()
    rig.expect_clean("after RX starvation")


def test_no_host_call_per_frame(wired):
    """Host calls are per burst, never per frame: on polls that move 32 frames or more, the
    plugin makes at most one host call per 8 frames moved."""
    wired.deliver(4096, burst=256)
    polls = [c for c in wired.meter.polls() if c.moved >= 32]
    assert polls, "no poll moved 32 frames or more"
    calls, moved = sum(c.host_calls for c in polls), sum(c.moved for c in polls)
    assert calls * 8 <= moved, (f"{calls} host calls for {moved} frames in {len(polls)} polls "
                                f"({calls / len(polls):.1f} per poll)")
