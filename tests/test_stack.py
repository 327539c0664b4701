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
