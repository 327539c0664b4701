"""The uplink port's far side: nothing (`null`), a reflective relay (`loopback`), a Linux TAP
device (`tap:NAME`), or other host processes (`udp:BIND=PEER`); any of them with a capture.

`null` discards what leaves the NIC, like an unplugged cable. `loopback` sends every frame
straight back in, like the external switch of a VEPA setup doing hairpin turns. `tap:NAME`
hands frames to the host's own network stack and takes what it sends (`tap.py`); `udp:` carries
them in datagrams to a peer host process (`dgram.py`). `wire` is a cable to another NIC's uplink
in the same process (`Uplink.cable`), for hosts that share a segment in a deterministic run. A
capture watching the uplink port (`capture.py`) sees every frame that leaves the NIC and every
frame that comes in from outside (a loopback's reflection is the same frame: recorded once).
"""
from __future__ import annotations

from .dgram import Dgram
from .frames import Frames
from .switch import Port, Switch
from .tap import Tap

KINDS = ("null", "loopback", "wire", "tap:NAME", "udp:BIND=PEER")


class Uplink:
    def __init__(self, switch: Switch, port: Port, kind: str = "null"):
        self.switch, self.port, self.kind = switch, port, kind.partition(":")[0]
        if kind.startswith("tap:"):
            self.link: Tap | Dgram | None = Tap(kind[4:])
        elif kind.startswith("udp:"):
            self.link = Dgram(kind[4:])
        elif kind in ("null", "loopback", "wire"):
            self.link = None
        else:
            raise ValueError(f"uplink {kind!r}: use one of {', '.join(KINDS)}")
        self.capture = None  # a `Capture` watching this port, set by the NIC
        self.discarded = 0
        self.peer: Uplink | None = None  # `wire`: the uplink at the cable's other end
        self.inbox: list[Frames] = []  # `wire`: frames the peer sent, in order
        self.stats = {"to_link": 0, "from_link": 0, "link_drops": 0}

    @staticmethod
    def cable(a: "Uplink", b: "Uplink") -> None:
        """Connect two `wire` uplinks: what leaves one NIC enters the other on its next step."""
        if a.kind != "wire" or b.kind != "wire":
            raise ValueError("only `wire` uplinks take a cable")
        a.peer, b.peer = b, a

    def fileno(self) -> int | None:
        """What to wait on for frames from outside (None: nothing comes from outside)."""
        return self.link.fileno() if self.link is not None else None

    def step(self) -> None:
        frames = self.port.receive(self.port.pending())
        if len(frames):
            if self.capture:
                self.capture.record(self.port, frames, inbound=False)
            if self.kind == "loopback":
                self.switch.forward(self.port, frames)
            elif self.peer is not None:
                self.peer.inbox.append(frames)
                self.stats["to_link"] += len(frames)
            elif self.link is not None:
                sent = self.link.write(frames.to_bytes())
                self.stats["to_link"] += sent
                self.stats["link_drops"] += len(frames) - sent
            else:
                self.discarded += len(frames)
        if self.inbox:
            incoming, self.inbox = Frames.concat(self.inbox), []
            self.stats["from_link"] += len(incoming)
            if self.capture:
                self.capture.record(self.port, incoming, inbound=True)
            self.switch.forward(self.port, incoming)
        if self.link is not None and (got := self.link.read()):
            incoming = Frames.from_bytes(got)
            self.stats["from_link"] += len(incoming)
            if self.capture:
                self.capture.record(self.port, incoming, inbound=True)
            self.switch.forward(self.port, incoming)

    def close(self) -> None:
        if self.link is not None:
            self.link.close()
