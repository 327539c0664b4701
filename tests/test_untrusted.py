"""Containment I, unit by unit: untrusted arithmetic at the edges, DMA memory ownership, and the
guest's control requests. Every hostile value is refused and counted; none raises."""
from __future__ import annotations

import msgpack
import numpy as np
import pytest

from npa.nic_model import ixgbe as hw
from npa.nic_model.frames import Frames
from npa.nic_model.iommu import Iommu
from npa.nic_model.sriov import SriovNic
from npa.runtime.host import Host
from npa.runtime.guest import size_schedule
from npa.runtime.hypervisor.control import Reply
from npa.runtime.sandbox import GUARD_SIZE, Sandbox
from npa.runtime.shell import GuestMemory, Shell, datapath
from npa.shell_api import GUEST_MEMORY_BASE

from helpers import ROOT

EDGES = [0, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 256, 2**64 - 1]


@pytest.fixture
def iommu() -> Iommu:
    io = Iommu(np.zeros(1 << 16, np.uint8))
    io.attach(GUEST_MEMORY_BASE, np.zeros(1 << 16, np.uint8))
    io.map(0x1000, 0x1000)
    io.map(GUEST_MEMORY_BASE, 0x8000)
    return io


@pytest.mark.parametrize("addr", EDGES)
@pytest.mark.parametrize("length", [0, 1, 2**32 - 1, 2**63, 2**64 - 1])
def test_the_window_holds_at_the_edges_of_64_bits(iommu, addr, length):
    inside = (0x1000 <= addr and addr + length <= 0x2000) or \
             (GUEST_MEMORY_BASE <= addr and addr + length <= GUEST_MEMORY_BASE + 0x8000)
    assert iommu.covers(addr, length) == inside
    burst = iommu.covers_all(np.array([addr], np.uint64), np.array([length], np.uint64))
    assert burst.tolist() == [inside]


def test_address_plus_length_that_wraps_is_outside(iommu):
    for addr in (2**64 - 0x100, 0x7FFFFFFFFFFFFF00):
        assert not iommu.covers(addr, 0x200)
        # as int64 the sum wraps below the window; unsigned it never does
        assert not iommu.covers_all(np.array([addr], np.uint64).view(np.int64), np.array([0x200])).any()
    assert not iommu.covers_all(np.array([0x1800]), np.array([-1])).any()  # a negative length


def test_a_burst_never_reads_or_writes_across_the_gap_between_memories(iommu):
    assert not iommu.covers(0x1000, GUEST_MEMORY_BASE)  # linear memory up into guest memory
    assert not iommu.covers(GUEST_MEMORY_BASE - 1, 2)


def test_a_burst_wider_than_its_buffers_never_writes_past_them(iommu):
    """Frames taken out of a burst leave its rows wide (3000 bytes here); writing the rest into
    2048-byte buffers must not copy whole rows."""
    guest = iommu.view(GUEST_MEMORY_BASE, 0x8000)
    guest[:] = 0xA5
    lens = np.array([3000, 60, 1514])
    wide = Frames(np.where(np.arange(3000) < lens[:, None], 7, 0).astype(np.uint8), lens)
    burst = wide.take(np.array([False, True, True]))
    addrs = np.array([GUEST_MEMORY_BASE, GUEST_MEMORY_BASE + 2048], np.uint64)
    assert iommu.scatter(addrs, burst, 2048).all()
    assert (guest[:60] == 7).all() and (guest[60:2048] != 7).all()  # padding at most, in its buffer
    assert (guest[2048:2048 + 1514] == 7).all() and (guest[4096:] == 0xA5).all()


def test_a_ring_base_at_the_top_of_64_bits_stops_the_queue_without_an_exception():
    nic = SriovNic("ixgbevf", 1)
    vf = nic.vfs[0]
    vf.attach(np.zeros(1 << 20, np.uint8))
    for off, val in ((hw.VFTDBAL, 0xFFFFFF80), (hw.VFTDBAH, 0xFFFFFFFF), (hw.VFTDLEN, 0x1000),
                     (hw.VFTDT, 3), (hw.VFTXDCTL, hw.DCTL_ENABLE)):
        vf.write32(off, val)
    nic.step()
    assert vf.stats.dma_faults == 1 and not vf.read32(hw.VFTXDCTL) & hw.DCTL_ENABLE


@pytest.fixture
def shell() -> Shell:
    nic = SriovNic("ixgbevf", 1)
    return Shell(Sandbox(bar=nic.vfs[0]), ring_size=64, frames=256)


@pytest.mark.parametrize("addr", [a for a in EDGES if a != GUEST_MEMORY_BASE] + [
                                  GUEST_MEMORY_BASE - 2048, GUEST_MEMORY_BASE + 1,
                                          GUEST_MEMORY_BASE + 256 * 2048])
def test_the_shell_refuses_an_rx_entry_outside_the_pool(shell, addr):
    shell.pool.state[:] = 2  # every frame posted: only the address can be wrong
    idx, ok = shell.reaper.claim(np.array([(addr, 60, 0, 0)], shell.rings["rx"].desc.dtype), 2, "rx")
    assert not ok.any() and shell.refused["rx: address outside the pool"] == 1


@pytest.mark.parametrize("length", [0, 13, 1515, 2**32 - 1])
def test_the_shell_refuses_an_rx_length_outside_a_frame(shell, length):
    shell.pool.state[0] = 2  # posted
    ent = np.array([(GUEST_MEMORY_BASE, length, 0, 0)], shell.rings["rx"].desc.dtype)
    assert len(shell.reaper.rx(ent)) == 0 and shell.refused["rx: bad length"] == 1


def test_shell_imports_refuse_hostile_arguments_without_raising():
    box = Sandbox(bar=SriovNic("ixgbevf", 1).vfs[0])
    host = box.host
    assert host.dma_alloc(0xFFFFFFFF, 8) == 0 and host.dma_alloc(64, 0x80000000) == 0
    assert host.dma_alloc(64, 3) == 0 and host.dma_alloc(0, 8) == 0
    assert host.mmio_read32(0xFFFFFFFC) == 0
    host.mmio_write32(0xFFFFFFFC, 0xFFFFFFFF)
    with pytest.raises(Exception, match="outside memory"):  # a trap for the plugin, not a crash
        host.log(0, 0xFFFFFFFF, 0xFFFFFFFF)


# -- DMA memory ownership ------------------------------------------------------------------------
def _targets(dp, block: int) -> dict[str, int]:
    return {"pool": dp.pool_base & 0xFFFFFFFF, "pool (full address)": dp.pool_base,
            "tx ring": dp.rings["tx"].addr, "rx ring": dp.rings["rx"].addr,
            "init block": dp.cfg_addr, "guard page": 0x100, "middle of a block": block + 16,
            "double free": block}


@pytest.mark.parametrize("what", ["pool", "pool (full address)", "tx ring", "rx ring", "init block",
                                  "guard page", "middle of a block", "double free"])
def test_dma_free_accepts_only_a_live_block_of_its_own(what):
    nic = SriovNic("ixgbevf", 1)
    box = Sandbox(bar=nic.vfs[0])
    dp = datapath.setup(box)
    block = box.host.dma_alloc(256, 64)
    if what == "double free":
        box.host.dma_free(block)
    free_list = list(box.heap._free)
    box.host.dma_free(_targets(dp, block)[what] & 0xFFFFFFFF)  # the import takes a u32
    assert box.host.refused["dma_free"] == 1 and box.heap._free == free_list
    assert box.iommu.covers(dp.pool_base, dp.frames * dp.frame_size)  # the pool stays mapped
    # the shell's structures never come back from dma_alloc
    got = [box.host.dma_alloc(4096, 64) for _ in range(4096)]
    shell_owned = [r.addr for r in dp.rings.values()] + [dp.cfg_addr]
    assert not [a for a in got if a and any(a <= s < a + 4096 for s in shell_owned)]


def test_dma_alloc_returns_zeroed_memory():
    box = Sandbox(bar=SriovNic("ixgbevf", 1).vfs[0])
    a = box.host.dma_alloc(4096, 64)
    box.region.np[a:a + 4096] = 0xFF
    box.host.dma_free(a)
    b = box.host.dma_alloc(4096, 64)
    assert b == a and not box.region.np[b:b + 4096].any()


def test_frames_live_above_4_gib_out_of_the_plugins_reach():
    box = Sandbox(bar=SriovNic("ixgbevf", 1).vfs[0])
    dp = datapath.setup(box)
    assert dp.pool_base == GUEST_MEMORY_BASE >= 1 << 32 > box.region.size
    assert isinstance(dp.guest, GuestMemory) and box.region.size <= GUARD_SIZE * 65536


# -- the guest's control requests --------------------------------------------------------------
@pytest.fixture
def host() -> Host:
    h = Host(SriovNic("ixgbevf", 4), (ROOT / "plugins-wasm" / "ixgbevf.wasm").read_bytes(), 2,
             packets=200, sizes=size_schedule(60))
    h.boot()
    return h


BAD_REQUESTS = [
    {"id": 1, "kind": "set_multicast", "groups": ["-1"]},
    {"id": 1, "kind": "set_multicast", "groups": ["1:00:00:00:00:00:00"]},
    {"id": 1, "kind": "set_mac", "mac": "02:00:00:00:00:01:ff"},
    {"id": 1, "kind": "add_vlan", "vid": 4096},
    {"id": 1, "kind": "add_vlan", "vid": "10"},
    {"id": 1, "kind": "set_mtu", "mtu": 2**40},
    {"id": 1, "kind": "set_rx_mode", "promisc": "yes"},
    {"id": -1, "kind": "set_mtu", "mtu": 1500},
    {"id": 1, "kind": "vf_offer", "vf": 0, "pci_id": "x", "bar0_size": 0},  # not a request
]


@pytest.mark.parametrize("frame", [msgpack.packb(r) for r in BAD_REQUESTS] +
                         [b"\xc1", b"\x93\x01\x02", b"\x81\x01\x02", b"x" * 20000])
def test_a_malformed_control_frame_is_answered_counted_and_the_host_goes_on(host, frame):
    vm = host.vms[0]
    p = host.hv.ports[vm.index]
    while p.guest.recv() is not None:
        pass
    p.guest.outbox.append(frame)  # raw bytes, as a hostile guest writes them
    host.run()  # the loop runs to the end: nothing escaped it
    replies = [m for _, m in iter(p.guest.recv, None) if isinstance(m, Reply)]
    assert [r.status for r in replies] == ["error"]
    assert p.control_errors == 1 and replies[0].message
    assert vm.vf.port.policy.multicast == frozenset() and vm.vf.port.policy.vlans == frozenset()
    assert host.clean()
