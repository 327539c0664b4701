"""A burst of Ethernet frames: the unit the model moves.

Per-frame Python work is what limits a simulator, so frames travel in bursts, stored as blocks:
a block is a 2-D byte array whose row r holds one frame in its first `lens` bytes and zeros
after it. Most bursts are one block, as wide as their longest frame; a burst of a few distinct
lengths (imix: three) is one block per length, so that gathering, scattering and comparing it
moves its real bytes rather than every frame at the longest one's width (4x more for imix).
Gathering a block from memory and scattering it back are one numpy fancy-index each.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

BROADCAST = 0xFFFFFFFFFFFF
HEAD = 64  # header bytes a burst in blocks keeps together for its field reads


class Frames:
    """A burst: `lens` (int64 [n]) and `blocks`, each (positions, rows): the burst positions of
    its frames (ascending; None: all of them, in order) and a uint8 [k, width] array of them."""

    __slots__ = ("lens", "blocks", "_where", "_head", "_nbytes")

    def __init__(self, data: np.ndarray, lens: np.ndarray):
        self.lens, self.blocks = lens, [(None, data)]
        self._where = self._head = self._nbytes = None

    @classmethod
    def of_blocks(cls, lens: np.ndarray, blocks: list) -> "Frames":
        f = cls.__new__(cls)
        if len(blocks) == 1 and blocks[0][0] is not None and len(blocks[0][0]) == len(lens):
            blocks = [(None, blocks[0][1])]
        f.lens, f.blocks = lens, blocks or [(None, np.zeros((0, 0), np.uint8))]
        f._where = f._head = f._nbytes = None
        return f

    def __len__(self) -> int:
        return len(self.lens)

    @property
    def data(self) -> np.ndarray:
        """The burst as one block (uint8 [n, width]): a view when it is one, else built once
        (the blocks are replaced by it, so that writes to it are the burst's)."""
        if len(self.blocks) == 1 and self.blocks[0][0] is None:
            return self.blocks[0][1]
        out = np.zeros((len(self.lens), self.width), np.uint8)
        for pos, d in self.blocks:
            out[pos, :d.shape[1]] = d
        self.blocks, self._where = [(None, out)], None
        return out

    @property
    def width(self) -> int:
        """The widest row: no frame is longer."""
        return max(d.shape[1] for _, d in self.blocks)

    @staticmethod
    def empty() -> "Frames":
        return Frames(np.zeros((0, 0), np.uint8), np.zeros(0, np.int64))

    @staticmethod
    def from_bytes(frames: list[bytes]) -> "Frames":
        """A burst of byte strings (frames read from a TAP or a socket), as one block: padded
        and joined as bytes, then one array (not a numpy call a frame)."""
        lens = np.fromiter(map(len, frames), np.int64, len(frames))
        width = int(np.maximum.reduce(lens)) if len(frames) else 0
        rows = b"".join([f.ljust(width, b"\0") for f in frames])  # each padded to the widest
        return Frames(np.frombuffer(rows, np.uint8).reshape(len(frames), width).copy(), lens)

    def _locate(self) -> tuple[np.ndarray, np.ndarray]:
        """Each frame's block and row in it."""
        if self._where is None:
            n = len(self.lens)
            block, row = np.zeros(n, np.intp), np.arange(n)
            for b, (pos, d) in enumerate(self.blocks):
                if pos is not None:
                    block[pos], row[pos] = b, np.arange(len(pos))
            self._where = block, row
        return self._where

    def frame(self, i: int) -> bytes:
        block, row = self._locate()
        return self.blocks[block[i]][1][row[i], :self.lens[i]].tobytes()

    def to_bytes(self) -> list[bytes]:
        """The frames as byte strings, in burst order: each block made bytes once and cut."""
        out: list[bytes] = [b""] * len(self.lens)
        lens = self.lens.tolist()
        for pos, d in self.blocks:
            raw, width = d.tobytes(), d.shape[1]
            at = range(len(d)) if pos is None else pos.tolist()
            for r, i in enumerate(at):
                out[i] = raw[r * width:r * width + lens[i]]
        return out

    def take(self, idx) -> "Frames":
        """The frames at `idx` (indices, a slice or a boolean mask), in that order."""
        if len(self.blocks) == 1 and self.blocks[0][0] is None:
            return Frames(self.blocks[0][1][idx], self.lens[idx])
        lens = self.lens[idx]
        if isinstance(idx, slice) and idx.step in (None, 1):  # a run of the burst: views
            start, stop, _ = idx.indices(len(self.lens))
            blocks = []
            for pos, d in self.blocks:
                lo, hi = np.searchsorted(pos, (start, stop))
                if hi > lo:
                    blocks.append((pos[lo:hi] - start, d[lo:hi]))
            return Frames.of_blocks(lens, blocks)
        at = np.arange(len(self.lens))[idx]
        block, row = self._locate()
        of = block[at]
        blocks = []
        for b, (_, d) in enumerate(self.blocks):
            new = np.flatnonzero(of == b)
            if len(new):
                blocks.append((new, d[row[at[new]]]))
        return Frames.of_blocks(lens, blocks)

    def rows(self, width: int, pos: np.ndarray | None = None) -> np.ndarray:
        """The frames at burst positions `pos` (all: None) as rows `width` bytes wide: cut, or
        padded with zeros."""
        if len(self.blocks) == 1 and self.blocks[0][0] is None:
            d = self.blocks[0][1]
            sel = d if pos is None else d[pos]
        elif pos is None:  # every frame: each block's rows to its positions
            sel = np.zeros((len(self.lens), min(self.width, width)), np.uint8)
            for at, d in self.blocks:
                sel[at, :d.shape[1]] = d[:, :sel.shape[1]]
        else:
            block, row = self._locate()
            sel = np.zeros((len(pos), min(self.width, width)), np.uint8)
            of = block[pos]
            for b, (_, d) in enumerate(self.blocks):
                m = np.flatnonzero(of == b)
                if len(m):
                    sel[m, :d.shape[1]] = d[row[pos[m]], :sel.shape[1]]
        if sel.shape[1] >= width:
            return sel[:, :width]
        out = np.zeros((len(sel), width), np.uint8)
        out[:, :sel.shape[1]] = sel
        return out

    def trimmed(self) -> "Frames":
        """The same burst with each block cut to its longest frame (rows left wider by frames
        taken out of it); itself when none is."""
        blocks, cut = [], False
        for pos, d in self.blocks:
            w = int(np.maximum.reduce(self.lens if pos is None else self.lens[pos])) if len(d) else 0
            cut |= d.shape[1] > w
            blocks.append((pos, d[:, :w]))
        return Frames.of_blocks(self.lens, blocks) if cut else self

    def exact(self) -> bool:
        """Whether every row is its frame, with no padding."""
        for pos, d in self.blocks:
            if np.count_nonzero((self.lens if pos is None else self.lens[pos]) != d.shape[1]):
                return False
        return True

    def row_widths(self) -> np.ndarray:
        """Each frame's row width."""
        if len(self.blocks) == 1:
            return np.full(len(self.lens), self.blocks[0][1].shape[1], np.int64)
        out = np.empty(len(self.lens), np.int64)
        for pos, d in self.blocks:
            out[pos] = d.shape[1]
        return out

    def map_blocks(self, fn, lens: np.ndarray) -> "Frames":
        """A burst of the same frames in the same blocks, each block's rows through `fn`."""
        return Frames.of_blocks(lens, [(pos, fn(d)) for pos, d in self.blocks])

    @property
    def nbytes(self) -> int:
        """The frames' bytes (counted once: a burst's lengths do not change once it moves)."""
        if self._nbytes is None:
            self._nbytes = int(np.add.reduce(self.lens))
        return self._nbytes

    def column(self, at: int, dtype: str) -> np.ndarray:
        """The field of `dtype` at byte `at` of every frame (zero past a row's end)."""
        return column(self._fields(at + _dtype(dtype).itemsize), at, dtype)

    def macs(self, offset: int) -> np.ndarray:
        """The 48-bit MAC at byte `offset` of every frame (0: destination, 6: source) as u64."""
        return macs_of(self._fields(offset + 8), offset)

    def _fields(self, end: int) -> np.ndarray:
        """Rows that hold every frame's first `end` bytes: the one block, or the first HEAD
        bytes of a burst in blocks, put together once (header fields are read several times)."""
        if len(self.blocks) == 1 and self.blocks[0][0] is None:
            return self.blocks[0][1]
        if end > HEAD:
            return self.rows(end)
        if self._head is None:
            self._head = self.rows(HEAD)
        return self._head

    @staticmethod
    def concat(parts: list["Frames"]) -> "Frames":
        """The bursts one after the other; blocks of one width are joined."""
        parts = [p for p in parts if len(p)]
        if not parts:
            return Frames.empty()
        if len(parts) == 1:
            return parts[0]
        lens = np.concatenate([p.lens for p in parts])
        by_width: dict[int, list] = {}
        row = 0
        for p in parts:
            for pos, d in p.blocks:
                at = np.arange(row, row + len(p)) if pos is None else pos + row
                by_width.setdefault(d.shape[1], []).append((at, d))
            row += len(p)
        if len(by_width) > MAX_CLASSES:  # too many widths: one block, as wide as the widest
            width = max(by_width)
            data = np.zeros((len(lens), width), np.uint8)
            for group in by_width.values():
                for at, d in group:
                    data[at, :d.shape[1]] = d
            return Frames(data, lens)
        return Frames.of_blocks(lens, [
            group[0] if len(group) == 1 else
            (np.concatenate([at for at, _ in group]), np.concatenate([d for _, d in group]))
            for group in by_width.values()])

    @staticmethod
    def placed(lens: np.ndarray, parts: list[tuple[np.ndarray, "Frames"]]) -> "Frames":
        """One burst of parts whose frames sit at the given burst positions (ascending)."""
        blocks = []
        for rows, f in parts:
            blocks += [(rows if pos is None else rows[pos], d) for pos, d in f.blocks]
        return Frames.of_blocks(lens, blocks)


def column(data: np.ndarray, at: int, dtype: str) -> np.ndarray:
    """The field of `dtype` (big-endian, say ">u2") at byte `at` of every row of a block, as a
    column: a view where the rows are contiguous and hold it, else a copy (zero past a row)."""
    dt = _dtype(dtype)
    part = data[:, at:at + dt.itemsize]
    if part.shape[1] < dt.itemsize:
        wide = np.zeros((len(data), dt.itemsize), np.uint8)
        wide[:, :part.shape[1]] = part
        part = wide
    elif data.strides[1] != 1:
        part = part.copy()
    return part.view(dt)[:, 0]


@lru_cache(maxsize=16)
def _dtype(spec: str) -> np.dtype:
    """A field's dtype, parsed once (parsing costs as much as the read)."""
    return np.dtype(spec)


def macs_of(d: np.ndarray, offset: int) -> np.ndarray:
    """The 48-bit MAC at byte `offset` of every row as u64: one 8-byte big-endian read around
    it where the rows hold one."""
    if 2 <= offset <= d.shape[1] - 6:
        return column(d, offset - 2, ">u8") & np.uint64(BROADCAST)
    if offset < 2 and d.shape[1] >= offset + 8:
        return column(d, offset, ">u8") >> np.uint64(16)
    wide = np.zeros((len(d), 8), np.uint8)
    got = d[:, offset:offset + 6]
    wide[:, 2:2 + got.shape[1]] = got
    return wide.view(">u8").ravel().astype(np.uint64)


def format_mac(mac: int) -> str:
    """A 48-bit MAC as `ip link` writes it (02:00:0a:4d:00:02)."""
    return ":".join(f"{b:02x}" for b in mac.to_bytes(6, "big"))


def is_group(mac: int) -> bool:
    """Whether one MAC address is a group address (multicast or broadcast): its I/G bit."""
    return bool(mac >> 40 & 1)


def group_addresses(dst: np.ndarray) -> np.ndarray:
    """Which destination MACs (u64, as `macs` reads them) are group addresses, multicast or
    broadcast: the I/G bit, the low bit of the first byte."""
    return ((dst >> np.uint64(40)) & np.uint64(1)).astype(bool)


def _rows(mem: np.ndarray, width: int) -> np.ndarray:
    """Every `width`-byte window of memory as a row: row a is mem[a:a+width] (a view; built
    directly, as `as_strided` costs 8x more and this runs several times a step)."""
    return np.ndarray((len(mem) - width + 1, width), np.uint8, mem, 0, (1, 1))


MAX_CLASSES = 8  # a burst of up to this many distinct frame lengths moves as a block per length


def size_classes(lens: np.ndarray) -> list[int] | None:
    """The distinct frame lengths of a burst when there are few (imix: three), else None
    (mixed sizes)."""
    if not len(lens) or np.maximum.reduce(lens) > 16384 or np.minimum.reduce(lens) < 0:
        return None
    distinct = np.flatnonzero(np.bincount(lens))
    return distinct.tolist() if len(distinct) <= MAX_CLASSES else None


def gather(mem: np.ndarray, addrs: np.ndarray, lens: np.ndarray) -> Frames:
    """Read frames at `addrs` (checked by the caller) into a burst; nothing past a frame's end
    is read (padding is zero). One block when the lengths are one or many, a block per length
    when they are few."""
    n = len(addrs)
    lens = np.asarray(lens, np.int64)
    width = int(np.maximum.reduce(lens)) if n else 0
    if n == 0 or width == 0:
        return Frames(np.zeros((n, 0), np.uint8), lens)
    addrs = np.asarray(addrs, np.int64)
    if not np.count_nonzero(lens != width):  # one length: every row is its frame
        return Frames(_gather_block(mem, addrs, lens, width), lens)
    classes = size_classes(lens)
    if classes is None:
        data = _gather_block(mem, addrs, lens, width)
        clear_padding(data, lens)
        return Frames(data, lens)
    blocks = []
    for ln in classes:
        pos = np.flatnonzero(lens == ln)
        blocks.append((pos, _gather_block(mem, addrs[pos], lens[pos], ln)))
    return Frames.of_blocks(lens, blocks)


def _gather_block(mem: np.ndarray, addrs: np.ndarray, lens: np.ndarray, width: int) -> np.ndarray:
    """Rows of `width` bytes at `addrs` (one copy each); a row that would pass the memory's
    end gets only its frame's bytes."""
    if np.maximum.reduce(addrs) <= len(mem) - width:
        return _rows(mem, width)[addrs]
    near_end = addrs > len(mem) - width
    data = _rows(mem, width)[np.where(near_end, 0, addrs)]
    for i in np.flatnonzero(near_end):
        data[i] = 0
        data[i, :lens[i]] = mem[addrs[i]:addrs[i] + lens[i]]
    return data


def clear_padding(data: np.ndarray, lens: np.ndarray) -> None:
    """Zero each row of a block after its frame's length: a slice per length when there are
    few, one mask otherwise."""
    width = data.shape[1]
    classes = size_classes(lens)
    if classes is None:
        data[np.arange(width) >= lens[:, None]] = 0
        return
    for ln in classes:
        if ln < width:
            data[lens == ln, ln:] = 0


def scatter(mem: np.ndarray, addrs: np.ndarray, frames: Frames, exact: bool = False) -> None:
    """Write each frame at its address. Whole rows are written (a frame's padding as zeros), so
    every destination must hold its row's width; with `exact`, only each frame's bytes."""
    addrs = np.asarray(addrs, np.int64)
    for pos, d in frames.blocks:
        if pos is None:
            _scatter_block(mem, addrs, d, frames.lens, exact)
        else:
            _scatter_block(mem, addrs[pos], d, frames.lens[pos], exact)


def _scatter_block(mem: np.ndarray, addrs: np.ndarray, data: np.ndarray, lens: np.ndarray,
                   exact: bool) -> None:
    n, width = data.shape
    if n == 0 or width == 0:
        return
    if np.maximum.reduce(addrs) <= len(mem) - width and (not exact or not np.count_nonzero(lens != width)):
        _rows(mem, width)[addrs] = data
        return
    if (classes := size_classes(lens)) is not None:
        for ln in classes:
            sel = lens == ln
            _rows(mem, ln)[addrs[sel]] = data[sel, :ln]
        return
    for i in range(n):
        a, ln = int(addrs[i]), int(lens[i])
        mem[a:a + ln] = data[i, :ln]


def equal(a: Frames, b: Frames) -> np.ndarray:
    """Which frames of two bursts of one count are the same, in length and byte for byte."""
    same = a.lens == b.lens
    theirs = {d.shape[1]: (pos, d) for pos, d in b.blocks}
    for pos, d in a.blocks:
        width = d.shape[1]
        match = theirs.get(width)
        if match is not None and (match[0] is pos or (
                pos is not None and match[0] is not None and np.array_equal(match[0], pos))):
            other = match[1]  # the same frames in the same block: the usual case
        else:
            other = b.rows(width, pos)
        differ = d != other
        if np.count_nonzero(differ):  # which frames (bytes past a frame's end do not count)
            lens = a.lens if pos is None else a.lens[pos]
            if np.count_nonzero(lens != width):
                differ &= np.arange(width) < lens[:, None]
            bad = np.logical_or.reduce(differ, axis=1)
            if pos is None:
                same &= ~bad
            else:
                same[pos[bad]] = False
    return same


TPID = 0x8100


def vlan_tags(frames: Frames) -> tuple[np.ndarray, np.ndarray]:
    """Which frames carry an 802.1Q tag, and each tag's VLAN id (0 where untagged)."""
    tagged = (frames.column(12, ">u2") == TPID) & (frames.lens >= 18)
    if not np.count_nonzero(tagged):  # the usual burst: nothing tagged
        return tagged, np.zeros(len(frames), np.int64)
    vid = frames.column(14, ">u2").astype(np.int64) & 0x0FFF
    return tagged, np.where(tagged, vid, 0)


def push_vlan(frames: Frames, vid: int) -> Frames:
    """Insert an 802.1Q tag (priority 0) after the MAC addresses of every frame."""
    def push(d: np.ndarray) -> np.ndarray:
        out = np.zeros((len(d), d.shape[1] + 4), np.uint8)
        out[:, :12] = d[:, :12]
        out[:, 12:16] = (TPID >> 8, TPID & 0xFF, (vid >> 8) & 0x0F, vid & 0xFF)
        out[:, 16:] = d[:, 12:]
        return out
    return frames.map_blocks(push, frames.lens + 4)


def pop_vlan(frames: Frames) -> Frames:
    """Remove the 802.1Q tag of every frame (all of them tagged)."""
    return frames.map_blocks(lambda d: np.concatenate([d[:, :12], d[:, 16:]], axis=1), frames.lens - 4)
