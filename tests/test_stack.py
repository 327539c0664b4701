"""The guest's IPv4 stack on frames alone: ARP, ICMP echo, UDP echo, its own pings; every reply
dissected by dpkt, checksums verified; frames not for it left for the sink."""
import ipaddress
import struct

import dpkt

from npa.nic_model.frames import Frames
from npa.runtime.guest.stack import IpStack, checksum, ipv4_frame, udp_payload

VM, PEER = 0x020000000001, 0x02000000AAAA
VM_IP, PEER_IP = "10.5.0.2", "10.5.0.1"


def packed(ip: str) -> bytes:
    return ipaddress.IPv4Address(ip).packed


def arp_request(target: str) -> bytes:
    return (bytes.fromhex("ffffffffffff") + PEER.to_bytes(6, "big") + b"\x08\x06" +
            struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, PEER.to_bytes(6, "big"),
                        packed(PEER_IP), bytes(6), packed(target)))


def echo_request(seq: int, data: bytes = b"x" * 56) -> bytes:
    icmp = struct.pack("!BBHHH", 8, 0, 0, 0x1234, seq) + data
    icmp = icmp[:2] + struct.pack("!H", checksum(icmp)) + icmp[4:]
    return ipv4_frame(PEER, VM, packed(PEER_IP), packed(VM_IP), 1, icmp)


def stack() -> IpStack:
    return IpStack(VM, f"{VM_IP}/24", clock=lambda: 0)


def test_arp_request_for_its_address_is_answered_and_the_asker_cached():
    s = stack()
    rest, replies = s.receive(Frames.from_bytes([arp_request(VM_IP), arp_request("10.5.0.9")]))
    assert len(rest) == 0 and len(replies) == 1
    arp = dpkt.ethernet.Ethernet(replies[0]).data
    assert arp.op == 2 and arp.spa == packed(VM_IP) and arp.sha == VM.to_bytes(6, "big")
    assert s.lookup(PEER_IP) == PEER


def test_echo_request_gets_a_reply_with_valid_checksums():
    s = stack()
    _, replies = s.receive(Frames.from_bytes([echo_request(7, b"abc" * 20)]))
    ip = dpkt.ethernet.Ethernet(replies[0]).data
    assert dpkt.in_cksum(bytes(ip)[:20]) == 0 and dpkt.in_cksum(bytes(ip.data)) == 0
    assert ip.src == packed(VM_IP) and ip.dst == packed(PEER_IP)
    assert ip.data.type == 0 and ip.data.data.id == 0x1234 and ip.data.data.seq == 7
    assert ip.data.data.data == b"abc" * 20


def test_udp_port_7_echoes_byte_for_byte():
    s = stack()
    data = bytes(range(256)) * 4
    frame = ipv4_frame(PEER, VM, packed(PEER_IP), packed(VM_IP), 17,
                       udp_payload(packed(PEER_IP), packed(VM_IP), 40000, 7, data))
    _, replies = s.receive(Frames.from_bytes([frame]))
    udp = dpkt.ethernet.Ethernet(replies[0]).data.data
    assert (udp.sport, udp.dport, udp.data) == (7, 40000, data)


def test_bad_checksums_and_foreign_frames_are_not_answered():
    s = stack()
    bad = bytearray(echo_request(1))
    bad[24] ^= 0xFF  # the IPv4 header checksum
    other = Frames.from_bytes([b"\x02\x00\x00\x00\x00\x01" + b"\x02" * 6 + b"\x88\xb5" + bytes(50)])
    rest, replies = s.receive(Frames.concat([Frames.from_bytes([bytes(bad)]), other]))
    assert replies == [] and len(rest) == 1 and s.stats["bad_ip"] == 1


def test_its_own_ping_resolves_then_counts_replies():
    s = stack()
    s.ping(PEER_IP, 3)
    first = s.pending()
    assert len(first) == 1 and dpkt.ethernet.Ethernet(first[0]).data.op == 1  # who-has
    s.receive(Frames.from_bytes([arp_request(VM_IP)]))  # the peer asks for us: now we know it
    requests = s.pending()
    assert len(requests) == 3 and s.pending() == []
    peer = IpStack(PEER, f"{PEER_IP}/24")
    peer.arp[packed(VM_IP)] = (VM, 10**12)
    _, replies = peer.receive(Frames.from_bytes(requests))
    s.receive(Frames.from_bytes(replies))
    assert s.pings[PEER_IP]["received"] == 3


# -- RFC 1122: a host, not an amplifier ----------------------------------------------------------
def _echo_from(src_ip: str, src_mac: int = PEER, dst_mac: int = VM, frag: int = 0x4000) -> bytes:
    icmp = struct.pack("!BBHHH", 8, 0, 0, 0x1234, 1) + b"x" * 56
    icmp = icmp[:2] + struct.pack("!H", checksum(icmp)) + icmp[4:]
    frame = bytearray(ipv4_frame(src_mac, dst_mac, packed(src_ip), packed(VM_IP), 1, icmp))
    frame[20:22] = struct.pack("!H", frag)  # flags and fragment offset
    frame[24:26] = b"\0\0"
    frame[24:26] = struct.pack("!H", checksum(bytes(frame[14:34])))
    return bytes(frame)


def test_no_echo_reply_to_a_source_no_single_host_can_be():
    s = stack()
    for src in ("255.255.255.255", "10.5.0.255", "224.0.0.1", "127.0.0.1", "0.0.0.0", "240.0.0.1"):
        _, replies = s.receive(Frames.from_bytes([_echo_from(src)]))
        assert replies == [], src
    assert s.stats["bad_source"] == 6 and s.stats["echo_replies"] == 0
    _, replies = s.receive(Frames.from_bytes([_echo_from(PEER_IP)]))  # and a real peer still is
    assert len(replies) == 1


def test_no_reply_to_a_group_source_mac_or_a_link_broadcast():
    """A reply to a group source MAC goes to every host of the segment: a smurf amplifier."""
    s = stack()
    _, replies = s.receive(Frames.from_bytes([_echo_from(PEER_IP, src_mac=0xFFFFFFFFFFFF),
                                              _echo_from(PEER_IP, src_mac=0x01005E000001),
                                              _echo_from(PEER_IP, dst_mac=0xFFFFFFFFFFFF)]))
    assert replies == [] and s.stats["bad_source"] == 2 and s.stats["link_broadcast"] == 1


def test_a_fragment_is_never_answered_as_a_whole_datagram():
    s = stack()
    first, later = _echo_from(PEER_IP, frag=0x2000), _echo_from(PEER_IP, frag=0x0010)
    _, replies = s.receive(Frames.from_bytes([first, later]))
    assert replies == [] and s.stats["fragments"] == 2


def test_no_udp_echo_to_a_reflecting_port_so_two_echo_services_cannot_ping_pong():
    s = stack()
    frames = [ipv4_frame(PEER, VM, packed(PEER_IP), packed(VM_IP), 17,
                         udp_payload(packed(PEER_IP), packed(VM_IP), sport, 7, b"loop"))
              for sport in (7, 13, 19, 37, 0, 40000)]
    _, replies = s.receive(Frames.from_bytes(frames))
    assert len(replies) == 1 and s.stats["udp_echoes"] == 1  # only the one from port 40000
    assert dpkt.ethernet.Ethernet(replies[0]).data.data.dport == 40000


def test_the_arp_cache_is_bounded_and_learns_as_rfc_826_says():
    from npa.runtime.guest.stack import ARP_CACHE_MAX

    s = stack()
    flood = []
    for i in range(2000):  # requests for someone else from 2,000 senders: nothing is learnt
        ip = ipaddress.IPv4Address("10.5.0.0") + 1 + i % 250
        flood.append(bytes.fromhex("ffffffffffff") + (PEER + i).to_bytes(6, "big") + b"\x08\x06" +
                     struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, (PEER + i).to_bytes(6, "big"),
                                 ip.packed, bytes(6), packed("10.5.0.9")))
    s.receive(Frames.from_bytes(flood))
    assert s.arp == {}
    big = IpStack(VM, f"{VM_IP}/16", clock=lambda: 0)  # requests for us from a /16's worth
    for i in range(1000):
        ip = (ipaddress.IPv4Address("10.5.0.0") + 3 + i).packed
        big.receive(Frames.from_bytes([bytes.fromhex("ffffffffffff") + (PEER + i).to_bytes(6, "big")
                                       + b"\x08\x06" + struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1,
                                       (PEER + i).to_bytes(6, "big"), ip, bytes(6), packed(VM_IP))]))
    assert len(big.arp) == ARP_CACHE_MAX  # the last ones asked, the oldest gone
    assert (ipaddress.IPv4Address("10.5.0.0") + 3 + 999).packed in big.arp
