"""The shell: the guest's side of the data path, always present, driving whichever plugin is in.

It owns the frame pool and the four shell rings. Every entry the plugin writes (on `txc` and
`rx`) is read once, then checked: address inside the pool and on a frame boundary, the frame in
the state the ring implies (sent on `tx` for `txc`, posted on `fill` for `rx`), length within the
frame and the MTU. What fails is refused and counted, never used. A plugin fault (trap, fuel,
deadline, bad status, impossible ring index) disables the plugin, resets the VF, and is kept as
an event with its reason; it never raises out of the shell.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from nic_model.frames import Frames, gather, scatter
from shell_api import DESC_FLAGS, Status

from . import datapath
from .errors import PluginFault
from .rings import RingError
from .sandbox import Sandbox

FREE, TX, FILL, RESEND = 0, 1, 2, 3  # who holds a pool frame: shell, plugin (2 ways), shell
STATE_NAMES = ("free", "tx", "fill", "resend")
UNSENT, EMPTY, ERROR = (DESC_FLAGS[k][0] for k in ("UNSENT", "EMPTY", "ERROR"))
ETH_HEADER = 14
QUIESCE_ROUNDS = 8


class Driver(Protocol):
    """The exports of a plugin (or of any driver speaking the same ABI)."""

    def npa_init(self, cfg_addr: int) -> int: ...
    def npa_poll(self, queue: int, budget: int) -> int: ...
    def npa_intr(self, vector: int) -> int: ...
    def npa_quiesce(self) -> int: ...
    def npa_reset(self) -> int: ...


@dataclass(frozen=True)
class Event:
    time_us: int
    kind: str  # "attach", "detach", "fault"
    reason: str


class Shell:
    def __init__(self, box: Sandbox, *, ring_size: int = 256, frames: int = 2048,
                 frame_size: int = 2048, mtu: int = 1514, budget: int = 256,
                 reset_vf: Callable[[], None] | None = None, clock: Callable[[], int] = lambda: 0):
        self.box, self.budget, self.reset_vf, self.clock = box, budget, reset_vf, clock
        self.dp = datapath.setup(box, ring_size=ring_size, frames=frames, frame_size=frame_size, mtu=mtu)
        self.rings = self.dp.rings
        self.mem = box.region.np
        self.pool_base, self.frame_size, self.nframes, self.mtu = (
            self.dp.pool_base, frame_size, frames, mtu)
        self.state = np.zeros(frames, np.int8)
        self._mark = np.zeros(frames, np.int64)  # scratch for duplicate detection
        self.tx_len = np.zeros(frames, np.int64)  # what the guest handed over, for a re-send
        self.tx_seq = np.zeros(frames, np.int64)  # the order the guest handed frames over in
        self._seq = 0
        self._free = np.arange(frames - 1, -1, -1, dtype=np.int64)  # a stack of free frames
        self._nfree = frames
        self._resend = np.zeros(0, np.int64)
        self._shadow = {r: np.zeros(ring_size, np.int64) for r in ("tx", "fill")}
        self.driver: Driver | None = None
        self.rx_buffers = frames // 2  # at most this many frames posted for RX at a time
        # With an emulated path to fall back to, frames on the TX path when a plugin faults are
        # re-sent there (at least once: the NIC may have sent some) instead of abandoned.
        self.resend_after_fault = False
        self._salvaged: list[Frames] = []  # received frames reaped on the way out of a fault
        self._faulting = False
        self.need_poll = False
        self.stats: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        self.events: list[Event] = []

    # -- plugin lifecycle ----------------------------------------------------------------------
    def attach(self, driver: Driver, features: int, label: str = "plugin") -> bool:
        """Initialise `driver` on this data path; False (and a fault event) if it fails."""
        self.dp.offer(self.box, features)
        self.driver = driver
        status = self._call("npa_init", self.dp.cfg_addr)
        if self.driver is None:
            return False
        if status != Status.OK:
            self._fault(f"npa_init returned {Status.describe(status)}")
            return False
        self.events.append(Event(self.clock(), "attach", label))
        self.need_poll = True
        return True

    def quiesce(self) -> Frames:
        """Take every frame back from the plugin; returns what was received on the way."""
        got, failed = self._quiesce_rounds()
        if failed:
            self._fault(failed)
        got = [self._take_salvaged(), *got]
        if self.driver is not None:
            self._take_back_untaken()
            if held := self.held_by_plugin():
                self._fault(f"npa_quiesce kept {held} frames")
            else:
                self.events.append(Event(self.clock(), "detach", "quiesced"))
                self.driver = None
        return Frames.concat(got)

    def _take_back_untaken(self) -> None:
        """Entries the plugin never took from `tx`/`fill` are still the shell's: the shadow of
        what the shell produced says which frames they are (the ring memory is writable by the
        plugin, so it is not read back)."""
        for name, state in (("tx", TX), ("fill", FILL)):
            ring = self.rings[name]
            try:
                n = ring.available()
            except RingError:
                self._refuse(name, "consumer index ahead of producer", np.ones(1, bool))
                continue
            idx = self._shadow[name][(ring.consumer() + np.arange(n)) & ring.mask]
            idx = idx[self.state[idx] == state]
            if name == "tx":
                self._queue_resend(idx)
            else:
                self._release(idx)
            ring.reset()

    def _call(self, name: str, *args: int) -> int:
        try:
            return getattr(self.driver, name)(*args)
        except PluginFault as e:
            self._fault(str(e))
            return -Status.DEVICE

    def _fault(self, reason: str) -> None:
        if self.driver is None or self._faulting:
            return  # already handled: one fault, one event
        self.events.append(Event(self.clock(), "fault", reason))
        self._faulting = True
        try:  # what the plugin already handed back is reaped, and checked, as on any poll
            self._reap_txc()
            self._salvaged.append(self._reap_rx())
            if self.resend_after_fault:
                self._salvaged.append(self._last_quiesce())
        finally:
            self._faulting = False
        self.drop_plugin()

    def _quiesce_rounds(self) -> tuple[list[Frames], str | None]:
        """Call npa_quiesce until it returns OK, draining txc and rx before each call (STATE: a
        shell ring was full) and after the last. Returns the frames received on the way and,
        when the plugin failed, why."""
        got, failed = [], None
        for _ in range(QUIESCE_ROUNDS):
            self._reap_txc()
            got.append(self._reap_rx())
            if self.driver is None:  # a bad ring entry on the way was a fault
                break
            try:
                status = self.driver.npa_quiesce()
            except PluginFault as e:
                failed = str(e)
                break
            if status == Status.OK:
                break
            if status != Status.STATE:
                failed = f"npa_quiesce returned {Status.describe(status)}"
                break
        self._reap_txc()
        got.append(self._reap_rx())
        return got, failed

    def _last_quiesce(self) -> Frames:
        """A faulted plugin's one chance to hand its frames back exactly (sent, UNSENT, EMPTY),
        under its usual fuel and deadline; every entry is checked as always. Whatever it keeps,
        `drop_plugin` takes back."""
        got, _ = self._quiesce_rounds()
        self._take_back_untaken()
        return Frames.concat(got)

    def drop_plugin(self) -> None:
        """Disable the plugin without its help (after a fault, or a reset by the hypervisor):
        reset the VF and take back every frame it held. Whether a TX frame left the wire is
        unknown: with `resend_after_fault` those are queued to be sent again, in the guest's
        order; otherwise they are counted `tx_abandoned`."""
        self.driver = None
        if self.reset_vf is not None:
            self.reset_vf()
        tx = np.flatnonzero(self.state == TX)
        if self.resend_after_fault:
            self.stats["tx_resent_after_fault"] += len(tx)
            pending = np.concatenate([self._resend, tx])
            self._resend = np.zeros(0, np.int64)
            self._queue_resend(pending[np.argsort(self.tx_seq[pending], kind="stable")])
        else:
            self.stats["tx_abandoned"] += len(tx)
            self._release(tx)
        self._release(np.flatnonzero(self.state == FILL))
        for ring in self.rings.values():
            ring.reset()

    def _take_salvaged(self, *more: Frames) -> Frames:
        got, self._salvaged = self._salvaged, []
        return Frames.concat([*got, *more])

    @property
    def active(self) -> bool:
        return self.driver is not None

    # -- guest side ----------------------------------------------------------------------------
    def transmit(self, frames: Frames) -> int:
        """Queue frames for sending; returns how many were taken (the rest: back-pressure)."""
        if self.driver is None:
            return 0
        if len(self._resend) and not self._flush_resend():
            return 0
        if len(frames) and ((frames.lens < ETH_HEADER) | (frames.lens > self.mtu)).any():
            raise ValueError(f"frames must be {ETH_HEADER} to {self.mtu} bytes")
        n = min(len(frames), self._room("tx"), self._nfree)
        if n == 0:
            return 0
        idx = self._take(n)
        addrs = self.pool_base + idx * self.frame_size
        part = frames if n == len(frames) else frames.take(slice(0, n))
        scatter(self.mem, addrs, part)
        if self._produce("tx", idx, part.lens) < n:  # the plugin broke the ring: a fault
            self._release(idx)
            return 0
        self.state[idx] = TX
        self.tx_len[idx] = part.lens
        self.tx_seq[idx] = self._seq + np.arange(n)
        self._seq += n
        self.stats["tx_frames"] += n
        self.need_poll = True
        return n

    def tx_room(self) -> int:
        """How many frames `transmit` would take now."""
        if self.driver is None or len(self._resend):
            return 0
        return min(self._room("tx"), self._nfree)

    def _flush_resend(self) -> bool:
        """Frames handed back unsent go first, in their order; True when none are left."""
        idx = self._resend
        n = self._produce("tx", idx, self.tx_len[idx])
        self.state[idx[:n]] = TX
        self._resend = idx[n:]
        self.stats["tx_resent"] += n
        return not len(self._resend)

    def poll(self) -> Frames:
        """Refill, let the plugin move frames, take back completions; returns frames received."""
        if self.driver is None:
            return self._take_salvaged()
        self.need_poll = False
        if len(self._resend) and not self._flush_resend():
            self.need_poll = True  # more to re-send once the plugin makes room
        self._refill()
        work = self._call("npa_poll", 0, self.budget)
        if self.driver is not None and work < 0:
            self._fault(f"npa_poll returned {Status.describe(-work)}")
        self.stats["polls"] += 1
        self._reap_txc()
        return self._take_salvaged(self._reap_rx())

    def interrupt(self, vectors: int) -> None:
        """MSI-X messages from the VF: ask the plugin which queues need a poll."""
        v = 0
        while vectors and self.driver is not None:
            if vectors & 1:
                self.stats["interrupts"] += 1
                if self._call("npa_intr", v) & 1:
                    self.need_poll = True
            vectors >>= 1
            v += 1

    # -- frames and rings ----------------------------------------------------------------------
    def _take(self, n: int) -> np.ndarray:
        self._nfree -= n
        return self._free[self._nfree:self._nfree + n].copy()

    def _queue_resend(self, idx: np.ndarray) -> None:
        """Frames that went out on `tx` and came back unsent: first in line, in this order."""
        self.state[idx] = RESEND
        self._resend = np.concatenate([self._resend, idx])

    def _release(self, idx: np.ndarray) -> None:
        self.state[idx] = FREE
        self._free[self._nfree:self._nfree + len(idx)] = idx
        self._nfree += len(idx)

    def _refill(self) -> None:
        """Keep the fill ring topped up, with at most half the pool posted for RX."""
        posted = int(np.count_nonzero(self.state == FILL))
        n = min(self._room("fill"), self._nfree, max(self.rx_buffers - posted, 0))
        if n:
            idx = self._take(n)
            if self._produce("fill", idx, np.full(n, self.frame_size, np.int64)) < n:
                self._release(idx)
                return
            self.state[idx] = FILL

    def _room(self, name: str) -> int:
        try:
            return self.rings[name].free_slots()
        except RingError as e:
            self._fault(str(e))
            return 0

    def _produce(self, name: str, idx: np.ndarray, lens: np.ndarray) -> int:
        ring = self.rings[name]
        prod = ring.producer()
        try:
            n = ring.produce_burst(self.pool_base + idx * self.frame_size, lens)
        except RingError as e:
            self._fault(str(e))
            return 0
        self._shadow[name][(prod + np.arange(n)) & ring.mask] = idx[:n]
        return n

    def _consume(self, ring: str) -> np.ndarray | None:
        try:
            return self.rings[ring].consume_burst()
        except RingError as e:
            self._fault(str(e))
            return None

    def _claim(self, ent: np.ndarray, state: int, ring: str) -> tuple[np.ndarray, np.ndarray]:
        """Which entries name a pool frame that the plugin holds in `state` (first copy only)."""
        off = ent["addr"].astype(np.int64) - self.pool_base
        idx = off // self.frame_size
        ok = (off >= 0) & (idx < self.nframes) & (off % self.frame_size == 0)
        self._refuse(ring, "address outside the pool", ~ok)
        idx = np.where(ok, idx, 0)
        held = ok & (self.state[idx] == state)
        self._refuse(ring, "frame not held by the plugin", ok & ~held)
        sel = idx[held]
        if len(sel) > 1:  # a frame handed back twice in one burst: the last copy counts
            order = np.arange(len(sel))
            self._mark[sel] = order
            twice = np.zeros(len(held), bool)
            twice[np.flatnonzero(held)[self._mark[sel] != order]] = True
            held &= ~twice
            self._refuse(ring, "frame handed back twice", twice)
        return idx, held

    def _refuse(self, ring: str, why: str, mask: np.ndarray) -> None:
        if (n := int(mask.sum())):
            self.refused[f"{ring}: {why}"] += n

    def _reap_txc(self) -> None:
        ent = self._consume("txc")
        if ent is None or not len(ent):
            return
        idx, ok = self._claim(ent, TX, "txc")
        flags = ent["flags"]
        unsent = ok & (flags & UNSENT != 0)
        done = ok & ~unsent
        self.stats["tx_done"] += int(done.sum())
        self.stats["tx_errors"] += int((done & (flags & ERROR != 0)).sum())
        self.stats["tx_unsent"] += int(unsent.sum())
        self._release(idx[done])
        if unsent.any():
            self._queue_resend(idx[unsent])

    def _reap_rx(self) -> Frames:
        ent = self._consume("rx")
        if ent is None or not len(ent):
            return Frames.empty()
        idx, ok = self._claim(ent, FILL, "rx")
        lens = ent["len"].astype(np.int64)
        data = ok & (ent["flags"] & EMPTY == 0)
        bad = data & ((lens < ETH_HEADER) | (lens > self.mtu))
        self._refuse("rx", "bad length", bad)
        good = data & ~bad
        frames = gather(self.mem, self.pool_base + idx[good] * self.frame_size, lens[good])
        self.stats["rx_frames"] += len(frames)
        self.stats["rx_empty"] += int((ok & ~data).sum())
        self._release(idx[ok])
        return frames

    # -- accounting ----------------------------------------------------------------------------
    def holdings(self) -> dict[str, int]:
        counts = np.bincount(self.state, minlength=len(STATE_NAMES))
        return dict(zip(STATE_NAMES, counts.tolist()))

    def held_by_plugin(self) -> int:
        return int(((self.state == TX) | (self.state == FILL)).sum())
