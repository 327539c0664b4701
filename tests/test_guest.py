"""The guest's sink tells loss, duplication, reordering and corruption apart."""
import numpy as np
import pytest

from npa.nic_model.frames import Frames
from npa.runtime.guest import Flow, Sink, TrafficGen, build, size_schedule

SRC, DST = 0x020000000001, 0x020000000002


def setup(count=10, sizes="mixed"):
    flow = Flow(7, SRC, DST, count, size_schedule(sizes))
    return flow, Sink(DST, [flow]), build(flow, 0, count)


def deliver(sink, frames, order, flow):
    flow.sent = flow.count
    sink.receive(frames.take(np.array(order)))
    return sink.check[flow.id]


def test_in_order_delivery_is_clean():
    flow, sink, f = setup()
    c = deliver(sink, f, range(10), flow)
    assert c.received == 10 and sink.clean()


def test_loss_is_counted():
    flow, sink, f = setup()
    deliver(sink, f, [0, 1, 2, 4, 5, 6, 7, 8, 9], flow)
    assert sink.lost(flow.id) == 1 and not sink.clean()


def test_duplicate_is_counted():
    flow, sink, f = setup()
    c = deliver(sink, f, [0, 1, 2, 2, 3, 4, 5, 6, 7, 8, 9], flow)
    assert c.duplicates == 1 and sink.lost(flow.id) == 0 and not sink.clean()


def test_reordering_is_counted_not_as_loss():
    flow, sink, f = setup()
    c = deliver(sink, f, [0, 2, 1, 3, 4, 5, 6, 7, 8, 9], flow)
    assert c.reordered == 1 and sink.lost(flow.id) == 0 and c.duplicates == 0


def test_one_flipped_payload_byte_is_corruption():
    flow, sink, f = setup()
    f.data[3, 60] ^= 0x01
    c = deliver(sink, f, range(10), flow)
    assert c.corrupted == 1 and sink.lost(flow.id) == 1


def test_one_flipped_ipv4_header_byte_is_corruption():
    flow, sink, f = setup()
    f.data[5, 30] ^= 0x01  # the destination address: the header checksum no longer holds
    c = deliver(sink, f, range(10), flow)
    assert c.corrupted == 1 and sink.lost(flow.id) == 1


def test_a_truncated_frame_is_corruption():
    flow, sink, f = setup()
    f.lens[5] -= 1
    c = deliver(sink, f, range(10), flow)
    assert c.corrupted == 1


def test_sequence_numbers_that_count_up_across_2_63_are_corruption():
    """A frame's 64-bit sequence number is the sender's to write: a burst whose numbers count up
    across 2**63 (consecutive modulo 2**64, negative as int64) is corruption, counted; nothing
    raises and nothing counts as received."""
    flow, sink, f = setup(4, "imix")
    for i, seq in enumerate((2**63 - 2, 2**63 - 1, 2**63, 2**63 + 1)):
        f.data[i, 44:52] = np.frombuffer(seq.to_bytes(8, "big"), np.uint8)
    c = deliver(sink, f, range(4), flow)
    assert c.corrupted == 4 and c.received == 0 and sink.lost(flow.id) == 4


@pytest.mark.parametrize("sizes", ["64", "imix", "mixed"])
def test_a_burst_in_blocks_per_length_is_checked_byte_for_byte(sizes):
    """Bursts of imix travel as a block per length: a flipped byte in any block is found, and
    the other frames still count."""
    flow, sink, f = setup(24, sizes)
    f.data[19, -1 if sizes == "64" else 55] ^= 0x80
    c = deliver(sink, f, range(24), flow)
    assert c.corrupted == 1 and c.received == 23 and c.missing == {19}


def test_frames_of_another_flow_are_unexpected():
    flow, sink, f = setup()
    other = Flow(8, SRC, DST, 3, size_schedule(60))
    sink.receive(build(other, 0, 3))
    assert sink.unexpected == 3


def test_sizes_cover_the_range_and_imix_ratio():
    mixed = size_schedule("mixed")
    assert mixed.min() == 60 and mixed.max() == 1514
    imix = size_schedule("imix").tolist()
    assert (imix.count(60), imix.count(590), imix.count(1514)) == (7, 4, 1)


def test_generator_honours_limit_and_window():
    flow = Flow(1, SRC, DST, 100, size_schedule(60))
    gen = TrafficGen([flow], burst=64)
    _, frames = gen.next_burst(10, {1: 4})
    assert len(frames) == 4
    assert isinstance(frames, Frames)


def test_built_frames_are_the_ipv4_udp_frames_the_format_describes():
    """Read independently of the builder (dpkt, and the RFC 1071 sum written out here): every
    header field, the IPv4 checksum (built by a modulo, checked by folding) and every payload
    byte, across sequence numbers that wrap the 16-bit identification."""
    import dpkt

    def rfc1071(header: bytes) -> int:
        total = sum(int.from_bytes(header[i:i + 2], "big") for i in range(0, len(header), 2))
        while total >> 16:
            total = (total & 0xFFFF) + (total >> 16)
        return total

    for sizes in ("64", "imix", "mixed"):
        flow = Flow(5, SRC, DST, 1 << 20, size_schedule(sizes))
        frames = build(flow, 65530, 300)
        for i, raw in enumerate(frames.to_bytes()):
            seq = 65530 + i
            eth = dpkt.ethernet.Ethernet(raw)
            ip, udp = eth.data, eth.data.data
            assert len(raw) == flow.sizes[seq % len(flow.sizes)]
            assert (eth.src, eth.dst) == (SRC.to_bytes(6, "big"), DST.to_bytes(6, "big"))
            assert (ip.len, ip.id, ip.ttl, ip.p, ip.df, ip.offset) == (len(raw) - 14, seq & 0xFFFF, 64, 17, 1, 0)
            assert rfc1071(raw[14:34]) == 0xFFFF  # the header checksum holds
            assert (udp.sport, udp.dport, udp.ulen) == (49152 + 5, 9, len(raw) - 34)
            assert int.from_bytes(raw[42:44], "big") == 5 and int.from_bytes(raw[44:52], "big") == seq
            assert raw[52:] == bytes((seq * 31 + k) & 0xFF for k in range(52, len(raw)))
