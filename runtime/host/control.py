"""A host process's control socket: a Unix stream socket answering management requests.

Each message is a 4-byte big-endian length and a msgpack map, validated against the schema
below (one module for both ends): `status`; `ping` (a VM pings an address; the results show in
`status`); and live migration (`npa migrate`): `listen` (open a TCP listener for one incoming
migration; the reply's `data.address` says where), `migrate` (send VM `vm` to the host listening
at `to`; its progress shows in `status`), `resume` and `release` (a VM whose migration ended uncertain goes on
here, or is let go here because the destination runs it), and `take_guest` (a migration source hands a Linux
guest's TAP over, as file-descriptor passing: the descriptor rides with the request's first bytes, SCM_RIGHTS).
A malformed request is answered with an error and the connection closed; it never stops the host, and a
descriptor that came with any other request is closed unused.
"""
from __future__ import annotations

import os
import socket
import struct
from typing import Any, Literal

import msgpack
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from npa.runtime.hypervisor.stream import brief
from npa.runtime.sandbox import NpaError

VERSION = 1
MAX_MESSAGE = 1 << 20
_LEN = struct.Struct("!I")


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int = VERSION
    op: Literal["status", "ping", "listen", "migrate", "resume", "release", "take_guest"]
    vm: str = Field("", max_length=32)  # ping: from this VM; migrate, resume: this VM
    target: str = Field("", max_length=64)  # ping: to this IPv4 address
    count: int = Field(1, ge=1, le=1000)
    to: str = Field("", max_length=256)  # migrate: HOST:PORT of the destination's listener
    handover: str = Field("", max_length=256)  # migrate: the destination's control socket
    mac: int = Field(0, ge=0, lt=1 << 48)  # take_guest: the MAC of the VM whose TAP this is


class Reply(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int = VERSION
    ok: bool
    error: str = ""
    status: dict[str, Any] | None = None
    data: dict[str, Any] | None = None  # what an operation returns (listen: the address)


class ControlError(OSError):
    """The control socket cannot be opened or answered badly; one line says why."""


def send(sock: socket.socket, msg: BaseModel, fds: list[int] = ()) -> None:
    data = msgpack.packb(msg.model_dump())
    frame = _LEN.pack(len(data)) + data
    if fds:  # the descriptors ride with the first bytes
        frame = frame[socket.send_fds(sock, [frame], list(fds)):]
    if frame:  # (an empty send to a peer that answered and closed would be EPIPE)
        sock.sendall(frame)


def recv(sock: socket.socket, model: type[BaseModel], fds: list[int] | None = None) -> BaseModel:
    """One message; with `fds`, descriptors that came with its first bytes are appended."""
    if fds is None:
        head = _read(sock, _LEN.size)
    else:
        head, got, _, _ = socket.recv_fds(sock, _LEN.size, 4)
        fds += got
        if not head:
            raise ControlError("the control connection closed mid-message")
        head += _read(sock, _LEN.size - len(head))
    (n,) = _LEN.unpack(head)
    if n > MAX_MESSAGE:
        raise ControlError(f"control message of {n} bytes; the limit is {MAX_MESSAGE}")
    try:
        return model.model_validate(msgpack.unpackb(_read(sock, n), strict_map_key=True))
    except (ValidationError, ValueError, TypeError, msgpack.UnpackException) as e:
        first = (str(e).splitlines() or [type(e).__name__])[0]  # msgpack's may be empty
        raise ControlError(f"malformed control message: {first}") from None


def _read(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ControlError("the control connection closed mid-message")
        buf += chunk
    return buf


class ControlServer:
    """Listens on `path`; `ready(host)` serves one waiting connection (the host loop calls it
    when select says so)."""

    def __init__(self, path: str):
        self.path = path
        if os.path.exists(path):
            if not _stale(path):
                raise ControlError(f"{path}: another host answers on this control socket")
            os.unlink(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.bind(path)
        except OSError as e:
            self.sock.close()
            raise ControlError(f"{path}: cannot open the control socket: {e.strerror}") from None
        self.sock.listen(8)
        self.sock.setblocking(False)

    def fileno(self) -> int:
        return self.sock.fileno()

    def ready(self, host) -> None:
        try:
            conn, _ = self.sock.accept()
        except BlockingIOError:
            return
        fds: list[int] = []
        with conn:
            conn.settimeout(2.0)
            try:
                req = recv(conn, Request, fds)
                data = None
                if req.op == "take_guest":
                    if len(fds) != 1:
                        raise ControlError(f"take_guest: {len(fds)} descriptors came; one is the TAP")
                    host.take_guest(req.mac, fds[0])
                    fds.clear()  # the host's now
                elif req.op == "ping":
                    host.ping(req.vm, req.target, req.count)
                elif req.op == "listen":
                    data = {"address": host.listen()}
                elif req.op == "migrate":
                    host.migrate(req.vm, req.to, req.handover)
                elif req.op in ("resume", "release"):
                    data = {"reason": host.settle(req.vm, req.op)}
                send(conn, Reply(ok=True, status=host.status(), data=data))
            except Exception as e:  # noqa: BLE001 - every request gets an answer; the host goes on
                why = str(e) if isinstance(e, (ControlError, OSError, ValueError, NpaError)) \
                    else f"internal error: {type(e).__name__}: {e}"
                try:
                    send(conn, Reply(ok=False, error=brief(why)))
                except (OSError, ValueError):
                    pass
            finally:
                for fd in fds:  # came with a request that takes none, or was refused
                    os.close(fd)

    def close(self) -> None:
        self.sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def _stale(path: str) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        return False
    except OSError:
        return True
    finally:
        s.close()


def ask(path: str, op: str = "status", timeout: float = 5.0, fds: list[int] = (), **fields) -> Reply:
    """One request to the host answering on `path` (`fds`: descriptors passed with it)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        send(s, Request(op=op, **fields), fds)
        return recv(s, Reply)
    except OSError as e:
        raise ControlError(f"{path}: {e.strerror or e}") from None
    finally:
        s.close()
