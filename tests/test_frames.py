"""A burst of frames against the plainest model of one: a list of byte strings.

Bursts of few distinct lengths (imix) travel as a block per length, others as one padded block;
every operation must give the same frames either way, read nothing past a frame's end, and
write nothing past it where asked to be exact.
"""
from __future__ import annotations

import os

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from npa.nic_model.frames import Frames, equal, gather, pop_vlan, push_vlan, scatter, vlan_tags

EXAMPLES = int(os.environ.get("NPA_FUZZ_EXAMPLES", "40"))
PROPERTY = settings(max_examples=max(EXAMPLES, 40), deadline=None, database=None)
SLOT = 2048  # each frame at its own 2 KiB slot, as in a frame pool


@st.composite
def bursts(draw) -> list[bytes]:
    """1..40 frames whose lengths come from a few sizes (blocks) or many (one block)."""
    sizes = draw(st.lists(st.integers(0, 1600), min_size=1, max_size=draw(st.sampled_from([3, 12]))))
    n = draw(st.integers(1, 40))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, int(rng.choice(sizes)), dtype=np.uint8).tobytes() for _ in range(n)]


def gathered(frames: list[bytes]) -> tuple[Frames, np.ndarray, np.ndarray]:
    """The frames read from a memory whose bytes past each frame are 0xEE (so that a read past
    an end shows), as the NIC and the shell read them; and that memory."""
    mem = np.full(SLOT * (len(frames) + 1), 0xEE, np.uint8)
    addrs = np.arange(len(frames), dtype=np.int64)[::-1] * SLOT  # not in address order
    for a, f in zip(addrs, frames):
        mem[a:a + len(f)] = np.frombuffer(f, np.uint8)
    return gather(mem, addrs, np.array([len(f) for f in frames], np.int64)), mem, addrs


def padding_is_zero(f: Frames) -> bool:
    for pos, d in f.blocks:
        lens = f.lens if pos is None else f.lens[pos]
        if np.count_nonzero(d[np.arange(d.shape[1]) >= lens[:, None]]):
            return False
    return True


@PROPERTY
@given(bursts())
def test_a_gathered_burst_is_its_frames_with_nothing_read_past_their_ends(frames):
    got, _, _ = gathered(frames)
    assert got.to_bytes() == frames
    assert padding_is_zero(got)
    assert [bytes(r[:len(f)]) for r, f in zip(got.data, frames)] == frames


@PROPERTY
@given(bursts(), st.data())
def test_take_and_concat_select_the_same_frames_as_a_list_does(frames, data):
    got, _, _ = gathered(frames)
    n = len(frames)
    mask = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)), bool)
    idx = np.array(data.draw(st.lists(st.integers(0, n - 1), max_size=2 * n)), np.int64)
    lo, hi = sorted(data.draw(st.tuples(st.integers(0, n), st.integers(0, n))))
    assert got.take(mask).to_bytes() == [f for f, m in zip(frames, mask) if m]
    assert got.take(idx).to_bytes() == [frames[i] for i in idx]
    assert got.take(slice(lo, hi)).to_bytes() == frames[lo:hi]
    joined = Frames.concat([got.take(slice(0, lo)), got.take(idx), got.take(slice(lo, None))])
    assert joined.to_bytes() == frames[:lo] + [frames[i] for i in idx] + frames[lo:]
    assert padding_is_zero(joined)


@PROPERTY
@given(bursts(), st.data())
def test_equal_finds_exactly_the_frames_that_differ(frames, data):
    a, _, _ = gathered(frames)
    changed = list(frames)
    i = data.draw(st.integers(0, len(frames) - 1))
    if changed[i]:
        j = data.draw(st.integers(0, len(changed[i]) - 1))
        changed[i] = changed[i][:j] + bytes([changed[i][j] ^ 0x01]) + changed[i][j + 1:]
    else:
        changed[i] = b"\x00"  # longer by one zero byte: equal in the padding, not in length
    b = Frames.from_bytes(changed)  # one padded block against blocks per length
    expect = np.array([x == y for x, y in zip(frames, changed)])
    assert (equal(a, b) == expect).all()
    assert (equal(b, a) == expect).all()
    assert equal(a, gathered(frames)[0]).all()


@PROPERTY
@given(bursts(), st.integers(0, 1700))
def test_rows_and_fields_read_zero_past_a_frames_end(frames, width):
    got, _, _ = gathered(frames)
    padded = [(f + bytes(width))[:width] for f in frames]
    assert [bytes(r) for r in got.rows(width)] == padded
    at = min(width, 1600)
    field = [int.from_bytes((f + bytes(at + 2))[at:at + 2], "big") for f in frames]
    assert got.column(at, ">u2").tolist() == field
    dst = [int.from_bytes((f + bytes(6))[:6], "big") for f in frames]
    assert got.macs(0).tolist() == dst


@PROPERTY
@given(bursts())
def test_an_exact_scatter_writes_each_frame_and_nothing_past_it(frames):
    got, _, addrs = gathered(frames)
    mem = np.full(SLOT * (len(frames) + 1), 0xEE, np.uint8)
    scatter(mem, addrs, got, exact=True)
    expect = np.full_like(mem, 0xEE)
    for a, f in zip(addrs, frames):
        expect[a:a + len(f)] = np.frombuffer(f, np.uint8)
    assert (mem == expect).all()


@PROPERTY
@given(bursts(), st.integers(1, 4094))
def test_a_vlan_tag_pushed_is_read_back_and_popped(frames, vid):
    frames = [f for f in frames if len(f) >= 14]
    if not frames:
        return
    got, _, _ = gathered(frames)
    tagged = push_vlan(got, vid)
    tags, vids = vlan_tags(tagged)
    assert tags.all() and (vids == vid).all()
    assert [f[:12] + f[16:] for f in tagged.to_bytes()] == frames
    assert pop_vlan(tagged).to_bytes() == frames


def test_an_imix_burst_moves_as_a_block_per_length_and_writes_to_data_stick():
    frames = [bytes([i]) * (64, 594, 1514)[i % 3] for i in range(9)]
    got, _, _ = gathered(frames)
    assert sorted(d.shape[1] for _, d in got.blocks) == [64, 594, 1514]
    assert got.nbytes == sum(len(f) for f in frames)
    got.data[4, 0] ^= 0xFF  # a test corrupting a frame in place: the burst sees it
    assert got.frame(4)[0] == 4 ^ 0xFF
    assert got.to_bytes()[:4] == frames[:4]


def test_ring_slots_are_the_positions_of_a_burst_wrapping_or_not():
    """A burst's ring positions: a slice where it does not wrap, a view of a cached index
    otherwise; the same positions as the arithmetic, for rings of any size."""
    from npa.nic_model.ring import slots

    for size in (5, 8, 512, 8193):  # 8193: past the cached sizes, the arithmetic
        every = np.arange(size)
        for first in (0, 3, size - 1, 3 * size + 2, 2**32 - 1):
            for n in (0, 1, size - 1, size, size + 3):
                got = every[slots(first, n, size)]
                assert got.tolist() == ((first + np.arange(n)) % size).tolist(), (size, first, n)
