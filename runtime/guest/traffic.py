"""The guest's workload: a traffic generator and a sink that checks what arrives.

Frames are real IPv4/UDP, so captures dissect in Wireshark and tshark:
    0  Ethernet II: dst MAC, src MAC, EtherType 0x0800
    14 IPv4: no options, DF, TTL 64, UDP; from 10.a.b.c to 10.d.e.f, the low three bytes of the
       source and destination MACs; identification = seq & 0xFFFF; header checksum filled in
    34 UDP: source port 49152 + flow id, destination port 9 (discard), checksum 0 (none)
    42 flow id u16 (BE)     44 seq u64 (BE)
    52 payload: byte at frame offset i is (seq * 31 + i) & 0xFF
A frame's length is a function of its flow's size schedule and its sequence number, so the sink
checks length, header and every payload byte, and tells apart loss, duplication, reordering and
corruption, each counted. Headers are written and read as numpy columns over a whole burst.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Annotated

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictBytes, StrictInt

from npa.nic_model.frames import MAX_CLASSES, Frames, clear_padding, column, equal, macs_of, size_classes

ETHERTYPE = 0x88B5  # IEEE "local experimental": raw test frames that are not IPv4 (the suite's)
ETH_IPV4, UDP = 0x0800, 17
ETH_RARP = 0x8035  # what a hypervisor announces a migrated VM's MAC with
SPORT_BASE, DISCARD_PORT = 49152, 9
HEADER = 52  # Ethernet, IPv4, UDP, flow id, seq
MIN_FRAME, MAX_FRAME = 60, 1514
IMIX = (60, 60, 60, 60, 60, 60, 60, 590, 590, 590, 590, 1514)  # 7:4:1, sizes without FCS


def size_schedule(spec: str | int, seed: int = 1) -> np.ndarray:
    """Frame sizes cycled by sequence number: a fixed size, `imix`, or `mixed` (60..1514)."""
    if isinstance(spec, int) or str(spec).isdigit():
        size = int(spec)
        if not MIN_FRAME <= size <= MAX_FRAME:
            raise ValueError(f"frame size {size}: use {MIN_FRAME} to {MAX_FRAME} bytes")
        return np.array([size], np.int64)
    if spec == "imix":
        return np.array(IMIX, np.int64)
    if spec == "mixed":
        return np.random.default_rng(seed).integers(MIN_FRAME, MAX_FRAME + 1, 4093).astype(np.int64)
    raise ValueError(f"frame size {spec!r}: use a number of bytes, imix or mixed")


# Row k: the bytes of a frame whose seq is k modulo 256 ((31 * seq + offset) & 0xFF repeats
# every 256 frames); a payload is one row copy.
_PAYLOAD = ((31 * np.arange(256)[:, None] + np.arange(MAX_FRAME)) & 0xFF).astype(np.uint8)


@lru_cache(maxsize=16)
def _payload_rows(width: int) -> np.ndarray:
    """The payload rows cut to `width` bytes, contiguous (a take from them is a block copy)."""
    rows = np.ascontiguousarray(_PAYLOAD[:, :width])
    rows.flags.writeable = False
    return rows


def _mac_bytes(mac: int) -> np.ndarray:
    return np.frombuffer(mac.to_bytes(6, "big"), np.uint8)


@dataclass
class Flow:
    """One direction of traffic: `count` frames from `src` to `dst`."""

    id: int
    src: int
    dst: int
    count: int
    sizes: np.ndarray
    sent: int = 0  # frames the shell accepted

    def to_dict(self) -> dict:
        return {"id": self.id, "src": self.src, "dst": self.dst, "count": self.count,
                "sizes": self.sizes.astype("<i8").tobytes(), "sent": self.sent}

    @classmethod
    def from_dict(cls, d: dict) -> "Flow":
        sizes = np.frombuffer(d["sizes"], "<i8").astype(np.int64)
        if not len(sizes) or sizes.min() < MIN_FRAME or sizes.max() > MAX_FRAME:
            raise ValueError(f"flow {d['id']}: frame sizes outside {MIN_FRAME}..{MAX_FRAME}")
        if not 0 <= d["sent"] <= d["count"]:
            raise ValueError(f"flow {d['id']}: {d['sent']} of {d['count']} frames sent")
        return cls(d["id"], d["src"], d["dst"], d["count"], sizes, d["sent"])


Count = Annotated[StrictInt, Field(ge=0, lt=1 << 40)]
Mac = Annotated[StrictInt, Field(ge=0, lt=1 << 48)]
MAX_FLOWS = 4096


class FlowState(BaseModel):
    """A flow as a migration stream carries it (`Flow.to_dict`)."""

    model_config = ConfigDict(extra="forbid")
    id: Annotated[StrictInt, Field(ge=0, lt=1 << 31)]
    src: Mac
    dst: Mac
    count: Annotated[StrictInt, Field(ge=1, lt=1 << 40)]
    sizes: Annotated[StrictBytes, Field(min_length=8, max_length=8 << 16)]
    sent: Count


class GenState(BaseModel):
    """What `TrafficGen.snapshot` gives, checked whole before anything is built from it."""

    model_config = ConfigDict(extra="forbid")
    burst: Annotated[StrictInt, Field(ge=1, le=4096)]
    turn: Annotated[StrictInt, Field(ge=0, lt=1 << 31)]
    flows: list[FlowState] = Field(max_length=MAX_FLOWS)


class CheckState(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: Annotated[StrictInt, Field(ge=0, lt=1 << 31)]
    expected_next: Count
    received: Count
    duplicates: Count
    reordered: Count
    corrupted: Count
    missing: list[Count] = Field(max_length=1 << 16)


class SinkState(BaseModel):
    """What `Sink.snapshot` gives, checked whole before anything is built from it."""

    model_config = ConfigDict(extra="forbid")
    mac: Mac
    unexpected: Count
    frames: Count
    announcements: Count
    flows: list[FlowState] = Field(max_length=MAX_FLOWS)
    checks: list[CheckState] = Field(max_length=MAX_FLOWS)


def bind(d: dict, known: dict[int, Flow]) -> Flow:
    """The flow a migrated guest state names: the one this process already has by that id (a
    deterministic run shares its flows between hosts), updated; else a new one."""
    new = Flow.from_dict(d)
    flow = known.setdefault(new.id, new)
    if (flow.src, flow.dst, flow.count) != (new.src, new.dst, new.count):
        raise ValueError(f"flow {new.id}: not the flow this host knows by that id")
    flow.sent = max(flow.sent, new.sent)
    return flow


class TrafficGen:
    def __init__(self, flows: list[Flow], burst: int = 256):
        self.flows, self.burst = flows, burst
        self._turn = 0

    @property
    def done(self) -> bool:
        return all(f.sent == f.count for f in self.flows)

    def snapshot(self) -> dict:
        return {"burst": self.burst, "turn": self._turn, "flows": [f.to_dict() for f in self.flows]}

    @classmethod
    def restore(cls, snap: dict, known: dict[int, Flow]) -> "TrafficGen":
        snap = GenState.model_validate(snap).model_dump()
        gen = cls([bind(d, known) for d in snap["flows"]], snap["burst"])
        gen._turn = snap["turn"] % max(len(gen.flows), 1)
        return gen

    def next_burst(self, limit: int, window: dict[int, int] | None = None) -> tuple[Flow, Frames] | None:
        """The next frames of one flow (round-robin), at most `limit` and the flow's window."""
        for k in range(len(self.flows)):
            flow = self.flows[(self._turn + k) % len(self.flows)]
            n = min(limit, self.burst, flow.count - flow.sent)
            if window is not None:
                n = min(n, window.get(flow.id, n))
            if n > 0:
                self._turn = (self._turn + k + 1) % len(self.flows)
                return flow, build(flow, flow.sent, n)
        return None


def _ip_of(mac: int) -> bytes:
    return bytes([10]) + mac.to_bytes(6, "big")[3:]


def _u16(values: np.ndarray) -> np.ndarray:
    return np.asarray(values, ">u2").view(np.uint8).reshape(-1, 2)


@lru_cache(maxsize=4096)
def _header(src: int, dst: int, flow_id: int) -> tuple[np.ndarray, int]:
    """A flow's first HEADER bytes with the per-frame fields zero (IPv4 total length,
    identification and checksum, UDP length, seq), and the IPv4 header's 16-bit word sum."""
    h = np.zeros(HEADER, np.uint8)
    h[0:6], h[6:12] = _mac_bytes(dst), _mac_bytes(src)
    h[12:16] = (ETH_IPV4 >> 8, ETH_IPV4 & 0xFF, 0x45, 0)
    h[20:24] = (0x40, 0, 64, UDP)
    h[26:30] = np.frombuffer(_ip_of(src), np.uint8)
    h[30:34] = np.frombuffer(_ip_of(dst), np.uint8)
    h[34:38] = _u16([SPORT_BASE + flow_id, DISCARD_PORT]).ravel()
    h[42:44] = _u16([flow_id]).ravel()
    h.flags.writeable = False
    return h, int(h[14:34].view(">u2").sum())


def build(flow: Flow, first: int, n: int) -> Frames:
    """Frames `first`..`first + n - 1` of `flow`."""
    return frames_of(flow, np.arange(first, first + n, dtype=np.int64), consecutive=True)


def frames_of(flow: Flow, seq: np.ndarray, consecutive: bool = False) -> Frames:
    """The frames of `flow` with these sequence numbers (int64, 0 or more), as sent: a block
    per length when the flow has few (as a burst gathered from memory), else one block.
    `consecutive`: the caller knows `seq` is a run (its layout by length is then looked up)."""
    k = len(flow.sizes)
    if k == 1:
        size = int(flow.sizes[0])
        # & 0xFF, not mode="wrap", which subtracts 256 until an index is in range
        data = _payload_rows(size).take(seq & 0xFF, axis=0)
        _write_headers(data, flow, seq, size)
        return Frames(data, np.full(len(seq), size, np.int64))
    if consecutive and len(seq) and k <= MAX_CLASSES * 8:
        lens, classes = _layout(flow.sizes.tobytes(), int(seq[0]) % k, len(seq))
    else:
        lens = flow.sizes[seq % k]
        classes = _classes(lens)
    if classes is None:  # many lengths: one block, padding cleared
        width = int(np.maximum.reduce(lens)) if len(seq) else HEADER
        data = _payload_rows(width).take(seq & 0xFF, axis=0)
        _write_headers(data, flow, seq, lens)
        clear_padding(data, lens)  # as a frame read from memory: nothing past its end
        return Frames(data, lens)
    head = np.empty((len(seq), HEADER), np.uint8)
    _write_headers(head, flow, seq, lens)
    blocks = []
    for ln, pos in classes:
        data = _payload_rows(ln).take(seq[pos] & 0xFF, axis=0)
        data[:, :HEADER] = head[pos]
        blocks.append((pos, data))
    return Frames.of_blocks(lens, blocks)


def _classes(lens: np.ndarray) -> list[tuple[int, np.ndarray]] | None:
    """Each distinct length of a burst with the positions of its frames, when there are few."""
    lengths = size_classes(lens)
    if lengths is None:
        return None
    return [(ln, np.flatnonzero(lens == ln)) for ln in lengths]


@lru_cache(maxsize=256)
def _layout(sizes: bytes, phase: int, n: int) -> tuple[np.ndarray, list | None]:
    """The lengths and length classes of `n` consecutive frames of a size schedule, starting at
    `phase` in it: the same for every burst of a steady flow, so built once."""
    schedule = np.frombuffer(sizes, np.int64)
    lens = schedule[(phase + np.arange(n)) % len(schedule)]
    lens.flags.writeable = False
    classes = _classes(lens)
    for _, pos in classes or ():
        pos.flags.writeable = False
    return lens, classes


def _write_headers(data: np.ndarray, flow: Flow, seq: np.ndarray, lens) -> None:
    """The first HEADER bytes of each row: frames `seq` of `flow` (`lens`: one length or one
    each), as 16-bit big-endian columns over the flow's template."""
    ip_len = lens - 14
    head, word_sum = _header(flow.src, flow.dst, flow.id)
    ident = seq & 0xFFFF
    data[:, :HEADER] = head
    h = data[:, :HEADER].view(">u2")  # the header as 16-bit columns, in place
    h[:, 8], h[:, 9], h[:, 19] = ip_len, ident, ip_len - 20  # IPv4 length, id; UDP length
    # The IPv4 checksum: the one's complement of the folded word sum, and a folded sum x > 0
    # is ((x - 1) mod 0xFFFF) + 1.
    h[:, 12] = 0xFFFE - (ident + (ip_len + word_sum - 1)) % 0xFFFF
    data[:, 44:52].view(">u8")[:, 0] = seq


@dataclass
class FlowCheck:
    """What a sink saw of one flow."""

    expected_next: int = 0
    received: int = 0  # good frames, first copy
    duplicates: int = 0
    reordered: int = 0
    corrupted: int = 0
    missing: set[int] = field(default_factory=set)


class Sink:
    def __init__(self, mac: int, flows: list[Flow]):
        self.mac = mac
        self.flows = {f.id: f for f in flows}
        self.check = {f.id: FlowCheck() for f in flows}
        self.unexpected = 0  # frames of no flow this sink expects
        self.announcements = 0  # RARP announcements of a migrated VM's MAC (not traffic)
        self.frames = 0

    def snapshot(self) -> dict:
        return {"mac": self.mac, "unexpected": self.unexpected, "frames": self.frames,
                "announcements": self.announcements, "flows": [f.to_dict() for f in self.flows.values()],
                "checks": [{**vars(c), "id": fid, "missing": sorted(c.missing)}
                           for fid, c in self.check.items()]}

    @classmethod
    def restore(cls, snap: dict, known: dict[int, Flow]) -> "Sink":
        snap = SinkState.model_validate(snap).model_dump()
        sink = cls(snap["mac"], [bind(d, known) for d in snap["flows"]])
        sink.unexpected, sink.frames = snap["unexpected"], snap["frames"]
        sink.announcements = snap["announcements"]
        for c in snap["checks"]:
            c = dict(c)
            fid = c.pop("id")
            if fid not in sink.check:
                raise ValueError(f"sink: a check for flow {fid}, which it does not receive")
            sink.check[fid] = FlowCheck(**{**c, "missing": set(c["missing"])})
        return sink

    def receive(self, frames: Frames) -> None:
        n = len(frames)
        if not n:
            return
        self.frames += n
        if frames.width < HEADER:
            self.unexpected += n
            return
        h = frames.rows(HEADER)  # the headers, a row each (a view of a one-block burst)
        ethertype = column(h, 12, ">u2")
        rarp = ethertype == ETH_RARP
        if (k := int(np.count_nonzero(rarp))):
            self.announcements += k
            frames, n, h = frames.take(~rarp), n - k, h[~rarp]
            if not n:
                return
            ethertype = ethertype[~rarp]
        flow_id, seq = column(h, 42, ">u2"), column(h, 44, ">u8")
        ours = (ethertype == ETH_IPV4) & (h[:, 23] == UDP) & (column(h, 36, ">u2") == DISCARD_PORT)
        ours &= (macs_of(h, 0) == self.mac) & (frames.lens >= HEADER)
        seen = 0
        for fid, flow in self.flows.items():
            sel = ours & (flow_id == fid)
            if (k := int(np.count_nonzero(sel))):
                seen += k
                part = frames if k == n else frames.take(sel)
                self._flow(flow, self.check[fid], part, seq if k == n else seq[sel])
        self.unexpected += n - seen

    def _flow(self, flow: Flow, c: FlowCheck, frames: Frames, seq: np.ndarray) -> None:
        """Each frame must be, byte for byte and in length, the frame the flow sent with its
        sequence number."""
        s = seq.astype(np.int64)
        run = not np.count_nonzero(s[1:] - s[:-1] != 1)  # consecutive (modulo 2**64)
        if run and 0 <= s[0] <= s[-1] < flow.count:  # s[0] <= s[-1]: no wrap on the way
            plausible, sent = True, frames_of(flow, s, consecutive=True)
        elif np.minimum.reduce(s) >= 0 and np.maximum.reduce(s) < flow.count:
            plausible, sent = True, frames_of(flow, s)
        else:
            plausible = (s >= 0) & (s < flow.count)
            sent = frames_of(flow, np.where(plausible, s, 0))
        good = plausible & equal(frames, sent)
        if (bad := len(s) - int(np.count_nonzero(good))):
            c.corrupted += bad
            s = s[good]
            run = not np.count_nonzero(s[1:] - s[:-1] != 1)
        if len(s) and s[0] == c.expected_next and run:
            c.expected_next += len(s)  # the common case: in order, nothing missing
            c.received += len(s)
            return
        for x in s.tolist():
            if x == c.expected_next:
                c.expected_next += 1
                c.received += 1
            elif x > c.expected_next:
                c.missing.update(range(c.expected_next, x))
                c.expected_next = x + 1
                c.received += 1
            elif x in c.missing:
                c.missing.discard(x)
                c.reordered += 1
                c.received += 1
            else:
                c.duplicates += 1

    def lost(self, flow_id: int) -> int:
        """Frames the shell accepted on that flow and the sink has not received."""
        return self.flows[flow_id].sent - self.check[flow_id].received

    def clean(self) -> bool:
        return self.unexpected == 0 and all(
            c.duplicates == c.reordered == c.corrupted == 0 and self.lost(fid) == 0
            for fid, c in self.check.items())
