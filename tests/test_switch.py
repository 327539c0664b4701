"""The embedded switch: learning-free forwarding by MAC, flooding, VEPA, counters."""
from dataclasses import asdict

import pytest

from npa.nic_model.frames import Frames
from npa.nic_model.switch import Switch

A, B, C, UNKNOWN = 0x020000000001, 0x020000000002, 0x020000000003, 0x02000000AAAA
BCAST, MCAST = 0xFFFFFFFFFFFF, 0x01005E000001


def frames(*dsts: int, src: int = A, size: int = 60) -> Frames:
    return Frames.from_bytes([d.to_bytes(6, "big") + src.to_bytes(6, "big") + bytes([i]) * (size - 12)
                              for i, d in enumerate(dsts)])


@pytest.fixture
def sw():
    s = Switch()
    ports = {n: s.add_port(n, k) for n, k in (("pf", "pf"), ("vf0", "vf"), ("vf1", "vf"),
                                                ("vf2", "vf"), ("uplink", "uplink"))}
    for name, mac in (("vf0", A), ("vf1", B), ("vf2", C)):
        s.set_mac(ports[name], mac)
    return s, ports


def drain(port) -> list[bytes]:
    return port.receive(port.pending()).to_bytes()


def test_unicast_goes_only_to_the_port_that_owns_the_mac(sw):
    s, p = sw
    sent = frames(B, C, B)
    s.forward(p["vf0"], sent)
    assert drain(p["vf1"]) == [sent.frame(0), sent.frame(2)]  # order kept
    assert drain(p["vf2"]) == [sent.frame(1)]
    assert all(not p[n].pending() for n in ("pf", "vf0", "uplink"))


def test_broadcast_floods_multicast_reaches_the_vfs_that_joined(sw):
    s, p = sw
    s.set_policy(p["vf2"], multicast=frozenset({MCAST}))
    s.forward(p["vf0"], frames(BCAST, MCAST))
    for name in ("pf", "vf2", "uplink"):
        assert p[name].pending() == 2, name
    assert p["vf1"].pending() == 1 and p["vf0"].pending() == 0


def test_unknown_unicast_goes_to_the_uplink(sw):
    s, p = sw
    s.forward(p["vf1"], frames(UNKNOWN, src=B))
    assert p["uplink"].pending() == 1 and sum(p[n].pending() for n in ("pf", "vf0", "vf2")) == 0


def test_unknown_unicast_from_the_uplink_and_hairpin_are_dropped_and_counted(sw):
    s, p = sw
    s.forward(p["uplink"], frames(UNKNOWN))
    s.forward(p["vf0"], frames(A))  # to itself: a VEB does not reflect
    assert p["uplink"].stats.drops == 1 and p["vf0"].stats.drops == 1
    assert sum(port.pending() for port in p.values()) == 0


def test_counters_per_port(sw):
    s, p = sw
    s.forward(p["vf0"], frames(B, B, size=100))
    s.forward(p["vf1"], frames(A, src=B, size=64))
    zero = dict(drops=0, spoofed=0, vlan=0, oversize=0, storm=0)
    assert asdict(p["vf0"].stats) == dict(rx_frames=2, rx_bytes=200, tx_frames=1, tx_bytes=64, **zero)
    assert asdict(p["vf1"].stats) == dict(rx_frames=1, rx_bytes=64, tx_frames=2, tx_bytes=200, **zero)


def test_a_full_port_buffer_drops_the_excess(sw):
    s, p = sw
    p["vf1"].capacity = 3
    s.forward(p["vf0"], frames(*[B] * 5))
    assert p["vf1"].pending() == 3 and p["vf1"].stats.drops == 2 and p["vf1"].stats.tx_frames == 3


def test_set_mac_moves_a_mac(sw):
    s, p = sw
    s.set_mac(p["vf2"], B)
    s.forward(p["vf0"], frames(B))
    assert p["vf2"].pending() == 1 and p["vf1"].pending() == 0


def test_vepa_sends_everything_up_and_delivers_what_comes_back():
    s = Switch("vepa")
    vf0, vf1, up = s.add_port("vf0", "vf"), s.add_port("vf1", "vf"), s.add_port("uplink", "uplink")
    s.set_mac(vf0, A)
    s.set_mac(vf1, B)
    s.forward(vf0, frames(B))
    assert up.pending() == 1 and vf1.pending() == 0
    s.forward(up, up.receive(1))  # the reflective relay
    assert vf1.pending() == 1


def test_port_receive_splits_bursts_oldest_first(sw):
    s, p = sw
    first, second = frames(B, B, B), frames(B, B)
    s.forward(p["vf0"], first)
    s.forward(p["vf0"], second)
    assert p["vf1"].receive(4).to_bytes() == first.to_bytes() + second.to_bytes()[:1]
    assert p["vf1"].receive(9).to_bytes() == second.to_bytes()[1:]


def test_a_held_port_lets_forwarded_frames_through_and_keeps_direct_ones_in_order_behind():
    """A VM arriving by migration: what the old host forwards is older than anything that
    reaches the new port directly; the forwarded frames flow at once, the direct ones wait,
    and at the release they follow, in order. Nothing is lost or reordered."""
    from npa.nic_model.switch import Port

    def burst(first, n):
        return Frames.from_bytes([bytes([first + i]) * 60 for i in range(n)])

    port = Port(0, "vf0", "vf", capacity=16)
    port.held = True
    port.deliver(burst(10, 3))  # direct, newer
    assert port.pending() == 0 and port.waiting == 3
    port.pass_through(burst(0, 2))  # forwarded, older
    assert port.pending() == 2 and [f[0] for f in port.receive(8).to_bytes()] == [0, 1]
    port.pass_through(burst(2, 1))
    port.deliver(burst(13, 20))  # beyond the capacity: the rest is dropped and counted
    assert port.waiting == 15 and port.stats.drops == 8
    port.release_hold()
    got = [f[0] for f in port.receive(64).to_bytes()]
    assert got == [2, *range(10, 25)] and not port.held and port.waiting == 0
