"""A real Linux network stack as a VM's guest (`npa host --guest tap|netns`).

The guest's NIC is a TAP device whose other side is the Linux kernel: what the kernel sends
through it is what the guest transmits, and what npa writes to it the guest receives. With
`netns`, the device lives in a network namespace of its own (`npa-<host>-vm<i>`), named eth0,
with the VM's MAC and MTU, its address, the link up and a default route: any Linux program runs
there (`ip netns exec npa-<host>-vm0 iperf3 ...`). With `tap`, the device stays in the host's
namespace under the VM's name, with the VM's MAC and MTU, for the user to configure.

Frames are read only as many as the shell has room for: the rest wait in the kernel's queue, so
npa drops nothing of its own. The guest's link is watched over netlink (pyroute2): a new MAC, MTU
or promiscuous mode set in the guest (`ip link set eth0 ...`) is reported by `link_changes()`, and
the host turns it into a control request that the hypervisor's policy decides, as for any guest.
"""
from __future__ import annotations

import ipaddress
import itertools
import os
import select
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from npa.nic_model.frames import format_mac
from npa.nic_model.tap import Tap, TapError

IFF_PROMISC = 0x100
GUESTS = ("stack", "tap", "netns")
_made = itertools.count()  # TAPs made here, for a unique name before each moves to its namespace


class GuestError(OSError):
    """A Linux guest cannot be set up; the message says why, in one line."""


class GuestState(BaseModel):
    """A Linux guest as a migration stream carries it (validated: the source is untrusted)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["tap", "netns"]
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,8}-vm[0-9]{1,2}$")]
    netns: Annotated[str, Field(pattern=r"^npa-[A-Za-z0-9_-]{1,8}-vm[0-9]{1,2}$")] | None
    address: Annotated[str, Field(max_length=18)] | None
    mtu: Annotated[int, Field(ge=68, le=65535)]


@dataclass(frozen=True)
class Link:
    """What the host last saw of the guest's link."""

    mac: int
    mtu: int
    promisc: bool
    groups: frozenset = frozenset()  # link-layer multicast groups joined


@contextmanager
def _inside(netns: str | None):
    """This thread in network namespace `netns` for the block (None: where it is). Never makes
    one (pyroute2's own helpers create a missing namespace); sockets opened inside stay there."""
    if netns is None:
        yield
        return
    from pyroute2.netns import setns

    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        setns(netns, flags=0)
        try:
            yield
        finally:
            setns(home, flags=0)
    finally:
        os.close(home)


def _netlink(netns: str | None):
    """A netlink route socket in `netns`, opened from inside it: pyroute2's IPRoute(netns=...)
    forks a child for it, 70 ms in a process as large as a host's, three per adopted guest."""
    from pyroute2 import IPRoute

    with _inside(netns):
        return IPRoute()


class LinuxGuest:
    def __init__(self, name: str, mac: int, mtu: int, address: str | None = None,
                 netns: str | None = None):
        """The guest's TAP, `name` in the host's namespace (`netns` None), or eth0 inside a new
        namespace `netns` with `address` (ADDR/PREFIX) and a default route."""
        from pyroute2 import IPRoute, netns as namespaces  # only real guests need netlink

        self.name, self.netns, self.address = name, netns, address
        self.stats: Counter = Counter()
        self.decisions: list[str] = []  # the hypervisor's answers to its link changes, latest last
        self._monitor = self._query = None
        made = False
        try:
            if netns is not None:
                if netns in namespaces.listnetns():
                    raise GuestError(f"network namespace {netns} exists already (another host "
                                     "with this --name?); remove it with `ip netns del`")
                namespaces.create(netns)
                made = True
            temp = name if netns is None else f"npa{os.getpid() % 100000}g{next(_made)}"
            self.tap = Tap(temp)
            with IPRoute() as ipr:
                index = ipr.link_lookup(ifname=temp)[0]
                if netns is not None:
                    ipr.link("set", index=index, net_ns_fd=netns)
            with _netlink(netns) as ipr:
                index = ipr.link_lookup(ifname=temp)[0]
                ipr.link("set", index=index, ifname="eth0" if netns else temp,
                         address=format_mac(mac), mtu=mtu)
                if netns is not None:
                    ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
                    if address is not None:
                        iface = ipaddress.IPv4Interface(address)
                        ipr.addr("add", index=index, address=str(iface.ip),
                                 prefixlen=iface.network.prefixlen)
                ipr.link("set", index=index, state="up")
                if netns is not None and address is not None:
                    ipr.route("add", dst="0.0.0.0/0", oif=index)  # the segment is the guest's world
            self._watch(index, Link(mac, mtu, False))
        except TapError as e:
            self._undo(made)
            raise GuestError(str(e)) from None
        except GuestError:
            self._undo(made)
            raise
        except Exception as e:  # netlink refused (no root, a name taken): one line
            self._undo(made)
            raise GuestError(f"guest {netns or name}: cannot set up its link: {e}") from None

    def _watch(self, index: int, link: Link) -> None:
        self.index, self.link = index, link
        self._monitor = _netlink(self.netns)
        self._monitor.bind()  # link notifications, read when its descriptor is ready
        self._query = _netlink(self.netns)

    @classmethod
    def adopt(cls, fd: int, state: "GuestState", mac: int) -> "LinuxGuest":
        """The guest a migration source handed over: its TAP's descriptor (ours now, closed on
        failure) and what the source said of it, checked against the device itself."""
        g = cls.__new__(cls)
        g.name, g.netns, g.address = state.name, state.netns, state.address
        g.stats, g.decisions, g._monitor, g._query = Counter(), [], None, None
        try:
            g.tap = Tap.adopt(fd)
        except TapError as e:
            os.close(fd)
            raise GuestError(f"the guest's TAP: {e}") from None
        try:
            if g.tap.name != ("eth0" if g.netns else g.name):
                raise GuestError(f"the handed-over TAP is {g.tap.name}, not the guest's")
            with _netlink(g.netns) as ipr:
                index = ipr.link_lookup(ifname=g.tap.name)[0]
            # as a new guest's: the first look asks this host's VF for what the guest has now
            # (its multicast groups above all: the switch here knows none of them yet)
            g._watch(index, Link(mac, state.mtu, False))
            return g
        except Exception as e:
            g.release()
            raise GuestError(f"guest {g.netns or g.name}: {e}") from None

    def state(self) -> "GuestState":
        """What a migration carries of it (the TAP itself goes by descriptor passing)."""
        return GuestState(kind=self.kind, name=self.name, netns=self.netns,
                          address=self.address, mtu=self.link.mtu)

    def _undo(self, made_netns: bool) -> None:
        self.release()
        if made_netns:
            from pyroute2 import netns as namespaces
            namespaces.remove(self.netns)

    @property
    def kind(self) -> str:
        return "netns" if self.netns else "tap"

    @property
    def where(self) -> str:
        """Where a user finds the guest: its namespace, or its TAP device."""
        return self.netns or self.name

    # -- frames ---------------------------------------------------------------------------------
    def fileno(self) -> int | None:
        """What to wait on for the guest's frames (None: its device is gone)."""
        return None if self.tap is None else self.tap.fileno()

    def read(self, limit: int, max_frame: int) -> list[bytes]:
        """Up to `limit` frames the guest kernel sent; one longer than `max_frame` (the guest
        raised its MTU past the VM's) is dropped and counted, as a NIC drops what it cannot
        send."""
        if limit <= 0 or self.tap is None:
            return []
        try:
            got = self.tap.read(limit)
        except OSError as e:  # the device was deleted under us (`ip link del`): counted, once
            self.stats["tap_error"] = e.strerror or str(e)
            self.tap.close()  # so that it is not waited on again
            self.tap = None
            return []
        keep = [f for f in got if 14 <= len(f) <= max_frame]
        if len(keep) != len(got):
            self.stats["tx_too_long"] += len(got) - len(keep)
        self.stats["tx_frames"] += len(keep)
        return keep

    def write(self, frames: list[bytes]) -> None:
        """Frames for the guest kernel; what its full queue does not take is counted."""
        taken = self.tap.write(frames) if self.tap is not None else 0
        self.stats["rx_frames"] += taken
        self.stats["rx_dropped"] += len(frames) - taken

    # -- the guest's link -----------------------------------------------------------------------
    def _groups(self) -> frozenset:
        """The multicast groups the guest's device joined (IPv6 neighbour discovery's among
        them), as `ip maddr` reads them: /proc/net/dev_mcast, read inside its namespace."""
        device = "eth0" if self.netns else self.name
        with _inside(self.netns):
            with open("/proc/net/dev_mcast") as f:
                rows = [line.split() for line in f]
        return frozenset(int(r[4], 16) for r in rows if len(r) == 5 and r[1] == device)

    def watch_fileno(self) -> int | None:
        """What to wait on for link changes (None: no longer watched)."""
        return None if self._monitor is None else self._monitor.fileno()

    def _unwatch(self) -> None:
        """The device moved where this host's netlink does not reach (`ip link set DEV netns
        X`, as a user of `--guest tap` may): its frames still flow, its link changes are no
        longer seen, and that is counted."""
        self.stats["link_unwatched"] = 1
        self._close_netlink()

    def _close_netlink(self) -> None:
        for sock in (self._monitor, self._query):
            if sock is not None:
                sock.close()
        self._monitor = self._query = None

    def link_changes(self) -> list[tuple[str, object]]:
        """What the guest changed on its link since the last call: ("mac", int), ("mtu", int),
        ("promisc", bool), ("multicast", frozenset of groups), in that order, each once with its
        value now. A netlink notification
        only wakes this up; the values are asked for, as notifications can come late."""
        if self._monitor is None:
            return []
        while select.select([self._monitor], [], [], 0)[0]:  # drain the notifications (get()
            self._monitor.get()  # blocks when there is none)
        try:
            now = self._query.link("get", index=self.index)[0]
        except Exception:  # noqa: BLE001 - the device left this namespace (the user moved it)
            self._unwatch()
            return []
        mac = now.get_attr("IFLA_ADDRESS")
        latest = Link(int(mac.replace(":", ""), 16), now.get_attr("IFLA_MTU"),
                      bool(now["flags"] & IFF_PROMISC), self._groups())
        changes: list[tuple[str, object]] = []
        if latest.mac != self.link.mac:
            changes.append(("mac", latest.mac))
        if latest.mtu != self.link.mtu:
            changes.append(("mtu", latest.mtu))
        if latest.promisc != self.link.promisc:
            changes.append(("promisc", latest.promisc))
        if latest.groups != self.link.groups:
            changes.append(("multicast", latest.groups))
        self.link = latest
        return changes

    def release(self) -> None:
        """Let go of the guest without ending it (it runs on another host now): our descriptor
        closes, the device and the namespace stay with the other host's."""
        self._close_netlink()
        if getattr(self, "tap", None) is not None:
            self.tap.close()
            self.tap = None

    def close(self) -> None:
        """The TAP goes (and with it the device, when ours was its last descriptor), then the
        namespace."""
        self.release()
        if self.netns is not None:
            from pyroute2 import netns as namespaces
            try:
                namespaces.remove(self.netns)
            except OSError:
                pass  # gone already
