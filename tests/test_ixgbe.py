"""The 82599 VF ring engine, driven through its registers by the test as a driver would."""
import numpy as np
import pytest

from npa.nic_model import ixgbe as hw
from npa.nic_model.frames import Frames
from npa.nic_model.sriov import SriovNic

RING, BUFS, BSIZE = 0x1000, 0x10000, 2048
MAC = [0x020000000001, 0x020000000002]


def frame(dst: int, src: int, n: int, fill: int) -> bytes:
    return dst.to_bytes(6, "big") + src.to_bytes(6, "big") + b"\x88\xb5" + bytes([fill]) * (n - 14)


class Port:
    """One VF with its own memory, programmed like a minimal driver: ring of `size` entries."""

    def __init__(self, nic: SriovNic, i: int, size: int = 8):
        self.vf = nic.vfs[i]
        self.mem = bytearray(1 << 20)
        self.iommu = self.vf.attach(self.mem)
        self.iommu.map(RING, 0x2000)
        self.iommu.map(BUFS, 64 * BSIZE)
        self.size, self.tail = size, 0
        nic.set_vf_mac(self.vf, MAC[i])
        w = self.vf.write32
        for reg, val in ((hw.VFTDBAL, RING), (hw.VFTDLEN, size * 16), (hw.VFTXDCTL, hw.DCTL_ENABLE),
                         (hw.VFRDBAL, RING + 0x1000), (hw.VFRDLEN, size * 16),
                         (hw.VFSRRCTL, BSIZE // 1024), (hw.VFRXDCTL, hw.DCTL_ENABLE)):
            w(reg, val)

    def txd(self, slot: int) -> np.ndarray:
        return np.frombuffer(self.mem, hw.TX_DESC, 1, RING + slot * 16)[0]

    def send(self, frames: list[bytes], rs_last: bool = True, addr_of=None) -> None:
        for i, f in enumerate(frames):
            slot = self.tail % self.size
            addr = addr_of(slot) if addr_of else BUFS + slot * BSIZE
            self.mem[addr:addr + len(f)] = f
            cmd = hw.TXD_DTYP_DATA | hw.TXD_DEXT | hw.TXD_EOP | len(f)
            if rs_last and i == len(frames) - 1:
                cmd |= hw.TXD_RS
            np.frombuffer(self.mem, hw.TX_DESC, 1, RING + slot * 16)[0] = (addr, cmd, len(f) << 14)
            self.tail += 1
        self.vf.write32(hw.VFTDT, self.tail % self.size)

    def post(self, n: int, first: int = 32, addr=None) -> None:
        """Post n RX buffers from the RX tail."""
        t = self.vf.read32(hw.VFRDT)
        for _ in range(n):
            a = addr if addr is not None else BUFS + (first + t) * BSIZE
            np.frombuffer(self.mem, hw.RX_READ, 1, RING + 0x1000 + t * 16)[0] = (a, 0)
            t = (t + 1) % self.size
        self.vf.write32(hw.VFRDT, t)

    def rxwb(self, slot: int) -> np.ndarray:
        return np.frombuffer(self.mem, hw.RX_WB, 1, RING + 0x1000 + slot * 16)[0]

    def received(self, slot: int, first: int = 32) -> bytes:
        wb = self.rxwb(slot)
        a = BUFS + (first + slot) * BSIZE
        return bytes(self.mem[a:a + int(wb["length"])])


@pytest.fixture
def rig():
    nic = SriovNic("ixgbevf", 2)
    return nic, Port(nic, 0), Port(nic, 1)


def test_tx_writes_dd_only_on_the_descriptor_that_asked(rig):
    nic, a, b = rig
    a.send([frame(MAC[1], MAC[0], 60, i) for i in range(3)])
    nic.step()
    assert [bool(a.txd(i)["olinfo_status"] & hw.TXD_STA_DD) for i in range(3)] == [False, False, True]
    assert a.vf.read32(hw.VFTDH) == 3 and a.vf.stats.tx_frames == 3
    assert b.vf.port.pending() == 3  # no RX buffers posted yet: the frames wait in the port


def test_rx_full_ring_holds_frames_in_the_port_until_buffers_are_posted(rig):
    nic, a, b = rig
    b.post(7)  # an 8-entry ring holds at most 7 posted buffers (head == tail means empty)
    sent = [frame(MAC[1], MAC[0], 60 + i, i) for i in range(10)]
    a.send(sent[:7])
    nic.step()
    a.send(sent[7:])
    nic.step()
    assert b.vf.read32(hw.VFRDH) == 7 and b.vf.port.pending() == 3
    assert [b.received(i) for i in range(7)] == sent[:7]
    assert all(b.rxwb(i)["status_error"] == hw.RXD_STAT_DD | hw.RXD_STAT_EOP for i in range(7))
    b.post(3)
    nic.step()
    assert b.vf.port.pending() == 0 and b.vf.stats.rx_frames == 10
    assert [b.received((7 + i) % 8) for i in range(3)] == sent[7:]


def test_tx_and_rx_rings_wrap_around_in_order(rig):
    nic, a, b = rig
    got = []
    for burst in range(6):  # 30 frames through 8-entry rings
        frames = [frame(MAC[1], MAC[0], 64, burst * 5 + i) for i in range(5)]
        head = b.vf.read32(hw.VFRDH)
        b.post(5)
        a.send(frames)
        nic.step()
        got += [b.received((head + i) % 8) for i in range(5)]
    assert got == [frame(MAC[1], MAC[0], 64, i) for i in range(30)]
    assert a.vf.read32(hw.VFTDH) == 30 % 8 and b.vf.read32(hw.VFRDH) == 30 % 8


def test_malformed_descriptor_is_consumed_counted_and_reported(rig):
    nic, a, b = rig
    a.vf.enable_vectors(0b11)
    a.send([frame(MAC[1], MAC[0], 60, 1)])
    np.frombuffer(a.mem, hw.TX_DESC, 1, RING)[0]["cmd_type_len"] &= 0xFFFFFFFF ^ hw.TXD_DEXT  # legacy, not advanced
    nic.step()
    assert a.vf.stats.tx_errors == 1 and a.vf.stats.tx_frames == 0
    assert a.vf.take_msix() & 0b10  # the misc vector fired
    assert a.vf.read32(hw.VFTDH) == 1  # consumed all the same


def test_tx_buffer_outside_the_iommu_window_is_a_dma_fault(rig):
    nic, a, b = rig
    a.vf.enable_vectors(0b11)
    a.mem[0x80000:0x80000 + 60] = frame(MAC[1], MAC[0], 60, 7)
    a.send([frame(MAC[1], MAC[0], 60, 7)], addr_of=lambda slot: 0x80000)  # not mapped
    nic.step()
    assert a.vf.stats.dma_faults == 1 and a.iommu.faults == 1 and a.vf.stats.tx_frames == 0
    assert b.vf.port.pending() == 0
    assert a.vf.read32(hw.VTEICR) & 0b10


def test_a_ring_unmapped_after_use_is_a_fault_on_the_next_tick(rig):
    """The engine keeps its view of a ring between ticks, until the window changes: once the
    hypervisor unmaps the ring's memory, the next doorbell finds the ring outside the window
    (a fault, the queue stops) and nothing more is read from it."""
    nic, a, b = rig
    b.post(4)
    a.send([frame(MAC[1], MAC[0], 60, 1)])
    nic.step()
    assert a.vf.stats.tx_frames == 1 and a.vf.stats.dma_faults == 0
    assert a.iommu.unmap(RING)
    a.send([frame(MAC[1], MAC[0], 60, 2)])
    nic.step()
    assert a.vf.stats.tx_frames == 1 and a.vf.stats.dma_faults == 1
    assert not a.vf.read32(hw.VFTXDCTL) & hw.DCTL_ENABLE and b.vf.stats.rx_frames == 1


def test_rx_buffer_outside_the_window_is_a_fault_and_the_frame_waits_in_the_port(rig):
    """Hardware that refuses a DMA keeps what it has not written: the frame stays at the head of
    the port, the queue stops (as for a frame larger than its buffer), nothing is written."""
    nic, a, b = rig
    b.post(1, addr=0x90000)  # a buffer the IOMMU does not map
    sent = frame(MAC[1], MAC[0], 100, 9)
    a.send([sent])
    nic.step()
    assert not b.rxwb(0)["status_error"] & hw.RXD_STAT_DD  # no write-back: not received
    assert bytes(b.mem[0x90000:0x90000 + 100]) == bytes(100)
    assert b.vf.stats.dma_faults == 1 and b.vf.stats.rx_frames == 0
    assert not b.vf.regs[hw.VFRXDCTL] & hw.DCTL_ENABLE and b.vf.read32(hw.VFRDH) == 0
    assert b.vf.port.pending() == 1 and b.vf.port.receive(1).frame(0) == sent


def test_a_buffer_posted_twice_is_written_once_and_the_second_frame_waits():
    """Through the frame record (one-use write grants): the second descriptor naming the same
    buffer is refused; its frame is not lost but waits in the port for the queue's restart."""
    from npa.nic_model.sriov import SriovNic

    nic = SriovNic("ixgbevf", 2)
    vf = nic.vfs[1]
    mem = np.zeros(1 << 20, np.uint8)
    iommu = vf.attach(mem)
    iommu.map(0x1000, 4096)  # the RX ring
    rec = iommu.map_frames(0x8000, 2048, 4)
    rec.grant_write(np.arange(4))
    ring = mem[0x1000:0x1000 + 128].view(hw.RX_READ)
    ring["pkt_addr"][:2] = 0x8000  # both descriptors: frame 0
    for reg, v in ((hw.VFRDBAL, 0x1000), (hw.VFRDBAH, 0), (hw.VFRDLEN, 128), (hw.VFSRRCTL, 2),
                   (hw.VFRXDCTL, hw.DCTL_ENABLE), (hw.VFRDT, 2)):
        vf.write32(reg, v)
    frames = [frame(MAC[1], MAC[0], 100, 1), frame(MAC[1], MAC[0], 100, 2)]
    vf.port.deliver(Frames.from_bytes(frames))
    vf.rx()
    assert vf.stats.rx_frames == 1 and vf.stats.dma_faults == 1 and vf.read32(hw.VFRDH) == 1
    assert bytes(mem[0x8000:0x8000 + 100]) == frames[0]
    assert vf.port.pending() == 1 and vf.port.receive(1).frame(0) == frames[1]


def test_a_vector_masks_itself_until_rearmed_and_masked_vectors_raise_nothing(rig):
    nic, a, b = rig
    a.send([frame(MAC[1], MAC[0], 60, 0)])
    nic.step()
    assert a.vf.take_msix() == 0  # vector 0 never enabled
    a.vf.write32(hw.VTEIMS, 1)  # enabling with a latched cause fires it
    assert a.vf.take_msix() == 1
    a.send([frame(MAC[1], MAC[0], 60, 1)])
    nic.step()
    assert a.vf.take_msix() == 0  # auto-masked after firing
    a.vf.write32(hw.VTEIMS, 1)
    assert a.vf.take_msix() == 1 and a.vf.read32(hw.VTEICR) == 1 and a.vf.read32(hw.VTEICR) == 0


def test_reset_takes_device_time_and_clears_the_queues(rig):
    nic, a, b = rig
    a.vf.write32(hw.VFCTRL, hw.CTRL_RST)
    assert a.vf.read32(hw.VFCTRL) & hw.CTRL_RST and not a.vf.read32(hw.VFLINKS)
    a.vf.advance(a.vf.RESET_US)
    assert a.vf.read32(hw.VFCTRL) == 0 and a.vf.read32(hw.VFTXDCTL) == 0
    assert a.vf.read32(hw.VFLINKS) & hw.LINKS_UP


def test_writes_outside_the_data_path_registers_are_ignored_and_counted(rig):
    _, a, _ = rig
    a.vf.write32(0x5400, 0x12345678)  # the PF's receive address registers are not in a VF BAR
    assert a.vf.ignored_writes == 1 and a.vf.read32(0x5400) == 0


def test_frames_burst_round_trip():
    frames = [bytes(range(60)), bytes(200), b"\xff" * 1514]
    assert Frames.from_bytes(frames).to_bytes() == frames


def test_a_runt_descriptor_without_an_ethernet_header_is_a_tx_error(rig):
    nic, a, b = rig
    a.send([b"\x02" * 5])
    nic.step()
    assert a.vf.stats.tx_errors == 1 and b.vf.port.pending() == 0
