"""Property tests at every trust boundary (hypothesis): random descriptors and doorbells at each
NIC model, random ring entries and indices at the shell, random images derived from the bundled
ones at the loader, random policies and control frames at the hypervisor.

Each checks: no exception escapes, no byte outside a window changes, no frame is owned twice,
every refusal is counted. `make test` runs a short version; `make fuzz` sets NPA_FUZZ_EXAMPLES
and prints the inputs tried per boundary (tests/conftest.py).
"""
from __future__ import annotations

import os
import struct
from collections import Counter

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import ROOT
from npa.nic_model.frames import Frames
from npa.nic_model.sriov import MODELS, SriovNic
from npa.runtime.guest import size_schedule
from npa.runtime.host import Host
from npa.runtime.hypervisor import Policy, PolicyError
from npa.runtime.sandbox import LoadError, PluginFault, Sandbox, analyse
from npa.runtime.shell import Shell
from npa.shell_api import GUEST_MEMORY_BASE, RING_HDR, Status

EXAMPLES = int(os.environ.get("NPA_FUZZ_EXAMPLES", "40"))
COUNTS: Counter[str] = Counter()  # inputs tried per boundary, read by tests/conftest.py
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
U64 = [0, 1, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 256, 2**64 - 1]
U32 = [0, 1, 13, 14, 60, 1514, 2048, 9728, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]


# -- NIC models: random descriptors and doorbells -------------------------------------------------
LIN, GUEST = 1 << 20, 1 << 18
WINDOW = (0x4000, 0x10000)  # mapped part of the linear memory: where rings may live


def _interesting(rng: np.random.Generator, n: int, base_values: list[int]) -> np.ndarray:
    """u64 values: the window's edges and insides, 64-bit edges, or anything."""
    choices = base_values + [WINDOW[0], WINDOW[1] - 64, GUEST_MEMORY_BASE,
                             GUEST_MEMORY_BASE + GUEST // 2 - 64, GUEST_MEMORY_BASE + GUEST]
    pick = rng.integers(0, 3, n)
    out = rng.integers(0, 2**64 - 1, n, dtype=np.uint64, endpoint=True)  # anything
    out[pick == 0] = rng.choice(np.array(choices, np.uint64), int((pick == 0).sum()))
    inside = rng.integers(WINDOW[0], WINDOW[1], int((pick == 1).sum()))
    out[pick == 1] = inside.astype(np.uint64)
    return out


@FUZZ
@given(model=st.sampled_from(sorted(MODELS)), seed=st.integers(0, 2**32 - 1),
       writes=st.lists(st.tuples(st.integers(0, 0x1FFF), st.sampled_from(U32) | st.integers(0, 2**32 - 1)),
                       max_size=40))
def test_nic_models_survive_random_descriptors_and_doorbells(model, seed, writes):
    rng = np.random.default_rng(seed)
    nic = SriovNic(model, 1)
    vf = nic.vfs[0]
    lin, guest = np.zeros(LIN, np.uint8), np.zeros(GUEST, np.uint8)
    iommu = vf.attach(lin)
    iommu.attach(GUEST_MEMORY_BASE, guest)
    iommu.map(WINDOW[0], WINDOW[1] - WINDOW[0])
    iommu.map(GUEST_MEMORY_BASE, GUEST // 2)  # the second half stays outside the window
    # descriptor memory: random bytes, with u64 fields every 8 bytes biased to hostile addresses
    area = lin[WINDOW[0]:WINDOW[1]]
    area[:] = rng.integers(0, 256, len(area), dtype=np.uint8)
    words = area.view(np.uint64)
    every = rng.random(len(words)) < 0.3
    words[every] = _interesting(rng, int(every.sum()), U64)
    outside = (lin[:WINDOW[0]].copy(), lin[WINDOW[1]:].copy(), guest[GUEST // 2:].copy())
    lens = rng.integers(14, 1515, 64)
    vf.port.deliver(Frames(rng.integers(0, 256, (64, int(lens.max())), dtype=np.uint8), lens))
    regs = sorted(vf.regs)
    for i, (off, val) in enumerate(writes):
        vf.write32(regs[off % len(regs)] if off & 1 else off, val)  # declared registers mostly
        if i % 4 == 3:
            nic.step()
    for _ in range(3):
        nic.step()
    assert (lin[:WINDOW[0]] == outside[0]).all() and (lin[WINDOW[1]:] == outside[1]).all()
    assert (guest[GUEST // 2:] == outside[2]).all(), "a DMA write outside the window"
    assert vf.stats.dma_faults == iommu.faults  # every refused access counted
    COUNTS["nic models: descriptors and doorbells"] += 1


# -- the shell: random ring entries and indices, forwards and backwards ------------------------
_PROD, _CONS = RING_HDR.offsets["producer"], RING_HDR.offsets["consumer"]


class ChaosPlugin:
    """A plugin that takes what a real one would, then writes whatever `draw` says: entries for
    frames it holds, for others, at 64-bit edges; indices forwards, backwards, anywhere."""

    def __init__(self, shell: Shell, draw):
        self.shell, self.draw, self.mem = shell, draw, shell.box.region.mem
        self.held: list[int] = []

    def _idx(self, ring, which: int) -> int:
        return struct.unpack_from("<I", self.mem, ring.addr + which)[0]

    def _set(self, ring, which: int, v: int) -> None:
        struct.pack_into("<I", self.mem, ring.addr + which, v & 0xFFFFFFFF)

    def _take(self, name: str) -> None:
        ring = self.shell.rings[name]
        prod, cons = self._idx(ring, _PROD), self._idx(ring, _CONS)
        n = min((prod - cons) & 0xFFFFFFFF, ring.size)
        self.held += [int(ring.desc["addr"][(cons + i) & ring.mask]) for i in range(n)]
        self._set(ring, _CONS, cons + n)

    def _give(self, name: str) -> None:
        ring, d = self.shell.rings[name], self.draw
        prod = self._idx(ring, _PROD)
        n = d(st.integers(0, 6))
        for i in range(n):
            addr = d(st.sampled_from(self.held) if self.held and d(st.booleans())
                     else st.sampled_from(U64 + [self.shell.pool_base + 2048 * 3]))
            ring.desc[(prod + i) & ring.mask] = (addr, d(st.sampled_from(U32)),
                                                 d(st.integers(0, 0xFFFF)), 0)
            if addr in self.held:
                self.held.remove(addr)
        jump = d(st.sampled_from([0, 0, 0, 1, -1, ring.size, -ring.size, 2**31, 7]))
        self._set(ring, _PROD, prod + n + jump if d(st.booleans()) else prod + jump)

    def _move_back(self) -> None:
        name = self.draw(st.sampled_from(["tx", "fill", "txc", "rx"]))
        ring = self.shell.rings[name]
        which = self.draw(st.sampled_from([_PROD, _CONS]))
        self._set(ring, which, self._idx(ring, which) + self.draw(st.sampled_from([-1, -ring.size, 1, 3])))

    def npa_init(self, cfg_addr: int) -> int:
        return self.draw(st.sampled_from([Status.OK] * 4 + [Status.NOMEM]))

    def npa_poll(self, queue: int, budget: int) -> int:
        self._take("tx")
        self._take("fill")
        for name in self.draw(st.lists(st.sampled_from(["txc", "rx", "back"]), max_size=3)):
            self._move_back() if name == "back" else self._give(name)
        return self.draw(st.sampled_from([0, 5, budget, -Status.DEVICE, 2**31 - 1]))

    def npa_intr(self, vector: int) -> int:
        return self.draw(st.sampled_from([0, 1, 0xFFFFFFFF]))

    def npa_quiesce(self) -> int:
        if self.draw(st.booleans()):
            self._give("txc")
            self._give("rx")
        return self.draw(st.sampled_from([Status.OK, Status.STATE, Status.DEVICE]))

    def npa_reset(self) -> int:
        return Status.OK


@FUZZ
@given(data=st.data())
def test_the_shell_survives_random_entries_and_indices(data):
    nic = SriovNic("ixgbevf", 1)
    shell = Shell(Sandbox(bar=nic.vfs[0]), ring_size=16, frames=64, budget=16,
                  reset_vf=nic.vfs[0].reset)
    shell.resend_after_fault = data.draw(st.booleans())
    frames = Frames(np.zeros((8, 60), np.uint8), np.full(8, 60))
    shell.attach(ChaosPlugin(shell, data.draw), 0)
    for _ in range(data.draw(st.integers(1, 6))):
        shell.transmit(frames)
        shell.poll()
        shell.interrupt(data.draw(st.integers(0, 3)))
        shell.pool.check()  # no frame owned twice, none lost from the books
    shell.quiesce()
    if shell.active:
        shell.drop_plugin()
    shell.pool.check()
    assert shell.held_by_plugin() == 0 and sum(shell.holdings().values()) == shell.nframes
    COUNTS["shell: ring entries and indices"] += 1


# -- the loader: images derived from the bundled ones --------------------------------------------
BUNDLED = [p.read_bytes() for p in sorted((ROOT / "plugins-wasm").glob("*.wasm"))]


@FUZZ
@given(which=st.integers(0, len(BUNDLED) - 1), data=st.data())
def test_the_loader_refuses_mutated_images_with_a_load_error(which, data):
    image = bytearray(BUNDLED[which])
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(st.sampled_from(["flip", "byte", "cut", "insert", "leb"]))
        pos = data.draw(st.integers(0, len(image) - 1))
        if kind == "flip":
            image[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif kind == "byte":
            image[pos] = data.draw(st.integers(0, 255))
        elif kind == "cut":
            del image[pos:pos + data.draw(st.integers(1, 64))]
        elif kind == "insert":
            image[pos:pos] = data.draw(st.binary(min_size=1, max_size=16))
        else:  # a LEB128 that runs on, or a huge count
            image[pos:pos + 1] = data.draw(st.sampled_from([b"\xff\xff\xff\xff\x0f", b"\x80" * 9 + b"\x01"]))
    rep = analyse(bytes(image), use_cache=False)  # never raises: the verdict is in the report
    if rep.error is None:
        try:  # what passed every check loads, or is refused at instantiation with one line
            Sandbox().load(rep)
        except (LoadError, PluginFault) as e:
            assert "\n" not in str(e)
    COUNTS["loader: mutated images"] += 1


# -- the hypervisor: random policies and control frames -----------------------------------------
FIELDS = ["mac", "macs", "trust", "spoofchk", "vlan", "guest_vlans", "max_mtu", "multicast_limit",
          "state", "bogus"]
VALUES = st.one_of(st.integers(-2**70, 2**70), st.booleans(), st.text(max_size=20),
                   st.sampled_from(["02:00:00:00:00:01", "01:00:5e:00:00:01", "auto", "disable"]),
                   st.lists(st.integers(-5, 5000), max_size=4), st.lists(st.text(max_size=8), max_size=3))


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"').encode("unicode_escape").decode() + '"'
    return str(v)


@FUZZ
@given(tables=st.dictionaries(st.sampled_from(["defaults", "vm.vm0", "vm.vm1", "vm", "vm.x y", "other"]),
                              st.dictionaries(st.sampled_from(FIELDS), VALUES, max_size=5), max_size=4),
       raw=st.one_of(st.none(), st.text(max_size=60), st.binary(max_size=40)))
def test_random_policies_are_accepted_or_refused_with_one_line(tmp_path_factory, tables, raw):
    path = tmp_path_factory.getbasetemp() / "fuzz-policy.toml"
    if raw is None:
        text = "".join(f"[{t}]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in body.items())
                       for t, body in tables.items())
        path.write_text(text)
    else:
        path.write_bytes(raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw)
    try:
        pol = Policy.load(path)
    except PolicyError as e:
        assert "\n" not in str(e)
    else:
        for name in ("vm0", "vm1", "vm7"):
            pol.for_vm(name)
    COUNTS["hypervisor: policies"] += 1


@pytest.fixture(scope="module")
def control_host() -> Host:
    h = Host(SriovNic("ixgbevf", 4), (ROOT / "plugins-wasm" / "ixgbevf.wasm").read_bytes(), 2,
             packets=50, sizes=size_schedule(60))
    h.boot()
    return h


MSG = st.recursive(st.one_of(st.integers(-2**63, 2**64 - 1), st.booleans(), st.none(), st.text(max_size=24),
                             st.binary(max_size=8), st.floats(allow_nan=True)),
                   lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                   max_leaves=12)
KINDS = ["set_mac", "set_rx_mode", "add_vlan", "remove_vlan", "set_multicast", "set_mtu", "vf_offer",
         "reply", "nope"]


@FUZZ
@given(frames=st.lists(st.one_of(
    st.binary(max_size=64),
    st.builds(lambda k, body, i: msgpack.packb({"id": i, "kind": k, **body}),
              st.sampled_from(KINDS), st.dictionaries(st.sampled_from(["mac", "groups", "vid", "mtu", "promisc",
                                                                        "allmulti", "x"]), MSG, max_size=3),
              st.integers(-3, 2**64 - 1))), min_size=1, max_size=6))
def test_random_control_frames_never_leave_the_host_loop(control_host, frames):
    h = control_host
    vm = h.vms[0]
    p = h.hv.ports[vm.index]
    while p.guest.recv() is not None:
        pass
    errors = p.control_errors
    p.guest.outbox.extend(frames)
    h.step()  # serves them: nothing escapes
    replies = []
    while (got := p.guest.recv()) is not None:
        replies.append(got[1])
    assert len(replies) == len(frames)  # every frame answered
    assert p.control_errors - errors == sum(r.status == "error" for r in replies)  # and counted
    mcast = vm.vf.port.policy.multicast
    assert all(0 <= g < 2**48 for g in mcast)
    COUNTS["hypervisor: control frames"] += len(frames)


# -- the migration stream: a hostile source talking to a destination -----------------------------
@pytest.fixture(scope="module")
def destination():
    from npa.runtime.host import Fabric
    from npa.runtime.hypervisor import image_for

    plugins = ROOT / "plugins-wasm"
    f = Fabric.build(image_for(plugins, MODELS["vmxnet3"]).read_bytes(), "vmxnet3", "ixgbevf",
                     image_for(plugins, MODELS["ixgbevf"]).read_bytes(), vms=2, vfs=2,
                     repository=plugins, packets=10, sizes=size_schedule(60), pool_frames=64)
    f.boot()
    f.run()
    return f.hosts[1]


def _hello(vm: str, mac: int, frames: int) -> dict:
    return {"v": 1, "kind": "hello", "vm": vm, "mac": mac, "guest": "traffic", "rules": {},
            "frames": frames, "frame_size": 2048, "nic": "vmxnet3", "plugin": "vmxnet3"}


STREAM_KINDS = ["hello", "accept", "refuse", "pages", "round", "state", "resumed", "forward", "done",
                "abort", "teleport"]
STREAM_MSG = st.one_of(
    st.binary(max_size=48),  # not msgpack, or not a map
    st.builds(lambda vm, mac, n: msgpack.packb(_hello(vm, mac, n)),
              st.sampled_from(["vm9", "vm0", "", "a" * 40]), st.sampled_from([0x020000000099, 2**48, -1]),
              st.sampled_from([64, 2, 65537])),
    st.builds(lambda k, body: msgpack.packb({"v": 1, "kind": k, **body}),
              st.sampled_from(STREAM_KINDS),
              st.dictionaries(st.sampled_from(["round", "index", "data", "zero", "pool", "guest", "queued",
                                               "outbox", "frames", "forwarded", "reason", "pages", "bytes"]),
                              MSG | st.builds(lambda n: np.arange(n, dtype="<u4").tobytes(), st.integers(0, 300)),
                              max_size=5)))


@FUZZ
@given(msgs=st.lists(STREAM_MSG, min_size=1, max_size=6), valid_hello_first=st.booleans())
def test_random_migration_streams_leave_the_destination_as_it_was(destination, msgs, valid_hello_first):
    """Whatever a source sends, the destination's loop goes on, and a migration that did not
    complete leaves no VM admitted and no VF taken."""
    from npa.runtime.host.migrate import Incoming
    from npa.runtime.hypervisor import migration as hvm
    from npa.runtime.hypervisor.stream import MemoryLink

    b = destination
    here, there = MemoryLink.pair()
    into = Incoming(b, there)
    b.migrations = [into]
    raw = ([msgpack.packb(_hello("vm9", 0x020000000099, 64))] if valid_hello_first else []) + msgs
    for body in raw:
        there.inbox.append(struct.pack("!I", len(body)) + body)
    for _ in range(len(raw) + 2):
        b.step()  # nothing escapes
    here.close("the source went away")
    for _ in range(3):
        b.step()
    assert into.finished, into.phase  # failed (or, by chance, done)
    if into.vm is not None and into.vm in b.vms:  # it did arrive (a valid stream by chance)
        hvm.release(b.hv, into.vm)
        b.vms.remove(into.vm)
    assert not b.vms and all(not vf.mac and not vf.port.policy.macs for vf in b.nic.vfs)
    COUNTS["migration: stream messages"] += len(raw)


# -- restored state: a pool and an IP stack from a migration stream ------------------------------
def _mutations(value):
    """Values a hostile source might put in place of a field."""
    return st.sampled_from([None, -1, 2**63, 2**64, float("inf"), float("nan"), 1.5, True, "", "x" * 100,
                            b"\x01\x02\x03", [], [2**63], {}, {"x": float("inf")}, value])


POOL = {"frames": 64, "frame_size": 2048, "resend": [3, 1], "lens": [60, 1514], "seq": [0, 1], "next_seq": 2}
STACK = {"mac": 0x020000000001, "address": "10.9.0.2/24", "ident": 7, "ping_id": 9,
         "arp": [[b"\x0a\x09\x00\x03", 0x020000000002, 1000]],
         "pings": {"10.9.0.3": {"sent": 1, "received": 1, "count": 3, "asked_us": 0}},
         "stats": {"echo_replies": 4}}


@FUZZ
@given(which=st.sampled_from(["pool", "stack"]), data=st.data())
def test_a_restored_state_is_applied_whole_or_refused_with_a_value_error(which, data):
    """Every field of a snapshot replaced by a hostile value: the restore takes it or raises
    ValueError (one line for the migration's report); never another exception, never half."""
    from npa.runtime.guest.stack import IpStack
    from npa.runtime.shell.pool import FramePool

    good = POOL if which == "pool" else STACK
    snap = {k: data.draw(_mutations(v)) if data.draw(st.booleans()) else v for k, v in good.items()}
    if which == "pool":
        pool = FramePool(np.zeros(64 * 2048, np.uint8), 1 << 32, 64, 2048)
        before = pool.state.copy()
        try:
            pool.restore(snap)
        except ValueError:
            assert (pool.state == before).all()  # refused: nothing applied
        else:
            pool.check()
    else:
        try:
            stack = IpStack.restore(snap, clock=lambda: 0)
        except ValueError:
            pass
        else:
            assert all(p["count"] <= 1000 for p in stack.pings.values()) and len(stack.arp) <= 256
    COUNTS["migration: restored state"] += 1


# -- a host's control socket: any bytes from any local client ------------------------------------
@FUZZ
@given(payload=st.binary(max_size=64) | st.builds(msgpack.packb, MSG))
def test_the_control_socket_answers_whatever_a_client_sends(tmp_path_factory, payload):
    import socket

    from npa.runtime.host.control import _LEN, ControlServer, Reply, recv

    path = str(tmp_path_factory.mktemp("ctl") / "c.sock")
    server = ControlServer(path)
    try:
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.settimeout(5)
        c.connect(path)
        c.sendall(_LEN.pack(len(payload)) + payload)
        server.ready(_NoHost())
        reply = recv(c, Reply)
        c.close()
    finally:
        server.close()
    assert reply.ok is False and reply.error  # this host can do nothing: every answer says why
    COUNTS["control socket: requests"] += 1


class _NoHost:
    def __getattr__(self, name):
        raise RuntimeError(f"{name}: no host here")


# -- the guest stack: frames from a real network -------------------------------------------------
ADDRS = ["10.5.0.1", "10.5.0.2", "10.5.0.255", "255.255.255.255", "224.0.0.1", "127.0.0.1", "0.0.0.0"]
MACS = [0x02000000AAAA, 0x020000000001, 0xFFFFFFFFFFFF, 0x01005E000001, 0]
NO_SINGLE_HOST = {bytes([255] * 4), bytes([10, 5, 0, 255]), bytes([127, 0, 0, 1]), bytes(4),
                  bytes([224, 0, 0, 1])}


def _ip_frame(dst_mac, src_mac, src, proto, frag, sport, body) -> bytes:
    """An IPv4 frame to the stack's address, with the fragment field `frag` (checksum right)."""
    import ipaddress

    from npa.runtime.guest.stack import checksum, ipv4_frame

    payload = (struct.pack("!HHHH", sport, 7, 8 + len(body), 0) + body if proto == 17
               else struct.pack("!BBHHH", 8, 0, 0, 1, 1) + body)
    f = bytearray(ipv4_frame(src_mac, dst_mac, ipaddress.IPv4Address(src).packed,
                             ipaddress.IPv4Address("10.5.0.2").packed, proto, payload))
    f[20:22] = struct.pack("!H", frag)
    f[24:26] = b"\0\0"
    f[24:26] = struct.pack("!H", checksum(bytes(f[14:34])))
    return bytes(f)


UPLINK_FRAME = st.one_of(
    st.binary(min_size=14, max_size=200),
    st.builds(_ip_frame, st.sampled_from(MACS), st.sampled_from(MACS), st.sampled_from(ADDRS),
              st.sampled_from([1, 17]), st.sampled_from([0, 0x4000, 0x2000, 0x0001]),
              st.sampled_from([7, 19, 0, 40000]), st.binary(max_size=64)))


@FUZZ
@given(frames=st.lists(UPLINK_FRAME, min_size=1, max_size=16))
def test_the_guest_stack_answers_only_what_a_host_should(frames):
    """Hostile frames from the uplink: no exception, no reply to a group MAC or to a source no
    single host can be, no echo of a fragment, a bounded ARP cache."""
    from npa.runtime.guest.stack import IpStack

    s = IpStack(0x020000000001, "10.5.0.2/24", clock=lambda: 0)
    _, replies = s.receive(Frames.from_bytes(frames))
    for r in replies:
        if r[12:14] == b"\x08\x00":  # IPv4: an echo reply, to one host
            assert not r[0] & 1 and r[30:34] not in NO_SINGLE_HOST, r.hex()
    assert len(s.arp) <= 256
    COUNTS["guest stack: frames from the uplink"] += len(frames)
