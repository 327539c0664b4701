"""The shared region's DMA heap and the shell rings."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npa.runtime.sandbox import GUARD_SIZE, DmaHeap, RegionPlan, Sandbox
from npa.runtime.shell import RingError, ShellRing


def test_heap_never_returns_0_and_honours_alignment():
    heap = DmaHeap(GUARD_SIZE, GUARD_SIZE + 65536)
    addrs = [heap.alloc(100, 1 << k) for k in range(0, 12)]
    assert all(a and a % (1 << k) == 0 for k, a in enumerate(addrs))
    assert heap.alloc(1 << 20, 8) == 0  # too big
    assert heap.alloc(16, 3) == 0  # not a power of two
    assert heap.alloc(0, 8) == 0


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 5000), st.integers(0, 8), st.booleans()), max_size=60))
def test_heap_blocks_never_overlap_and_free_restores_everything(ops):
    heap = DmaHeap(4096, 4096 + 256 * 1024)
    live = []
    for size, align_log, free_one in ops:
        if free_one and live:
            assert heap.free(live.pop(len(live) // 2)[0])
        addr = heap.alloc(size, 1 << align_log)
        if addr:
            live.append((addr, size))
        spans = sorted(live)
        assert all(a + s <= b for (a, s), (b, _) in zip(spans, spans[1:]))
        assert all(heap.start <= a and a + s <= heap.end for a, s in spans)
    for addr, _ in live:
        heap.free(addr)
    assert heap._free == [(heap.start, heap.end)] and heap.in_use() == 0


def test_double_free_is_refused():
    heap = DmaHeap(4096, 8192)
    a = heap.alloc(64)
    assert heap.free(a) and not heap.free(a)


def test_region_plan_rejects_a_base_in_the_guard_page():
    with pytest.raises(ValueError, match="guard page"):
        RegionPlan(plugin_base=0x100)


@pytest.fixture
def ring():
    box = Sandbox()
    return ShellRing(box.region, box.heap.alloc(ShellRing.bytes_for(8), 64), 8)


def test_ring_full_and_empty(ring):
    assert ring.available() == 0 and ring.consume() == []
    assert ring.produce([(i, 60, 0, 0) for i in range(10)]) == 8
    assert ring.free_slots() == 0 and ring.produce([(99, 1, 0, 0)]) == 0
    assert [e[0] for e in ring.consume(3)] == [0, 1, 2]
    assert ring.produce([(8, 60, 0, 0)]) == 1


def test_ring_indices_wrap_at_2_32(ring):
    start = 2**32 - 3
    ring.set_producer(start)
    ring.set_consumer(start)
    sent = [(i, i + 60, 0, i) for i in range(6)]
    assert ring.produce(sent) == 6
    assert ring.producer() == (start + 6) % 2**32 == 3
    assert ring.consume() == sent
    assert ring.available() == 0


def test_bogus_producer_index_from_the_other_side_is_refused(ring):
    ring.set_producer(1000)  # more than `size` ahead of the consumer
    with pytest.raises(RingError, match="more than 8 ahead"):
        ring.consume()
    assert ring.consumer() == 0  # nothing was consumed
