"""The shell's data path: bursts on shell rings, entries from the plugin checked, faults as events."""
import numpy as np
import pytest

from helpers import ROOT, manifest, wat_plugin
from npa.nic_model.frames import Frames
from npa.nic_model.sriov import SriovNic
from npa.runtime.guest import Flow, build, size_schedule
from npa.runtime.sandbox import RegionPlan, Sandbox
from npa.runtime.shell import RingError, Shell, ShellRing
from npa.nic_model.dma_record import READ, WRITE
from npa.runtime.shell import DESC, EMPTY, UNSENT
from npa.shell_api import Status

IXGBEVF = (ROOT / "plugins-wasm" / "ixgbevf.wasm").read_bytes()
SRC, DST = 0x020000000001, 0x020000000002


class ScriptedPlugin:
    """A driver that answers each poll by writing the given raw entries into txc/rx, and plays
    its device too: what it reports sent the device read, what it reports received the device
    wrote (as far as the device's grants allow, into the device's own record)."""

    def __init__(self, shell):
        self.shell, self.txc, self.rx = shell, [], []

    def npa_init(self, cfg):
        return Status.OK

    def _device(self, entries, flag, kind):
        rec = self.shell.dp.record
        e = np.array([x for x in entries if not x[2] & flag], DESC)
        if rec is not None and len(e):
            ok, idx = rec.allowed(e["addr"], e["len"], kind)
            rec.use(idx[ok], e["len"][ok], kind)

    def npa_poll(self, queue, budget):
        self._device(self.txc, UNSENT, READ)
        self._device(self.rx, EMPTY, WRITE)
        self.shell.rings["txc"].produce(self.txc)
        self.shell.rings["rx"].produce(self.rx)
        self.txc, self.rx = [], []
        return 0

    def npa_intr(self, vector):
        return 0

    def npa_quiesce(self):
        return Status.OK

    def npa_reset(self):
        return Status.OK


@pytest.fixture
def shell():
    nic = SriovNic("ixgbevf", 1)
    box = Sandbox(RegionPlan(), bar=nic.vfs[0])
    sh = Shell(box, ring_size=8, frames=32, reset_vf=nic.vfs[0].reset)
    return sh


def send(sh, n):
    flow = Flow(0, SRC, DST, n, size_schedule(60))
    return sh.transmit(build(flow, 0, n))


def test_bogus_entries_from_the_plugin_are_refused_and_counted(shell):
    drv = ScriptedPlugin(shell)
    assert shell.attach(drv, 0)
    assert send(shell, 2) == 2
    tx = shell.rings["tx"].consume()  # the plugin takes both frames
    good = tx[0]
    fs, base = shell.frame_size, shell.pool_base
    drv.txc = [(0x10, 60, 0, 0),                      # outside the pool
               (good[0] + 8, 60, 0, 0),               # not on a frame boundary
               (base + 31 * fs, 60, 0, 0),            # a frame the plugin never got
               good, good]                            # the same frame twice
    shell.poll()
    assert shell.refused == {"txc: address outside the pool": 2,
                             "txc: frame not held by the plugin": 1,
                             "txc: frame handed back twice": 1}
    assert shell.holdings()["tx"] == 1 and shell.stats["tx_done"] == 1
    assert sum(shell.holdings().values()) == 32  # nothing created or lost


def test_rx_entry_with_impossible_length_is_refused_and_its_frame_reclaimed(shell):
    drv = ScriptedPlugin(shell)
    shell.attach(drv, 0)
    shell.poll()  # posts fill buffers
    fill = shell.rings["fill"].consume()
    drv.rx = [(fill[0][0], 2000, 0, 0), (fill[1][0], 64, 0, 0)]  # 2000: above the MTU
    got = shell.poll()
    assert len(got) == 1 and shell.refused == {"rx: bad length": 1}
    assert shell.stats["rx_frames"] == 1


def test_a_producer_index_that_cannot_be_right_is_a_fault_not_a_traceback(shell):
    class Liar(ScriptedPlugin):
        def npa_poll(self, queue, budget):
            self.shell.rings["rx"].set_producer(1000)
            return 0
    shell.attach(Liar(shell), 0)
    send(shell, 3)
    shell.poll()
    assert not shell.active
    assert shell.events[-1].kind == "fault" and "ahead of consumer" in shell.events[-1].reason
    assert shell.held_by_plugin() == 0 and shell.stats["tx_abandoned"] == 3


def test_a_negative_poll_status_disables_the_plugin(shell):
    class Broken(ScriptedPlugin):
        def npa_poll(self, queue, budget):
            return -Status.DEVICE
    shell.attach(Broken(shell), 0)
    shell.poll()
    assert not shell.active and "device" in shell.events[-1].reason


def test_a_trapping_wasm_plugin_becomes_an_event_and_the_vf_is_reset():
    nic = SriovNic("ixgbevf", 1)
    box = Sandbox(RegionPlan(), bar=nic.vfs[0])
    sh = Shell(box, ring_size=8, frames=32, reset_vf=nic.vfs[0].reset)
    image = wat_plugin(exports={"npa_poll": "(param i32 i32) (result i32) unreachable"},
                       man=manifest(devices=[{"vendor": 0x8086, "device": 0x10ED}]))
    assert sh.attach(box.load(image), 0)
    send(sh, 4)
    assert len(sh.poll()) == 0
    assert not sh.active and sh.events[-1].kind == "fault"
    assert "npa_poll" in sh.events[-1].reason and "unreachable" in sh.events[-1].reason
    assert nic.vfs[0].stats.resets == 1 and sh.held_by_plugin() == 0
    assert sh.transmit(build(Flow(0, SRC, DST, 1, size_schedule(60)), 0, 1)) == 0  # no data path


def test_init_failure_is_an_event(shell):
    class Refuses(ScriptedPlugin):
        def npa_init(self, cfg):
            return Status.UNSUPPORTED
    assert not shell.attach(Refuses(shell), 0)
    assert "npa_init returned" in shell.events[-1].reason and not shell.active


def test_transmit_takes_what_fits_back_pressure(shell):
    shell.attach(ScriptedPlugin(shell), 0)
    assert send(shell, 20) == 8  # the tx ring holds 8
    assert send(shell, 5) == 0


def test_quiesce_takes_back_frames_the_plugin_never_took(shell):
    shell.attach(ScriptedPlugin(shell), 0)
    send(shell, 5)
    shell.poll()  # posts fill buffers; the scripted plugin takes nothing
    shell.quiesce()
    assert shell.held_by_plugin() == 0 and shell.holdings()["resend"] == 5
    shell.attach(ScriptedPlugin(shell), 0)
    assert send(shell, 1) == 1  # re-sent first, then the new one
    sent = shell.rings["tx"].consume()
    assert len(sent) == 6 and shell.stats["tx_resent"] == 5


# -- shell rings, burst API --------------------------------------------------------------------
@pytest.fixture
def ring():
    box = Sandbox()
    return ShellRing(box.region, box.heap.alloc(ShellRing.bytes_for(8), 64), 8)


def test_burst_ring_full_empty_and_wrap_at_2_32(ring):
    assert len(ring.consume_burst()) == 0
    start = 2**32 - 3
    ring.set_producer(start)
    ring.set_consumer(start)
    addrs = np.arange(100, 110, dtype=np.uint64)
    assert ring.produce_burst(addrs, np.full(10, 60)) == 8  # full at 8
    assert ring.produce_burst(addrs, np.full(10, 60)) == 0
    got = ring.consume_burst()
    assert got["addr"].tolist() == list(range(100, 108)) and ring.consumer() == (start + 8) % 2**32


def test_burst_consume_refuses_a_producer_too_far_ahead(ring):
    ring.set_producer(9)
    with pytest.raises(RingError):
        ring.consume_burst()
    assert ring.consumer() == 0


def test_frames_concat_and_take_keep_order():
    a = Frames.from_bytes([b"a" * 60, b"b" * 70])
    b = Frames.from_bytes([b"c" * 1514])
    both = Frames.concat([a, b])
    assert both.to_bytes() == a.to_bytes() + b.to_bytes()
    assert both.take(np.array([2, 0])).to_bytes() == [b"c" * 1514, b"a" * 60]


def test_a_consumer_index_the_plugin_broke_on_tx_is_a_fault_and_loses_no_pool_frame(shell):
    class Breaks(ScriptedPlugin):
        def npa_poll(self, queue, budget):
            self.shell.rings["tx"].set_consumer(self.shell.rings["tx"].producer() + 5)
            return 0
    shell.attach(Breaks(shell), 0)
    send(shell, 2)
    shell.poll()
    assert send(shell, 2) == 0  # no traceback: the shell faults the plugin instead
    assert not shell.active and "ahead of producer" in shell.events[-1].reason
    assert shell.holdings()["free"] == shell.nframes


def test_guest_ram_is_zeroed_writable_and_aligned_for_huge_pages():
    """Guest memory comes from its own 2 MiB-aligned mapping (advised for huge pages where the
    kernel has them): zeroed, writable, exactly the size asked, apart for each guest."""
    from npa.runtime.shell.guest_memory import HUGE_PAGE, ram

    a, b = ram(5 * HUGE_PAGE // 2), ram(4096)
    assert len(a) == 5 * HUGE_PAGE // 2 and len(b) == 4096
    assert a.__array_interface__["data"][0] % HUGE_PAGE == 0
    assert not np.count_nonzero(a) and not np.count_nonzero(b)
    a[-1] = b[0] = 7
    assert a[-1] == 7 and not np.count_nonzero(b[1:]) and np.count_nonzero(a) == 1
