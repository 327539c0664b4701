"""The migration stream between two hosts: versioned msgpack messages, one schema for both ends.

On the wire each message is a 4-byte big-endian length and one msgpack map tagged by `kind`.
Every message is validated on arrival (strict types, no unknown field, bounded sizes): the other
host is as untrusted as a plugin, and a malformed or truncated stream ends the link with one
line saying why, which the migration turns into "the VM stays where it was".

    source                                   destination
    hello (VM, MAC, rules, pool geometry) ->
                                          <- accept (its NIC, its plugin) | refuse (why)
    pages (round r: page numbers, data)  ->    pre-copy: round 0 all pages, then the dirty ones
    round (r, pages, bytes)              ->
    ... the VM paused: the last dirty pages, then
    state (pool, guest, queued frames)   ->
                                          <- resumed (VF, data path, plugin) | abort (why)
    forward (frames reaching the source) ->    until the fabric has learned the new port
    done (frames forwarded)              ->

Two carriers: `SocketLink` (TCP between host processes; a reader and a writer thread, so a
host loop never blocks on the network) and `MemoryLink` (a pair in one process, for
deterministic runs); both encode and validate every message.
"""
from __future__ import annotations

import os
import queue
import socket
import struct
import threading
from collections import deque
from typing import Annotated, Any, Literal, Union

import msgpack
from pydantic import BaseModel, ConfigDict, Field, StrictBytes, StrictStr, TypeAdapter, ValidationError

VERSION = 1
MAX_MESSAGE = 8 << 20  # bytes; a page message is at most PAGES_PER_MESSAGE pages and its index
PAGES_PER_MESSAGE = 256
MAX_FRAMES = 8192  # frames in one state or forward message
_LEN = struct.Struct("!I")

Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,32}$")]
Text = Annotated[str, Field(max_length=1000)]
Frame = Annotated[bytes, Field(min_length=14, max_length=16384)]
U48 = Annotated[int, Field(ge=0, lt=1 << 48)]
Count = Annotated[int, Field(ge=0, lt=1 << 40)]


def brief(text: str, limit: int = 1000) -> str:
    """A reason as a message may carry it (Text: at most 1,000 characters), cut with an ellipsis:
    a reason quoted from the other host and prefixed may not make a message invalid."""
    return text if len(text) <= limit else text[:limit - 1] + "…"


class StreamError(OSError):
    """The link ended: dropped, closed, or a message that is not valid. One line says which."""


class _Msg(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    v: Literal[1] = VERSION


class Hello(_Msg):
    kind: Literal["hello"] = "hello"
    vm: Name
    mac: U48
    ip: Annotated[str, Field(max_length=64)] = ""  # ADDR/PREFIX of a VM with an IP stack
    guest: Literal["traffic", "stack"]  # which guest it is: a traffic generator, or an IP stack
    rules: dict[StrictStr, Any]  # the source's rules for the VM (validated as a policy table)
    frames: Annotated[int, Field(ge=2, le=65536)]
    frame_size: Annotated[int, Field(ge=256, le=16384)]
    nic: Text
    plugin: Text


class Accept(_Msg):
    kind: Literal["accept"] = "accept"
    nic: Text
    plugin: Text
    vf: Annotated[int, Field(ge=0, lt=64)]


class Refuse(_Msg):
    kind: Literal["refuse"] = "refuse"
    reason: Text


class Pages(_Msg):
    kind: Literal["pages"] = "pages"
    round: Annotated[int, Field(ge=0, le=64)]
    index: StrictBytes  # page numbers, u32 little-endian, of the pages in `data`
    data: StrictBytes  # those pages, 4 KiB each
    zero: StrictBytes = b""  # page numbers of pages that are all zero (not sent)


class Round(_Msg):
    kind: Literal["round"] = "round"
    round: Annotated[int, Field(ge=0, le=64)]
    pages: Count
    bytes: Count


class State(_Msg):
    kind: Literal["state"] = "state"
    pool: dict[StrictStr, Any]
    guest: dict[StrictStr, Any]
    queued: list[Frame] = Field(max_length=MAX_FRAMES)  # frames at the VM's port, oldest first
    outbox: list[Frame] = Field(default=[], max_length=MAX_FRAMES)  # the guest's unsent frames


class Resumed(_Msg):
    kind: Literal["resumed"] = "resumed"
    vf: Annotated[int, Field(ge=0, lt=64)]
    mode: Text
    plugin: Text
    reason: Text = ""


class Forward(_Msg):
    kind: Literal["forward"] = "forward"
    frames: list[Frame] = Field(max_length=MAX_FRAMES)


class Done(_Msg):
    kind: Literal["done"] = "done"
    forwarded: Count


class Abort(_Msg):
    kind: Literal["abort"] = "abort"
    reason: Text


Message = Annotated[Union[Hello, Accept, Refuse, Pages, Round, State, Resumed, Forward, Done, Abort],
                    Field(discriminator="kind")]
_adapter = TypeAdapter(Message)


def encode(msg: BaseModel) -> bytes:
    data = msgpack.packb(msg.model_dump(), use_bin_type=True)
    if len(data) > MAX_MESSAGE:
        raise ValueError(f"{msg.kind} message of {len(data)} bytes; the limit is {MAX_MESSAGE}")
    return _LEN.pack(len(data)) + data


def decode(body: bytes) -> BaseModel:
    """One message from its msgpack body; StreamError naming what is wrong."""
    try:
        raw = msgpack.unpackb(body, raw=False, strict_map_key=True, max_bin_len=MAX_MESSAGE)
    except (ValueError, TypeError, msgpack.UnpackException) as e:
        raise StreamError(f"malformed migration message: {e}") from None
    if not isinstance(raw, dict):
        raise StreamError("malformed migration message: not a map")
    if raw.get("v") != VERSION:
        raise StreamError(f"migration stream version {raw.get('v')!r}; this host speaks {VERSION}")
    try:
        return _adapter.validate_python(raw)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"])
        raise StreamError(f"invalid {raw.get('kind', '?')} message: {where}: {err['msg']}") from None


class MemoryLink:
    """One end of an in-process pair: messages go through `encode`/`decode` as on a socket."""

    def __init__(self):
        self.inbox: deque[bytes] = deque()
        self.peer: MemoryLink | None = None
        self.closed, self.error = False, ""

    @classmethod
    def pair(cls) -> tuple["MemoryLink", "MemoryLink"]:
        a, b = cls(), cls()
        a.peer, b.peer = b, a
        return a, b

    def send(self, msg: BaseModel) -> None:
        if not self.closed:
            self.peer.inbox.append(encode(msg))

    def poll(self) -> BaseModel | None:
        """The next message, or None (check `closed` then: the link ended, `error` says why)."""
        if not self.inbox:
            if self.peer.closed and not self.closed:
                self.closed, self.error = True, self.peer.error or "the connection closed"
            return None
        data = self.inbox.popleft()
        try:
            return decode(data[_LEN.size:])
        except StreamError as e:
            self.close(str(e))
            return None

    def close(self, error: str = "") -> None:
        self.closed = True
        self.error = self.error or error or "closed"


class SocketLink:
    """A connected TCP socket; threads move whole messages so that the host loop never waits."""

    def __init__(self, sock: socket.socket, peer: str = ""):
        self.sock, self.peer = sock, peer
        self.inbox: queue.Queue = queue.Queue()
        self.outbox: queue.Queue = queue.Queue()
        self.closed, self.error = False, ""
        self.sent_bytes = 0
        self._wake_r, self._wake_w = os.pipe()  # readable when a message (or the end) came
        os.set_blocking(self._wake_r, False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._threads = [threading.Thread(target=f, daemon=True) for f in (self._reader, self._writer)]
        for t in self._threads:
            t.start()

    @classmethod
    def connect(cls, address: str, timeout: float = 5.0) -> "SocketLink":
        host, port = _host_port(address)
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as e:
            raise StreamError(f"migration stream to {address}: {e.strerror or e}") from None
        sock.settimeout(None)
        return cls(sock, address)

    def _reader(self) -> None:
        try:
            while True:
                head = self._read(_LEN.size)
                if head is None:
                    raise StreamError("the connection closed")
                (n,) = _LEN.unpack(head)
                if n > MAX_MESSAGE:
                    raise StreamError(f"a migration message of {n} bytes; the limit is {MAX_MESSAGE}")
                body = self._read(n)
                if body is None:
                    raise StreamError("the connection closed mid-message (truncated stream)")
                self.inbox.put(decode(body))
                self._wake()
        except (StreamError, OSError) as e:
            self._end(str(e) if isinstance(e, StreamError) else f"connection: {e.strerror or e}")

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"!")
        except OSError:
            pass  # the pipe is full (the loop will look anyway) or closed

    def fileno(self) -> int:
        """For select: readable when there is something to `poll`."""
        return self._wake_r

    def _read(self, n: int) -> bytes | None:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(min(n - len(buf), 1 << 20))
            if not chunk:
                return None
            buf += chunk
        return bytes(buf)

    def _writer(self) -> None:
        while True:
            data = self.outbox.get()
            if data is None:
                break
            try:
                self.sock.sendall(data)
                self.sent_bytes += len(data)
            except OSError as e:
                self._end(f"connection: {e.strerror or e}")
                return
        try:
            self.sock.shutdown(socket.SHUT_WR)  # everything queued went out; the peer sees EOF
        except OSError:
            pass

    def _end(self, why: str) -> None:
        if not self.closed:
            self.error = self.error or why
            self.closed = True
            self._wake()

    def send(self, msg: BaseModel) -> None:
        if not self.closed:
            self.outbox.put(encode(msg))

    def poll(self) -> BaseModel | None:
        try:
            return self.inbox.get_nowait()
        except queue.Empty:
            pass
        try:
            os.read(self._wake_r, 4096)
        except OSError:
            pass
        try:  # a message put between the first look and the drain
            return self.inbox.get_nowait()
        except queue.Empty:
            return None

    def close(self, error: str = "") -> None:
        """Send what is queued, then end the connection (the reader ends when the peer does)."""
        if error:
            self.error = self.error or error
        self.outbox.put(None)

    def drop(self) -> None:
        """End the connection now, queued messages or not (a host going away)."""
        self._end("dropped")
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def _host_port(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise StreamError(f"{address!r}: give HOST:PORT")
    return host or "127.0.0.1", int(port)


class Listener:
    """A TCP listener for one incoming migration; `accept()` when select says it is ready."""

    def __init__(self, address: str = "127.0.0.1:0"):
        host, _, port = address.rpartition(":")
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((host or "127.0.0.1", int(port or 0)))
        except (OSError, ValueError) as e:
            self.sock.close()
            raise StreamError(f"migration listener {address}: {getattr(e, 'strerror', None) or e}") from None
        self.sock.listen(1)
        self.sock.setblocking(False)
        self.address = "%s:%d" % self.sock.getsockname()

    def fileno(self) -> int:
        return self.sock.fileno()

    def accept(self) -> SocketLink | None:
        try:
            conn, peer = self.sock.accept()
        except BlockingIOError:
            return None
        conn.setblocking(True)
        return SocketLink(conn, "%s:%d" % peer)

    def close(self) -> None:
        self.sock.close()
