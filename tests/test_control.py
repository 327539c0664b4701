"""Control surfaces from the untrusted side: a host's control socket (any client on the
machine) and a VM's control channel (its guest): every request gets an answer, never an
exception out of the host loop, and an answer names the request it answers."""
from __future__ import annotations

import socket

import msgpack
import pytest

from npa.nic_model.sriov import SriovNic
from npa.runtime.guest import size_schedule
from npa.runtime.host import Host
from npa.runtime.host.control import _LEN, ControlServer, Reply, recv
from npa.runtime.hypervisor.control import Reply as ChannelReply
from npa.runtime.hypervisor.control import decode

from helpers import ROOT

IXGBEVF = (ROOT / "plugins-wasm" / "ixgbevf.wasm").read_bytes()


class ExplodingHost:
    """A host whose every operation fails in a way no one planned for."""

    def status(self):
        raise RuntimeError("boom")

    def ping(self, *_):
        raise RuntimeError("boom")


def _ask_raw(server: ControlServer, path: str, payload: bytes, host) -> Reply:
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.connect(path)
    c.settimeout(5)
    c.sendall(_LEN.pack(len(payload)) + payload)
    server.ready(host)  # what the host loop does when select says the socket is readable
    try:
        return recv(c, Reply)
    finally:
        c.close()


@pytest.mark.parametrize("payload", [b"\xc1", b"\x91", msgpack.packb({"op": "status", "x": 1}),
                                     msgpack.packb([1, 2]), msgpack.packb({"op": "ping", "count": 10**9}),
                                     msgpack.packb({"op": "status"})])
def test_the_control_socket_answers_every_request(tmp_path, payload):
    """0xC1 (never used in msgpack) once stopped `npa host` with an IndexError; a host that
    raises something unplanned is answered too."""
    path = str(tmp_path / "c.sock")
    server = ControlServer(path)
    try:
        reply = _ask_raw(server, path, payload, ExplodingHost())
    finally:
        server.close()
    assert reply.ok is False and reply.error
    if payload == msgpack.packb({"op": "status"}):
        assert "internal error: RuntimeError: boom" in reply.error
    else:
        assert reply.error.startswith("malformed control message")


def test_a_malformed_channel_request_is_answered_with_its_own_id():
    h = Host(SriovNic("ixgbevf", 4), IXGBEVF, 2, packets=10, sizes=size_schedule(60))
    h.boot()
    p = h.hv.ports[h.vms[0].index]
    p.host.inbox.append(msgpack.packb({"id": 7, "kind": "set_mac", "mac": 5}))
    h.hv.serve(h.vms[0])
    replies = [m for m in iter(p.guest.recv, None) if isinstance(m[1], ChannelReply)]
    assert [(i, r.status) for i, r in replies] == [(7, "error")]
    assert p.control_errors == 1
    h.close()


class TakingHost:
    """A host that keeps the TAPs handed to it, as `RealtimeHost.take_guest` does."""

    def __init__(self):
        self.taken: list[tuple[int, int]] = []

    def take_guest(self, mac, fd):
        self.taken.append((mac, fd))

    def status(self):
        return {}


def _ask_with_fds(server: ControlServer, path: str, request: dict, fds: list[int], host) -> Reply:
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.connect(path)
    c.settimeout(5)
    payload = msgpack.packb({"version": 1, **request})
    frame = _LEN.pack(len(payload)) + payload
    sent = socket.send_fds(c, [frame], fds) if fds else 0
    c.sendall(frame[sent:]) if sent < len(frame) else None
    server.ready(host)
    try:
        return recv(c, Reply)
    finally:
        c.close()


def _open_fds() -> int:
    import os
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("request_, nfds, taken, error", [
    ({"op": "take_guest", "mac": 2}, 1, 1, ""),
    ({"op": "take_guest", "mac": 2}, 0, 0, "0 descriptors came"),
    ({"op": "take_guest", "mac": 2}, 3, 0, "3 descriptors came"),
    ({"op": "status"}, 2, 0, ""),  # descriptors with a request that takes none: closed unused
    ({"op": "take_guest", "mac": 1 << 48}, 1, 0, "malformed"),
])
def test_descriptors_reach_the_host_only_with_take_guest_and_none_leaks(tmp_path, request_, nfds,
                                                                        taken, error):
    import os
    path = str(tmp_path / "c.sock")
    pipes = [os.pipe() for _ in range(nfds)]
    before = _open_fds()
    server, host = ControlServer(path), TakingHost()
    try:
        r = _ask_with_fds(server, path, request_, [rd for rd, _ in pipes], host)
    finally:
        server.close()
    assert r.ok == (not error) and error in r.error, r
    assert len(host.taken) == taken
    for _, fd in host.taken:
        os.close(fd)
    assert _open_fds() == before  # what the host did not take was closed, nothing left open
    for rd, wr in pipes:
        os.close(rd)
        os.close(wr)
