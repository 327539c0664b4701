"""The IOMMU window: in-window, out-of-window, straddling an edge."""
import numpy as np
import pytest

from npa.nic_model.iommu import Iommu


@pytest.fixture
def iommu():
    mem = memoryview(bytearray(1 << 16))
    io = Iommu(mem)
    io.map(0x1000, 0x1000)
    io.map(0x2000, 0x800)  # adjacent to the first
    io.map(0x4000, 0x100)
    return io


def test_in_window_write_and_read(iommu):
    assert iommu.write(0x1ff0, b"x" * 16)
    assert iommu.read(0x1ff0, 16) == b"x" * 16
    assert iommu.faults == 0


def test_adjacent_mappings_join(iommu):
    assert iommu.write(0x1ff8, b"y" * 16)  # crosses 0x2000 into the next mapping
    assert iommu.faults == 0


def test_out_of_window_is_a_fault_and_writes_nothing(iommu):
    assert not iommu.write(0x0, b"z" * 4)  # the guard page
    assert iommu.read(0x3000, 4) is None
    assert iommu.faults == 2 and iommu.last_fault == (0x3000, 4)
    assert bytes(iommu.mem[0:4]) == bytes(4)


def test_straddling_the_edge_is_a_fault_and_writes_nothing(iommu):
    assert not iommu.write(0x27fc, b"w" * 8)  # last 4 bytes mapped, next 4 not
    assert not iommu.write(0x3ffc, b"w" * 8)  # first 4 bytes unmapped
    assert bytes(iommu.mem[0x27fc:0x2804]) == bytes(8)
    assert bytes(iommu.mem[0x3ffc:0x4004]) == bytes(8)
    assert iommu.faults == 2


def test_unmap_closes_the_window(iommu):
    assert iommu.unmap(0x4000) and not iommu.unmap(0x4000)
    assert iommu.read(0x4000, 1) is None


def test_overlapping_map_is_refused(iommu):
    with pytest.raises(ValueError, match="overlaps"):
        iommu.map(0x1800, 0x1000)


@pytest.mark.parametrize("sizes", [[60, 590, 1514], list(range(60, 1514, 50))])
def test_gather_never_carries_bytes_past_a_frame(sizes):
    """Rows are as wide as the burst's longest frame; every byte after a frame's own length
    reads zero, whether the burst has a few lengths (zeroed by slices) or many (by a mask)."""
    from npa.nic_model.frames import gather

    mem = np.full(64 * 2048, 0xAB, np.uint8)
    lens = np.array([sizes[i % len(sizes)] for i in range(64)], np.int64)
    got = gather(mem, np.arange(64, dtype=np.int64) * 2048, lens)
    assert got.data.shape == (64, max(sizes))
    for row, n in zip(got.data, lens):
        assert (row[:n] == 0xAB).all() and not row[n:].any()


def test_a_burst_checks_each_range_as_one_address_at_a_time_would(iommu):
    """covers_all (a fast path when every address lies in one mapping) agrees with covers for
    ranges inside, across adjacent mappings, past an edge and wrapping 64 bits."""
    addrs = np.array([0x1000, 0x1ff8, 0x27fc, 0x1800, 0x4000, 0x40ff, 0x3000, 2**64 - 8], np.uint64)
    lens = np.array([16, 16, 8, 0x800, 0x100, 2, 4, 16], np.uint64)
    want = [iommu.covers(int(a), int(n)) for a, n in zip(addrs, lens)]
    assert iommu.covers_all(addrs, lens).tolist() == want == [True, True, False, True, True,
                                                              False, False, False]
    one = np.array([0x1000, 0x1100, 0x1ff0], np.uint64)  # one mapping, the last crossing into the next
    assert iommu.covers_all(one, np.array([16, 16, 0x20])).tolist() == [True, True, True]


def test_a_tx_burst_naming_a_granted_frame_three_times_reads_it_once():
    """The device's record allows each grant once, whatever the descriptors say, and stops a
    burst at the first frame out of the guest's order."""
    from npa.nic_model.dma_record import READ, FrameRecord

    rec = FrameRecord(base=1 << 32, frame_size=2048, frames=16)
    addr = lambda *i: np.array([(1 << 32) + 2048 * k for k in i], np.uint64)
    rec.grant_read(np.array([3, 4, 5]), np.array([10, 11, 12]))
    ok, idx = rec.allowed(addr(3, 3, 3), np.full(3, 64), READ)
    assert ok.tolist() == [True, False, False] and idx.tolist() == [3, 3, 3]
    ok, _ = rec.allowed(addr(4, 3, 5), np.full(3, 64), READ)  # 4 before 3: out of order
    assert ok.tolist() == [False, False, False]
    ok, _ = rec.allowed(addr(3, 4, 5, 7), np.full(4, 64), READ)  # 7 was never granted
    assert ok.tolist() == [True, True, True, False]


def test_granted_pool_frames_are_reached_by_index_where_the_pool_sits_in_its_memory():
    """A burst of granted pool frames is gathered and scattered by frame index (the record
    checked each address): the bytes are those at the addresses, for a pool that starts
    anywhere in the memory behind it; a frame that does not fit its buffer is not written."""
    from npa.nic_model.dma_record import READ
    from npa.nic_model.frames import Frames

    base, lead = 1 << 32, 3 * 4096  # the pool starts 12 KiB into its memory
    iommu = Iommu()
    mem = iommu.attach(base, np.zeros(lead + 16 * 2048, np.uint8))
    rec = iommu.map_frames(base + lead, 2048, 16)
    mem[:] = np.arange(len(mem)) % 251
    frames = np.array([9, 2, 14], np.int64)
    addrs = (base + lead + frames * 2048).astype(np.uint64)
    lens = np.array([100, 60, 1514], np.int64)
    rec.grant_read(frames, np.arange(3))
    ok, idx = rec.allowed(addrs, lens, READ)
    assert ok.all() and (idx == frames).all()
    by_index, by_address = iommu.gather(addrs, lens, idx), iommu.gather(addrs, lens)
    assert by_index.to_bytes() == by_address.to_bytes() == [
        mem[lead + f * 2048:][:n].tobytes() for f, n in zip(frames, lens)]
    rec.grant_write(frames)
    before = mem.copy()
    out = Frames.from_bytes([b"\x01" * 60, b"\x02" * 2000, b"\x03" * 64])
    written = iommu.scatter(addrs, out, 1600, idx)
    assert written.tolist() == [True, False, True]
    expect = before.copy()
    expect[lead + 9 * 2048:][:64] = [1] * 60 + [0] * 4  # a row's padding, inside its buffer
    expect[lead + 14 * 2048:][:64] = 3
    assert (mem == expect).all()
