"""Ring entries across the trust boundary: what the shell produces and what it takes back.

The shell keeps a shadow of every entry it produced on `tx` and `fill` (which pool frame sits in
which slot), because the ring memory is writable by the plugin and is never read back. Every
entry the plugin produces on `txc` and `rx` is read once, then checked: address inside the pool
and on a frame boundary, the frame in the state the ring implies (TX for `txc`, FILL for `rx`),
each frame at most once per burst, the length within the frame and the MTU. With a VF behind
the plugin, each entry is also checked against the device's own record (the IOMMU's frame
record): a completion only for a frame the device read, a received frame only from a buffer the
device wrote, with the length it wrote; where the plugin's word and the record disagree, the
record wins and the disagreement is counted. What fails is refused and counted, never used. A
broken ring index raises `RingError`: the caller's fault.
"""
from __future__ import annotations

from collections import Counter

import numpy as np

from npa.nic_model.dma_record import first_true, oldest_first
from npa.nic_model.frames import Frames, gather
from npa.nic_model.ring import slots
from npa.shell_api import DESC_FLAGS

from .claim import REFUSALS, Claim
from .pool import FILL, TX, FramePool
from .rings import U32, ShellRing

UNSENT, EMPTY, ERROR = (DESC_FLAGS[k][0] for k in ("UNSENT", "EMPTY", "ERROR"))
ETH_HEADER = 14


class Reaper:
    def __init__(self, pool: FramePool, rings: dict[str, ShellRing], mtu: int,
                 stats: Counter, refused: Counter, record=None):
        self.pool, self.rings, self.mtu, self.record = pool, rings, mtu, record
        self.stats, self.refused = stats, refused
        self._shadow = {r: np.zeros(rings[r].size, np.int64) for r in ("tx", "fill")}
        # each frame's free-running index on the ring it was last produced on: a frame at or
        # past the consumer index the plugin published is one it has not taken yet
        self._slot = {r: np.zeros(pool.nframes, np.int64) for r in ("tx", "fill")}
        self._mark = np.zeros(pool.nframes, np.int64)  # scratch for duplicate detection
        self._claims = {r: Claim(pool.state, self._slot[r], self._mark, pool.base, pool.frame_size,
                                 pool.nframes) for r in ("tx", "fill")}
        self._counts = np.zeros(len(REFUSALS), np.int64)

    # -- what the shell produces -----------------------------------------------------------
    def produce(self, name: str, idx: np.ndarray, lens: np.ndarray) -> int:
        """Put frames `idx` on `tx` or `fill`; returns how many fit. RingError on a bad index."""
        ring = self.rings[name]
        prod = ring.produced
        n = ring.produce_burst(self.pool.addrs(idx), lens)
        self._shadow[name][slots(prod, n, ring.size)] = idx[:n]
        self._slot[name][idx[:n]] = (prod + np.arange(n)) & U32
        return n

    def untaken(self, name: str) -> np.ndarray:
        """The frames still on `tx` or `fill` that the plugin never took, in ring order, from
        the shadow and the shell's own producer index; the ring is reset either way. RingError
        when the consumer index the plugin published is impossible (the caller takes the
        frames back by their state instead)."""
        ring = self.rings[name]
        try:
            cons, n = ring.outstanding()
        finally:
            ring.reset()
        idx = self._shadow[name][(cons + np.arange(n)) & ring.mask]
        return idx[self.pool.state[idx] == (TX if name == "tx" else FILL)]

    # -- what the plugin produces ----------------------------------------------------------
    def claim(self, ent: np.ndarray, state: int, ring: str) -> tuple[np.ndarray, np.ndarray]:
        """Which entries name a pool frame that the plugin holds in `state`, having taken it
        off `tx` or `fill` (of a frame named twice in the burst, the last copy): one call of
        the compiled kernel (`claim.py`), each refusal counted. RingError when the consumer
        index of that ring is impossible."""
        source = "tx" if state == TX else "fill"
        cons, outstanding = self.rings[source].outstanding()
        n, counts = len(ent), self._counts
        idx, held = np.empty(n, np.int64), np.empty(n, np.uint8)
        counts[:] = 0
        if self._claims[source].run(ent["addr"], idx, held, state, cons, outstanding, counts) != n:
            for why, c in zip(REFUSALS, counts.tolist()):
                if c:
                    self.refused[f"{ring}: {why.format(source=source)}"] += c
        return idx, held.view(bool)

    def refuse(self, ring: str, why: str, mask: np.ndarray) -> None:
        if (n := int(np.count_nonzero(mask))):
            self.refused[f"{ring}: {why}"] += n

    def txc(self, ent: np.ndarray) -> None:
        """Completions: sent frames go back to the pool, UNSENT ones to the re-send queue."""
        if not len(ent):
            return
        idx, ok = self.claim(ent, TX, "txc")
        flags = ent["flags"]
        n, rec = len(ent), self.record
        if rec is not None and np.count_nonzero(ok) == n and not np.count_nonzero(flags & UNSENT) \
                and np.count_nonzero(rec.was_read(idx)) == n:  # the usual burst: all sent, as recorded
            rec.revoke(idx)
            self.stats["tx_done"] += n
            self.stats["tx_errors"] += int(np.count_nonzero(flags & ERROR))
            self.pool.release(idx)
            return
        unsent = ok & (flags & UNSENT != 0)
        done = ok & ~unsent
        if self.record is not None:  # the device's record, not the plugin's word
            read = self.record.was_read(idx)
            self.refuse("txc", "completion for a frame the device never read", done & ~read)
            self.refuse("txc", "handed back unsent after the device read it", unsent & read)
            done, unsent = ok & read, unsent & ~read  # a refused completion stays with the plugin
            self.record.revoke(idx[done])
            self.record.hold(idx[unsent])  # no later frame goes out before these, re-sent
        ndone, nunsent = int(np.count_nonzero(done)), int(np.count_nonzero(unsent))
        self.stats["tx_done"] += ndone
        self.stats["tx_errors"] += int(np.count_nonzero(done & (flags & ERROR != 0)))
        self.stats["tx_unsent"] += nunsent
        self.pool.release(idx[done] if ndone != len(done) else idx)
        if nunsent:
            self.pool.queue_resend(idx[unsent])

    def _in_arrival_order(self, idx: np.ndarray, written: np.ndarray) -> np.ndarray:
        """Which written buffers of a burst come in the order the device filled them: each the
        oldest not handed back yet. From the first out of order on, none. `written` itself when
        all are in order."""
        rec, pool = self.record, self.pool
        pending = rec.written_at[(pool.state == FILL) & (rec.written_at >= 0)]
        return first_true(written, oldest_first(rec.written_at[idx[written]], pending))

    def rx(self, ent: np.ndarray) -> Frames:
        """Received frames, copied out of their buffers; the buffers go back to the pool."""
        if not len(ent):
            return Frames.empty()
        idx, ok = self.claim(ent, FILL, "rx")
        lens = ent["len"].astype(np.int64)
        data = ok & (ent["flags"] & EMPTY == 0)
        if (rec := self.record) is not None:  # the device's record, not the plugin's word
            written = ok & rec.was_written(idx)
            if (keep := self._in_arrival_order(idx, written)) is not written:
                late = written & ~keep
                self.refuse("rx", "handed back out of arrival order", late)
                ok, written, data = ok & ~late, written & ~late, data & ~late  # late ones wait
            truth = np.where(written, rec.written_len[idx], 0)
            if np.count_nonzero(data != written) or np.count_nonzero(lens != truth):
                self.refuse("rx", "data in a buffer the device never wrote", data & ~written)
                self.refuse("rx", "handed back empty after the device wrote it", ok & ~data & written)
                self.refuse("rx", "length differs from what the device wrote",
                            data & written & (lens != truth))
            data, lens = written, truth
            rec.revoke(idx[ok])
        if np.minimum.reduce(lens) < ETH_HEADER or np.maximum.reduce(lens) > self.mtu:
            bad = data & ((lens < ETH_HEADER) | (lens > self.mtu))
            self.refuse("rx", "bad length", bad)
            good = data & ~bad
        else:
            good = data
        nok, ngood = int(np.count_nonzero(ok)), int(np.count_nonzero(good))
        if ngood == len(good):
            frames = gather(self.pool.mem, self.pool.offsets(idx), lens)
        else:
            frames = gather(self.pool.mem, self.pool.offsets(idx[good]), lens[good])
        self.stats["rx_frames"] += ngood
        self.stats["rx_empty"] += int(np.count_nonzero(ok & ~data))
        self.pool.release(idx if nok == len(ok) else idx[ok])
        return frames
