"""The shell: the guest's side of the data path, always present, driving whichever plugin is in.

It owns the frame pool (`pool`) and the four shell rings (`rings`); every entry the plugin
writes is checked before use (`reaping`). This module is the plugin's lifecycle (attach,
quiesce, fault) and the guest's side (transmit, poll, interrupt). A plugin fault (trap, fuel,
deadline, bad status, impossible ring index) disables the plugin, resets the VF, and is kept as
an event with its reason; it never raises out of the shell.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from time import perf_counter
from typing import Callable, Protocol

import numpy as np

from npa.nic_model.frames import Frames
from npa.runtime.sandbox import PluginFault, Sandbox
from npa.shell_api import Feature, Status

from . import datapath
from .pool import FILL, TX, FramePool
from .reaping import ETH_HEADER, Reaper
from .rings import RingError
from .settle import settle

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
        self.mtu = mtu
        self.pool = FramePool(self.dp.guest.np, self.dp.pool_base, frames, frame_size)
        self.stats: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        self.reaper = Reaper(self.pool, self.rings, mtu, self.stats, self.refused)
        self.record = None  # the VF's DMA record while a driver of the VF is attached
        self.fuel = 0  # fuel the plugin's export calls used, all told (the fairness account)
        self.wall_s = 0.0  # and the wall time they took, host calls included
        self.driver: Driver | None = None
        self.rx_buffers = frames // 2  # at most this many frames posted for RX at a time
        self._buffer_lens = np.full(frames, frame_size, np.int64)  # what a fill entry says
        # With an emulated path to fall back to, TX frames the device never read when a plugin
        # faults are re-sent there (its record says which), instead of abandoned.
        self.resend_after_fault = False
        self._salvaged: list[Frames] = []  # received frames reaped on the way out of a fault
        self._faulting = False
        self.need_poll = False
        self.polled = False  # the driver takes no interrupts: it is polled on every host step
        self.events: list[Event] = []

    @property
    def pool_base(self) -> int:
        return self.pool.base

    @property
    def frame_size(self) -> int:
        return self.pool.frame_size

    @property
    def nframes(self) -> int:
        return self.pool.nframes

    @property
    def active(self) -> bool:
        return self.driver is not None

    # -- plugin lifecycle ----------------------------------------------------------------------
    def attach(self, driver: Driver, features: int, label: str = "plugin", *,
               on_vf: bool = True) -> bool:
        """Initialise `driver` on this data path; False (and a fault event) if it fails.
        `on_vf`: it drives the VF, whose DMA record then holds it to the truth (the emulated
        vNIC is the hypervisor's and moves frames itself)."""
        self.dp.offer(self.box, features)
        self.polled = not features & Feature.INTR  # no interrupts: polled on every step
        self.record = self.reaper.record = self.dp.record if on_vf else None
        if self.record is not None:
            self.record.clear()  # a new driver: no grant from before reaches its device
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
                self._reset_rings()  # the next driver starts every ring at index 0
        return Frames.concat(got)

    def _take_back_untaken(self) -> None:
        """Entries the plugin never took from `tx`/`fill` are still the shell's. With a broken
        consumer index nothing is taken from the ring: the frames stay TX/FILL, and
        `drop_plugin` takes them back by their state."""
        for name in ("tx", "fill"):
            try:
                idx = self.reaper.untaken(name)
            except RingError as e:
                self.reaper.refuse(name, str(e).split(": ", 1)[-1], np.ones(1, bool))
                continue
            if self.record is not None:
                self.record.revoke(idx)  # back with the shell: the device may not touch them
            if name == "tx":
                self.pool.queue_resend(idx)
            else:
                self.pool.release(idx)

    def fault(self, reason: str) -> None:
        """Disable the plugin for `reason` (the hypervisor's watchdog and fairness account call
        this); its frames are settled as on any fault."""
        self._fault(reason)

    def _call(self, name: str, *args: int) -> int:
        if self.driver is None:  # dropped for a fault a moment ago: never called again
            return -Status.DEVICE
        fn = getattr(self.driver, name)
        t0 = perf_counter()
        try:
            return fn(*args)
        except (PluginFault, RingError) as e:
            self._fault(str(e))
            return -Status.DEVICE
        finally:
            self.wall_s += perf_counter() - t0
            if (meter := getattr(fn, "fuel_used", None)) is not None:
                self.fuel += meter()

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
        reset the VF, then settle every frame it held against the device's own record (see
        `settle`); received frames the settlement delivers reach the guest on the next poll."""
        self.driver = None
        if self.reset_vf is not None:
            self.reset_vf()  # from here the record is final: the device does nothing more
        self._salvaged.append(settle(self.pool, self.record, self.resend_after_fault, self.stats))
        self._reset_rings()

    def _reset_rings(self) -> None:
        for ring in self.rings.values():
            ring.reset()

    def _take_salvaged(self, *more: Frames) -> Frames:
        got, self._salvaged = self._salvaged, []
        return Frames.concat([*got, *more])

    # -- guest side ----------------------------------------------------------------------------
    def transmit(self, frames: Frames) -> int:
        """Queue frames for sending; returns how many were taken (the rest: back-pressure)."""
        if self.driver is None:
            return 0
        if len(self.pool.resend) and not self._flush_resend():
            return 0
        if len(frames) and (np.minimum.reduce(frames.lens) < ETH_HEADER
                            or np.maximum.reduce(frames.lens) > self.mtu):
            raise ValueError(f"frames must be {ETH_HEADER} to {self.mtu} bytes")
        n = min(len(frames), self._room("tx"), self.pool.nfree)
        if n == 0:
            return 0
        idx = self.pool.take(n)
        part = frames if n == len(frames) else frames.take(slice(0, n))
        self.dp.guest.write(self.pool.offsets(idx), part)
        if self._produce("tx", idx, part.lens) < n:  # the plugin broke the ring: a fault
            self.pool.release(idx)
            return 0
        self.pool.hand_over_tx(idx, part.lens)
        self._grant(idx, write=False)
        self.stats["tx_frames"] += n
        self.need_poll = True
        return n

    def tx_room(self) -> int:
        """How many frames `transmit` would take now."""
        if self.driver is None or len(self.pool.resend):
            return 0
        return min(self._room("tx"), self.pool.nfree)

    def _flush_resend(self) -> bool:
        """Frames handed back unsent go first, in their order; True when none are left."""
        pool = self.pool
        idx = pool.resend
        n = self._produce("tx", idx, pool.tx_len[idx])
        if self.driver is None:  # a fault on the way rebuilt the queue from every frame's state
            return False
        pool.state[idx[:n]] = TX
        self._grant(idx[:n], write=False)
        pool.resend = idx[n:]
        self.stats["tx_resent"] += n
        return not len(pool.resend)

    def poll(self) -> Frames:
        """Refill, let the plugin move frames, take back completions; returns frames received."""
        if self.driver is None:
            return self._take_salvaged()
        self.need_poll = False
        if len(self.pool.resend) and not self._flush_resend():
            self.need_poll = True  # more to re-send once the plugin makes room
        if self.driver is not None:  # a broken ring on the way was a fault
            self._refill()
        work = self._call("npa_poll", 0, self.budget)
        if self.driver is not None and work < 0:
            self._fault(f"npa_poll returned {Status.describe(-work)}")
        self.stats["polls"] += 1
        self._reap_txc()
        got = self._take_salvaged(self._reap_rx())
        # A NIC left with no RX buffer raises no RX interrupt, and only a poll hands the plugin
        # new ones: with frames free to post, that poll is due (else a receiver starves).
        if self.polled or (not self.pool.posted() and self.pool.nfree and self.driver is not None):
            self.need_poll = True
        return got

    def interrupt(self, vectors: int) -> None:
        """MSI-X messages from the VF: ask the plugin which queues need a poll (a plugin that
        claims no interrupts is not asked: it is polled anyway)."""
        if self.polled:
            return
        v = 0
        while vectors and self.driver is not None:
            if vectors & 1:
                self.stats["interrupts"] += 1
                if self._call("npa_intr", v) & 1:
                    self.need_poll = True
            vectors >>= 1
            v += 1

    # -- rings ---------------------------------------------------------------------------------
    def _refill(self) -> None:
        """Keep the fill ring topped up, with at most `rx_buffers` frames posted."""
        n = min(self._room("fill"), self.pool.nfree, max(self.rx_buffers - self.pool.posted(), 0))
        if n:
            idx = self.pool.take(n)
            if self._produce("fill", idx, self._buffer_lens[:n]) < n:
                self.pool.release(idx)
                return
            self.pool.state[idx] = FILL
            self._grant(idx, write=True)

    def _grant(self, idx: np.ndarray, write: bool) -> None:
        """Let the device reach these frames once, as they go to the plugin (TX frames in the
        guest's order)."""
        if (rec := self.record) is not None:
            if write:
                rec.grant_write(idx)
            else:
                rec.grant_read(idx, self.pool.tx_seq[idx])

    def _room(self, name: str) -> int:
        try:
            return self.rings[name].free_slots()
        except RingError as e:
            self._fault(str(e))
            return 0

    def _produce(self, name: str, idx: np.ndarray, lens: np.ndarray) -> int:
        try:
            return self.reaper.produce(name, idx, lens)
        except RingError as e:
            self._fault(str(e))
            return 0

    def _consume(self, ring: str) -> np.ndarray | None:
        try:
            return self.rings[ring].consume_burst()
        except RingError as e:
            self._fault(str(e))
            return None

    def _reap_txc(self) -> None:
        if (ent := self._consume("txc")) is not None:
            try:
                self.reaper.txc(ent)
            except RingError as e:  # the tx consumer index: its frames are settled by state
                self._fault(str(e))

    def _reap_rx(self) -> Frames:
        if (ent := self._consume("rx")) is None:
            return Frames.empty()
        try:
            return self.reaper.rx(ent)
        except RingError as e:  # the fill consumer index: its frames are settled by state
            self._fault(str(e))
            return Frames.empty()

    # -- accounting ----------------------------------------------------------------------------
    def waiting(self) -> int:
        """Frames the device could move that nobody moved: TX frames handed over that the
        device has not read, RX frames it wrote that the plugin has not handed back (0 without
        a VF's record)."""
        rec, state = self.record, self.pool.state
        if rec is None:
            return 0
        return int(((state == TX) & ~rec.was_read(slice(None))).sum()
                   + ((state == FILL) & rec.was_written(slice(None))).sum())

    def holdings(self) -> dict[str, int]:
        return self.pool.holdings()

    def held_by_plugin(self) -> int:
        return self.pool.held_by_plugin()
