"""A guest's IPv4 stack, as much as a VM needs to be reached from a real network: ARP (answers
for its address, resolves peers, a cache with timeouts), ICMP echo reply, the UDP echo service
on port 7 (RFC 862), and pings of its own (to check a path from inside a VM).

Bursts are classified with numpy (EtherType and protocol columns); only the frames addressed to
the stack are parsed one by one, with `struct`: these are control-plane rates (pings, ARP, an
echo test), and a packet library would add a dependency for a few dozen lines of headers.
Everything else is left for the traffic sink.
"""
from __future__ import annotations

import ipaddress
import struct
from collections import Counter
from typing import Annotated, Callable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictBytes, StrictInt, StrictStr, model_validator

from npa.nic_model.frames import BROADCAST, Frames, is_group

ETH_IP, ETH_ARP = 0x0800, 0x0806
PROTO_ICMP, PROTO_UDP = 1, 17
ECHO_PORT = 7
# Source ports of services that answer whatever reaches them (echo, daytime, chargen, time): a
# datagram "from" one of them is answered by nobody, or two echo services ping-pong forever.
REFLECTING_PORTS = frozenset({7, 13, 19, 37})
ARP_TIMEOUT_US = 60_000_000  # a resolved neighbour is trusted this long (Linux: 30-60 s reachable)
ARP_CACHE_MAX = 256  # neighbours kept; the least recently used go first
IP_MF, IP_OFFSET = 0x2000, 0x1FFF  # the flags-and-fragment-offset field: a fragment has either
_ETH = struct.Struct("!6s6sH")
_ARP = struct.Struct("!HHBBH6s4s6s4s")
_IP = struct.Struct("!BBHHHBBH4s4s")
_UDP = struct.Struct("!HHHH")


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    s = int(np.frombuffer(data, ">u2").sum(dtype=np.uint64))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def _mac(mac: int) -> bytes:
    return mac.to_bytes(6, "big")


def ipv4_frame(src_mac: int, dst_mac: int, src: bytes, dst: bytes, proto: int, payload: bytes,
               ident: int = 0, ttl: int = 64) -> bytes:
    """An Ethernet II frame carrying one IPv4 packet (no options), checksum filled in."""
    hdr = _IP.pack(0x45, 0, 20 + len(payload), ident & 0xFFFF, 0x4000, ttl, proto, 0, src, dst)
    hdr = hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:]
    return _ETH.pack(_mac(dst_mac), _mac(src_mac), ETH_IP) + hdr + payload


def udp_payload(src: bytes, dst: bytes, sport: int, dport: int, data: bytes) -> bytes:
    """A UDP datagram with its checksum over the IPv4 pseudo-header."""
    length = 8 + len(data)
    pseudo = src + dst + struct.pack("!BBH", 0, PROTO_UDP, length)
    csum = checksum(pseudo + _UDP.pack(sport, dport, length, 0) + data) or 0xFFFF
    return _UDP.pack(sport, dport, length, csum) + data


U16 = Annotated[StrictInt, Field(ge=0, le=0xFFFF)]
Pings = Annotated[StrictInt, Field(ge=0, le=1000)]  # as many as `npa host`'s ping request asks


class PingState(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sent: Pings
    received: Pings
    count: Annotated[StrictInt, Field(ge=1, le=1000)]
    asked_us: Annotated[StrictInt, Field(ge=-1, lt=1 << 63)]

    @model_validator(mode="after")
    def _counts(self):
        if not self.received <= self.sent <= self.count:
            raise ValueError(f"received {self.received}, sent {self.sent}, count {self.count}")
        return self


class StackState(BaseModel):
    """What `IpStack.snapshot` gives, as a migration stream must carry it: types, ranges and
    sizes checked before anything is applied."""

    model_config = ConfigDict(extra="forbid")
    mac: Annotated[StrictInt, Field(ge=1, lt=1 << 48)]
    address: Annotated[StrictStr, Field(max_length=18)]
    ident: U16
    ping_id: U16
    arp: list[tuple[Annotated[StrictBytes, Field(min_length=4, max_length=4)],
                    Annotated[StrictInt, Field(ge=0, lt=1 << 48)],
                    Annotated[StrictInt, Field(ge=0, le=ARP_TIMEOUT_US)]]] = Field(max_length=ARP_CACHE_MAX)
    pings: dict[Annotated[StrictStr, Field(max_length=15)], PingState] = Field(max_length=16)
    stats: dict[Annotated[StrictStr, Field(max_length=32)],
                Annotated[StrictInt, Field(ge=0, lt=1 << 63)]] = Field(max_length=64)


class IpStack:
    def __init__(self, mac: int, address: str, clock: Callable[[], int] = lambda: 0):
        iface = ipaddress.IPv4Interface(address)
        self.mac, self.ip, self.network = mac, iface.ip.packed, iface.network
        self.clock = clock
        self.arp: dict[bytes, tuple[int, int]] = {}  # ip -> (mac, expires at, µs)
        self.stats: Counter[str] = Counter()
        self._ident = 0
        self.pings: dict[str, dict[str, int]] = {}  # target -> sent, received, count
        self._ping_id = (mac & 0xFFFF) or 1

    @property
    def address(self) -> str:
        return f"{ipaddress.IPv4Address(self.ip)}/{self.network.prefixlen}"

    # -- migration: the stack's state moves with its VM --------------------------------------------
    def snapshot(self) -> dict:
        now = self.clock()
        return {"mac": self.mac, "address": self.address, "ident": self._ident, "ping_id": self._ping_id,
                "arp": [[ip, mac, max(exp - now, 0)] for ip, (mac, exp) in self.arp.items()],
                "pings": self.pings, "stats": dict(self.stats)}

    @classmethod
    def restore(cls, snap: dict, clock: Callable[[], int]) -> "IpStack":
        """A stack from a snapshot; ARP entries keep the time they had left, on this clock.
        The snapshot is validated whole first (ValueError naming the field): nothing is built
        from a state that is wrong anywhere."""
        snap = StackState.model_validate(snap)
        stack = cls(snap.mac, snap.address, clock)
        now = clock()
        for ip, mac, left in snap.arp:
            stack.arp[ip] = (mac, now + left)
        for target, p in snap.pings.items():
            ipaddress.IPv4Address(target)
            stack.pings[target] = {**p.model_dump(), "asked_us": -1}  # ask again at once, here
        stack._ident, stack._ping_id = snap.ident, snap.ping_id
        stack.stats.update(snap.stats)
        return stack

    # -- input ------------------------------------------------------------------------------------
    def receive(self, frames: Frames) -> tuple[Frames, list[bytes]]:
        """Take the frames addressed to the stack out of a burst: (the rest, replies to send)."""
        if not len(frames) or frames.width < 14:
            return frames, []
        etype = frames.column(12, ">u2")
        dst = frames.macs(0)
        to_us = (dst == np.uint64(self.mac)) | (dst == np.uint64(BROADCAST))
        mine = to_us & ((etype == ETH_ARP) | (etype == ETH_IP))
        if not mine.any():
            return frames, []
        replies = []
        for i in np.flatnonzero(mine):
            frame = frames.frame(int(i))
            reply = self._arp(frame) if etype[i] == ETH_ARP else self._ip(frame)
            if reply is not None:
                replies.append(reply)
        return frames.take(~mine), replies

    def _arp(self, frame: bytes) -> bytes | None:
        if len(frame) < 14 + _ARP.size:
            self.stats["malformed"] += 1
            return None
        htype, ptype, hlen, plen, op, sha, spa, _tha, tpa = _ARP.unpack_from(frame, 14)
        if (htype, ptype, hlen, plen) != (1, ETH_IP, 6, 4):
            self.stats["malformed"] += 1
            return None
        sender = int.from_bytes(sha, "big")
        one_host = sender != 0 and not is_group(sender)
        # RFC 826: update a neighbour already known; add one only when the packet is for us.
        # A sender that is a group MAC, or an address no host may have, is never learnt.
        if (spa in self.arp or tpa == self.ip) and one_host \
                and ipaddress.IPv4Address(spa) in self.network and not self._bad_source(spa):
            self._learn(spa, sender)
        if op == 1 and tpa == self.ip and one_host:
            self.stats["arp_replies"] += 1
            return (_ETH.pack(sha, _mac(self.mac), ETH_ARP) +
                    _ARP.pack(1, ETH_IP, 6, 4, 2, _mac(self.mac), self.ip, sha, spa))
        return None

    def _ip(self, frame: bytes) -> bytes | None:
        if len(frame) < 34:
            self.stats["malformed"] += 1
            return None
        vihl, _tos, total, _ident, frag, _ttl, proto, _csum, src, dst = _IP.unpack_from(frame, 14)
        ihl = (vihl & 0x0F) * 4
        if vihl >> 4 != 4 or ihl < 20 or total < ihl or 14 + total > len(frame) \
                or checksum(frame[14:14 + ihl]):
            self.stats["bad_ip"] += 1
            return None
        if dst != self.ip:
            return None
        peer_mac = int.from_bytes(frame[6:12], "big")
        # RFC 1122 3.2.1.3 and 3.3.6: no answer to a source no single host can be, to a group
        # source MAC (the reply would go to a group: an amplifier), or to a unicast datagram
        # that came as a link-layer broadcast; fragments are not reassembled here, so none is
        # taken for a whole datagram.
        if self._bad_source(src) or is_group(peer_mac):
            self.stats["bad_source"] += 1
            return None
        if frame[0] & 1:
            self.stats["link_broadcast"] += 1
            return None
        if frag & (IP_MF | IP_OFFSET):
            self.stats["fragments"] += 1
            return None
        body = frame[14 + ihl:14 + total]
        if proto == PROTO_ICMP and len(body) >= 8 and body[0] == 0 and not checksum(body):
            ident, _seq = struct.unpack_from("!HH", body, 4)
            ping = self.pings.get(str(ipaddress.IPv4Address(src)))
            if ping is not None and ident == self._ping_id:
                ping["received"] += 1
            return None
        if proto == PROTO_ICMP and len(body) >= 8 and body[0] == 8 and not checksum(body):
            self.stats["echo_replies"] += 1
            icmp = b"\0\0\0\0" + body[4:]  # type 0 code 0, checksum 0; same id, seq and data
            icmp = icmp[:2] + struct.pack("!H", checksum(icmp)) + icmp[4:]
            return self._send(peer_mac, src, PROTO_ICMP, icmp)
        if proto == PROTO_UDP and len(body) >= 8:
            sport, dport, length, _ = _UDP.unpack_from(body)
            if dport == ECHO_PORT and 8 <= length <= len(body) and sport \
                    and sport not in REFLECTING_PORTS:
                self.stats["udp_echoes"] += 1
                data = body[8:length]
                return self._send(peer_mac, src, PROTO_UDP,
                                  udp_payload(self.ip, src, ECHO_PORT, sport, data))
        self.stats["ignored"] += 1
        return None

    def _bad_source(self, src: bytes) -> bool:
        """An address no single host sends from: unspecified, loopback, multicast, reserved
        (240/4, the limited broadcast among them) or this subnet's broadcast."""
        ip = ipaddress.IPv4Address(src)
        return (ip.is_unspecified or ip.is_loopback or ip.is_multicast or ip.is_reserved
                or ip == self.network.broadcast_address)

    def _learn(self, ip: bytes, mac: int) -> None:
        """Keep a neighbour, most recent last; past ARP_CACHE_MAX the least recent goes."""
        self.arp.pop(ip, None)
        self.arp[ip] = (mac, self.clock() + ARP_TIMEOUT_US)
        while len(self.arp) > ARP_CACHE_MAX:
            del self.arp[next(iter(self.arp))]

    def _send(self, mac: int, dst: bytes, proto: int, payload: bytes) -> bytes:
        self._ident += 1
        return ipv4_frame(self.mac, mac, self.ip, dst, proto, payload, self._ident)

    # -- output -----------------------------------------------------------------------------------
    def ping(self, target: str, count: int) -> None:
        """Start `count` echo requests to `target` (sent as soon as its MAC is known)."""
        ipaddress.IPv4Address(target)
        self.pings[target] = {"sent": 0, "received": 0, "count": count, "asked_us": -1}

    def pending(self) -> list[bytes]:
        """Frames the stack wants to send now: ARP requests for targets it still has to resolve
        (one a second), echo requests to those it has."""
        out = []
        for target, p in self.pings.items():
            if p["sent"] >= p["count"]:
                continue
            mac = self.lookup(target)
            if mac is None:
                if p["asked_us"] < 0 or self.clock() - p["asked_us"] > 1_000_000:
                    p["asked_us"] = self.clock()
                    out.append(self.arp_request(target))
                continue
            dst = ipaddress.IPv4Address(target).packed
            for seq in range(p["sent"], p["count"]):
                icmp = struct.pack("!BBHHH", 8, 0, 0, self._ping_id, seq + 1) + bytes(56)
                icmp = icmp[:2] + struct.pack("!H", checksum(icmp)) + icmp[4:]
                out.append(self._send(mac, dst, PROTO_ICMP, icmp))
            p["sent"] = p["count"]
        return out

    def lookup(self, ip: str) -> int | None:
        """The MAC of a neighbour, if resolved and not expired."""
        got = self.arp.get(ipaddress.IPv4Address(ip).packed)
        if got is None or got[1] < self.clock():
            return None
        return got[0]

    def arp_request(self, ip: str) -> bytes:
        """Who has `ip`? (broadcast)"""
        return (_ETH.pack(_mac(BROADCAST), _mac(self.mac), ETH_ARP) +
                _ARP.pack(1, ETH_IP, 6, 4, 1, _mac(self.mac), self.ip, bytes(6),
                          ipaddress.IPv4Address(ip).packed))

    def announce(self) -> bytes:
        """A gratuitous ARP: tells the segment (and its bridges) where this address lives."""
        return self.arp_request(str(ipaddress.IPv4Address(self.ip)))
