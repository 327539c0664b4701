"""A Linux TAP device: the uplink's far side on the host's own network stack.

Opened through /dev/net/tun with TUNSETIFF (IFF_TAP | IFF_NO_PI: raw Ethernet frames, no packet
information header), non-blocking; created if absent, and gone when closed unless it existed
before (a persistent device made with `ip tuntap add`). Frames are read and written in bursts.
"""
from __future__ import annotations

import fcntl
import os
import socket
import struct
from pathlib import Path

TUNSETIFF, TUNGETIFF = 0x400454CA, 0x800454D2
SIOCGIFFLAGS, SIOCSIFFLAGS = 0x8913, 0x8914
IFF_TAP, IFF_NO_PI = 0x0002, 0x1000
IFF_UP = 0x1
MAX_BURST = 256
MAX_FRAME = 65536


class TapError(OSError):
    """The TAP device cannot be opened; the message says why and what to do, in one line."""


class Tap:
    def __init__(self, name: str):
        if not name or len(name.encode()) > 15 or "/" in name:
            raise TapError(f"tap:{name}: an interface name is 1 to 15 bytes, no '/'")
        self.name = name
        self.existed = Path(f"/sys/class/net/{name}").exists()
        try:
            self.fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            raise TapError(f"tap:{name}: no /dev/net/tun (load the tun module, or run where "
                           "TUN/TAP is available)") from None
        except PermissionError:
            raise TapError(f"tap:{name}: permission denied on /dev/net/tun (run as root or with "
                           "CAP_NET_ADMIN)") from None
        try:
            fcntl.ioctl(self.fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
        except OSError as e:
            os.close(self.fd)
            raise TapError(f"tap:{name}: TUNSETIFF failed: {e.strerror} (root or CAP_NET_ADMIN "
                           "needed; is the name taken by another kind of device?)") from None
        self._link_up()

    @classmethod
    def adopt(cls, fd: int) -> "Tap":
        """A TAP device another process opened, from its descriptor (passed over a Unix
        socket): TapError unless the descriptor is a TAP of raw Ethernet frames."""
        try:
            ifr = fcntl.ioctl(fd, TUNGETIFF, struct.pack("16sH", b"", 0))
        except OSError as e:
            raise TapError(f"a descriptor that is not a TAP device: {e.strerror}") from None
        name, flags = struct.unpack_from("16sH", ifr)
        if flags & (IFF_TAP | IFF_NO_PI) != IFF_TAP | IFF_NO_PI:
            raise TapError(f"{name.rstrip(bytes(1)).decode()}: not a TAP of raw frames (flags 0x{flags:x})")
        tap = cls.__new__(cls)
        tap.name, tap.existed, tap.fd = name.rstrip(bytes(1)).decode(), False, fd
        os.set_blocking(fd, False)
        return tap

    def _link_up(self) -> None:
        """Set the device administratively up, as `ip link set NAME up` does, so that the first
        frames the VMs send (their gratuitous ARPs) reach the host's stack."""
        name = self.name.encode()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                ifr = fcntl.ioctl(s, SIOCGIFFLAGS, struct.pack("16sH14x", name, 0))
                flags = struct.unpack_from("16sH", ifr)[1]
                if not flags & IFF_UP:
                    fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH14x", name, flags | IFF_UP))
            except OSError as e:
                self.close()
                raise TapError(f"tap:{self.name}: cannot set the link up: {e.strerror}") from None

    def fileno(self) -> int:
        return self.fd

    def read(self, limit: int = MAX_BURST) -> list[bytes]:
        """Up to `limit` frames that are waiting; none blocks."""
        out = []
        while len(out) < limit:
            try:
                out.append(os.read(self.fd, MAX_FRAME))
            except BlockingIOError:
                break
        return out

    def write(self, frames: list[bytes]) -> int:
        """Send frames to the host's stack; returns how many it took (a full queue drops)."""
        sent = 0
        for f in frames:
            try:
                os.write(self.fd, f)
                sent += 1
            except (BlockingIOError, OSError):
                break
        return sent

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # a device this process created goes with its last descriptor
            self.fd = -1
