"""The embedded switch: forwards bursts among the VF ports, the PF port and the uplink port.

Forwarding is learning-free: the PF programs which MAC lives on which port (the FDB). In VEB
mode (the default, as on SR-IOV NICs) a unicast frame goes to the port that owns its destination
MAC, an unknown unicast to the uplink, broadcast to every port but the one it came from, and
multicast to the uplink, the PF and the VFs that joined the group (or asked for all-multicast).
In VEPA mode every frame from a VF or the PF goes to the uplink, and an external switch (a
reflective relay: the loopback uplink) sends it back to be delivered by MAC; that is how VM-to-VM
traffic becomes visible on the wire.

A VF port carries the policy the PF programmed (`PortPolicy`), enforced here in hardware, whatever
the VF's driver does. On ingress from the VF: a frame longer than the port's maximum is dropped
(`oversize`); with a port VLAN, a frame the guest tagged itself is dropped and an untagged one is
tagged with the port VLAN; without one, a tag outside the VF's VLAN filter is dropped (`vlan`);
with spoof checking on, a source MAC the VF does not own is dropped (`spoofed`, ixgbe's
"spoofed packets detected"). On egress to the VF: only its port VLAN (tag stripped) or the VLANs
of its filter pass; a promiscuous port also gets every unicast frame that crosses the switch.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace

import numpy as np

from .frames import BROADCAST, Frames, group_addresses, pop_vlan, push_vlan, vlan_tags

FIFO_FRAMES = 4096  # per-port egress buffer, like a NIC's packet buffer share


@dataclass
class PortStats:
    """Counted from the switch's side: rx = frames it took from the port, tx = handed to it."""

    rx_frames: int = 0
    rx_bytes: int = 0
    tx_frames: int = 0
    tx_bytes: int = 0
    drops: int = 0  # egress buffer full, or a frame with nowhere to go
    spoofed: int = 0  # ingress: source MAC the VF does not own
    vlan: int = 0  # ingress: a VLAN tag the VF may not send
    oversize: int = 0  # ingress: longer than the port's maximum frame
    storm: int = 0  # ingress: broadcast or multicast over the port's rate (storm control)


@dataclass(frozen=True)
class PortPolicy:
    """What the PF programmed for a VF's port (`ip link set PF vf N mac|vlan|spoofchk|trust`)."""

    macs: frozenset[int] = frozenset()  # unicast MACs the VF owns: FDB entries, allowed sources
    spoofchk: bool = True
    trusted: bool = False
    vlan: int = 0  # port VLAN: added on ingress, stripped on egress, invisible to the guest
    vlans: frozenset[int] = frozenset()  # guest VLANs (without a port VLAN)
    promisc: bool = False  # the PF grants these to trusted VFs only
    allmulti: bool = False
    multicast: frozenset[int] = frozenset()  # groups the VF joined
    max_frame: int = 1514  # bytes, without FCS and without a VLAN tag
    link: bool = True  # `state disable`: nothing passes to or from the VF
    broadcast_pps: int = 0  # storm control: broadcast frames per second from the VF (0: no limit)
    multicast_pps: int = 0  # and multicast frames (broadcast not included)


@dataclass
class StormBucket:
    """A token bucket in device time: `pps` frames a second, bursts of a tenth of a second
    (at least 32 frames), as switches' storm control counts."""

    tokens: float = -1.0  # -1: full on first use
    at_us: int = 0

    def admit(self, n: int, pps: int, now_us: int) -> int:
        """How many of `n` frames pass now."""
        burst = max(pps // 10, 32)
        if self.tokens < 0:
            self.tokens = burst
        self.tokens = min(burst, self.tokens + (now_us - self.at_us) * pps / 1e6)
        self.at_us = now_us
        passed = min(n, int(self.tokens))
        self.tokens -= passed
        return passed


class Port:
    def __init__(self, index: int, name: str, kind: str, capacity: int = FIFO_FRAMES):
        self.index, self.name, self.kind, self.capacity = index, name, kind, capacity
        self.stats = PortStats()
        self.policy: PortPolicy | None = PortPolicy() if kind == "vf" else None
        self._fifo: deque[Frames] = deque()
        self.queued = 0
        # A VM arriving by migration: frames the switch delivers wait in `_held` (they are newer
        # than any the old host still forwards), while forwarded ones (`pass_through`) flow.
        self.held = False
        self._held: deque[Frames] = deque()
        self.waiting = 0  # frames behind the hold
        self.storm = {"broadcast": StormBucket(), "multicast": StormBucket()}

    def deliver(self, frames: Frames) -> Frames:
        """Egress: buffer frames for the device behind the port (behind the hold, if held);
        what does not fit is dropped. Returns the frames buffered."""
        room = self.capacity - self.queued - self.waiting
        if len(frames) > room:
            self.stats.drops += len(frames) - room
            frames = frames.take(slice(0, room))
        if len(frames):
            if self.held:
                self._held.append(frames)
                self.waiting += len(frames)
            else:
                self._fifo.append(frames)
                self.queued += len(frames)
            self.stats.tx_frames += len(frames)
            self.stats.tx_bytes += frames.nbytes
        return frames

    def pass_through(self, frames: Frames) -> None:
        """Frames forwarded from a VM's old host: ahead of everything held, in order."""
        if len(frames):
            self._fifo.append(frames)
            self.queued += len(frames)

    def release_hold(self) -> None:
        """The old host forwards no more: what waited follows what came through."""
        while self._held:
            self.pass_through(self._held.popleft())
        self.held, self.waiting = False, 0

    def pending(self) -> int:
        return self.queued

    def receive(self, limit: int) -> Frames:
        """Take up to `limit` buffered frames, oldest first."""
        parts, n = [], 0
        while self._fifo and n < limit:
            head = self._fifo[0]
            if len(head) <= limit - n:
                parts.append(self._fifo.popleft())
                n += len(head)
            else:
                k = limit - n
                parts.append(head.take(slice(0, k)))
                self._fifo[0] = head.take(slice(k, None))
                n += k
        self.queued -= n
        return Frames.concat(parts)

    def unreceive(self, frames: Frames) -> None:
        """Put frames taken by `receive` back at the head, in order (the device could not take
        them after all)."""
        if len(frames):
            self._fifo.appendleft(frames)
            self.queued += len(frames)

    def flush(self) -> int:
        """Drop everything buffered (the device behind the port was reset); returns the count."""
        n, self.queued, self.waiting = self.queued + self.waiting, 0, 0
        self._fifo.clear()
        self._held.clear()
        return n


class Switch:
    def __init__(self, mode: str = "veb"):
        if mode not in ("veb", "vepa"):
            raise ValueError(f"switch mode {mode!r}: use veb or vepa")
        self.mode = mode
        self.ports: list[Port] = []
        self.fdb: dict[int, int] = {}  # MAC -> port index, programmed through the PF
        self._promisc = False  # some port takes every unicast frame
        self.uplink: Port | None = None
        self.now_us = 0  # device time, for storm control
        self.capture = None  # a `Capture`: frames at the watched ports other than the uplink

    def add_port(self, name: str, kind: str, capacity: int = FIFO_FRAMES) -> Port:
        port = Port(len(self.ports), name, kind, capacity)
        self.ports.append(port)
        if kind == "uplink":
            self.uplink = port
        return port

    def set_mac(self, port: Port, mac: int) -> None:
        """The port owns exactly `mac` (the PF's `vf N mac`)."""
        self.set_policy(port, macs=frozenset({mac}))

    def set_policy(self, port: Port, **changes) -> None:
        """Program a VF port's policy; its MACs go into the FDB (and leave it when removed)."""
        port.policy = replace(port.policy or PortPolicy(), **changes)
        self.fdb = {m: p for m, p in self.fdb.items() if p != port.index}
        self.fdb.update((m, port.index) for m in port.policy.macs)
        self._promisc = any(p.policy is not None and p.policy.promisc for p in self.ports)

    def _candidates(self, dest_ports: list[int] | None) -> list[Port]:
        """The ports that may take some of a burst: every port when it holds a group frame or
        a port is promiscuous (`dest_ports` None), else only those its unicast frames are
        addressed to (so a burst costs its destinations, not every port of the switch)."""
        if self._promisc or dest_ports is None:
            return self.ports
        return [self.ports[i] for i in dest_ports if i >= 0]

    def _destinations(self, dst: np.ndarray, group: np.ndarray, ingress: Port) -> tuple[np.ndarray, list[int]]:
        """Each frame's port by the FDB (-1: a group address; an unknown unicast goes to the
        uplink, or nowhere, -2, when it came from there), and the ports named."""
        miss = self.uplink.index if self.uplink is not None and ingress is not self.uplink else -2
        n = len(dst)
        if n and not np.count_nonzero(group) and not np.count_nonzero(dst != dst[0]):
            port = self.fdb.get(int(dst[0]), miss)  # the usual burst: one flow, one port
            return np.full(n, port, np.int64), [port]
        dest = np.full(n, -1, np.int64)
        unicast = ~group
        if np.count_nonzero(unicast):
            macs, inverse = np.unique(dst[unicast], return_inverse=True)
            ports = [self.fdb.get(int(m), miss) for m in macs]
            dest[unicast] = np.array(ports, np.int64)[inverse]
            return dest, sorted(set(ports))
        return dest, []

    @staticmethod
    def _owned(macs: np.ndarray, owned: frozenset[int]) -> np.ndarray:
        if len(owned) == 1:
            return macs == np.uint64(next(iter(owned)))
        return np.isin(macs, np.array(sorted(owned), np.uint64))

    def _police(self, port: Port, frames: Frames) -> tuple[Frames, bool]:
        """Ingress enforcement of a VF port's policy; what fails is dropped and counted.
        Returns the frames that pass, and whether any of them may carry a VLAN tag."""
        pol, st = port.policy, port.stats
        if not pol.link:
            st.drops += len(frames)
            return frames.take(slice(0, 0)), False
        tagged, vid = vlan_tags(frames)
        bad = np.zeros(len(frames), bool)
        if np.count_nonzero(tagged):
            bad = frames.lens - 4 * tagged > pol.max_frame
            st.oversize += int(np.count_nonzero(bad))
            bad_vlan = tagged if pol.vlan else tagged & ~np.isin(vid, list(pol.vlans))
            st.vlan += int(np.count_nonzero(bad_vlan & ~bad))  # the guest may not tag over a port VLAN
            bad |= bad_vlan
        elif np.maximum.reduce(frames.lens) > pol.max_frame:
            bad = frames.lens > pol.max_frame
            st.oversize += int(np.count_nonzero(bad))
        if pol.spoofchk:
            owned = self._owned(frames.macs(6), pol.macs)
            if np.count_nonzero(owned) != len(owned):
                st.spoofed += int(np.count_nonzero(~owned & ~bad))
                bad |= ~owned
        if pol.broadcast_pps or pol.multicast_pps:
            bad |= self._storm(port, frames, bad)
        if np.count_nonzero(bad):
            frames = frames.take(~bad)
        if pol.vlan and len(frames):
            return push_vlan(frames, pol.vlan), True
        return frames, bool(np.count_nonzero(tagged) and len(frames))

    def _storm(self, port: Port, frames: Frames, bad: np.ndarray) -> np.ndarray:
        """Storm control: broadcast and multicast frames over the port's rates, to drop."""
        pol, over = port.policy, np.zeros(len(frames), bool)
        dst = frames.macs(0)
        group = group_addresses(dst) & ~bad
        if not np.count_nonzero(group):
            return over
        bcast = group & (dst == BROADCAST)
        for kind, sel, pps in (("broadcast", bcast, pol.broadcast_pps),
                               ("multicast", group & ~bcast, pol.multicast_pps)):
            if pps and sel.any():
                at = np.flatnonzero(sel)
                over[at[port.storm[kind].admit(len(at), pps, self.now_us):]] = True
        port.stats.storm += int(np.count_nonzero(over))
        return over

    def _admits(self, port: Port, dst: np.ndarray, dest: np.ndarray, group: np.ndarray,
                tags: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        """Which frames (destination MACs `dst`, ports `dest`) a VF port takes: by destination,
        group membership and VLAN."""
        pol = port.policy
        if not pol.link:
            return np.zeros(len(dst), bool)
        sel = dest == port.index
        if pol.promisc:
            sel = sel | ~group
        if np.count_nonzero(group):
            sel = sel | (group & (pol.allmulti | (dst == BROADCAST) | self._owned(dst, pol.multicast)))
        tagged, vid = tags
        if pol.vlan:
            return sel & tagged & (vid == pol.vlan)
        if np.count_nonzero(tagged):
            return sel & (~tagged | np.isin(vid, list(pol.vlans)))
        return sel

    def forward(self, ingress: Port, frames: Frames) -> None:
        if not len(frames):
            return
        cap = self.capture
        if cap is not None and ingress is not self.uplink:  # the uplink records its own
            cap.record(ingress, frames, inbound=True)
        ingress.stats.rx_frames += len(frames)
        ingress.stats.rx_bytes += frames.nbytes
        if ingress.policy is not None:
            frames, tagged = self._police(ingress, frames)
        else:
            tagged = True  # not known: look
        n = len(frames)
        if not n:
            return
        if self.mode == "vepa" and ingress is not self.uplink and self.uplink is not None:
            self.uplink.deliver(frames)
            return
        dst = frames.macs(0)
        group = group_addresses(dst)
        dest, ports = self._destinations(dst, group, ingress)
        if ingress.index in ports or -2 in ports:  # back where it came from, or nowhere to go
            ingress.stats.drops += int(np.count_nonzero((dest == ingress.index) | (dest == -2)))
        tags = vlan_tags(frames) if tagged else (np.zeros(n, bool), np.zeros(n, np.int64))
        longest = int(np.maximum.reduce(frames.lens))
        for port in self._candidates(None if np.count_nonzero(group) else ports):
            if port is ingress:
                continue
            if port.policy is None:
                sel = (dest == port.index) | group
            else:
                sel = self._admits(port, dst, dest, group, tags)
                if longest > port.policy.max_frame:  # more than the VF's buffers hold: not delivered
                    big = sel & (frames.lens - 4 * tags[0] > port.policy.max_frame)
                    port.stats.drops += int(np.count_nonzero(big))
                    sel &= ~big
            k = np.count_nonzero(sel)
            if k == n:
                part = frames
            elif k:
                part = frames.take(sel)
            else:
                continue
            part = pop_vlan(part) if port.policy is not None and port.policy.vlan else part
            if cap is not None and port is not self.uplink:
                cap.record(port, port.deliver(part), inbound=False)
            else:
                port.deliver(part)
