"""Ethernet frames in UDP datagrams between host processes, as QEMU's `-netdev dgram`: one frame
a datagram, so hosts share a segment without root. `udp:BIND=PEER` binds BIND (host:port) and
sends every frame to PEER (host:port)."""
from __future__ import annotations

import socket

MAX_BURST = 256


class DgramError(OSError):
    """The segment cannot be joined; the message says why, in one line."""


def _addr(text: str, what: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise DgramError(f"udp: {what} {text!r} is not HOST:PORT")
    return host or "127.0.0.1", int(port)


class Dgram:
    def __init__(self, spec: str):
        bind, sep, peer = spec.partition("=")
        if not sep:
            raise DgramError(f"udp:{spec}: use udp:BIND=PEER, e.g. udp:127.0.0.1:7000=127.0.0.1:7001")
        self.bind, self.peer = _addr(bind, "bind address"), _addr(peer, "peer address")
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.sock.bind(self.bind)
        except OSError as e:
            self.sock.close()
            raise DgramError(f"udp:{spec}: cannot bind {self.bind[0]}:{self.bind[1]}: {e.strerror}") from None
        self.sock.setblocking(False)

    def fileno(self) -> int:
        return self.sock.fileno()

    def read(self, limit: int = MAX_BURST) -> list[bytes]:
        out = []
        while len(out) < limit:
            try:
                data, _ = self.sock.recvfrom(65536)
            except (BlockingIOError, ConnectionRefusedError):
                break
            if len(data) >= 14:
                out.append(data)
        return out

    def write(self, frames: list[bytes]) -> int:
        sent = 0
        for f in frames:
            try:
                self.sock.sendto(f, self.peer)
                sent += 1
            except (BlockingIOError, ConnectionRefusedError):
                break
        return sent

    def close(self) -> None:
        self.sock.close()
