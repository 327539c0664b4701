"""The vmxnet3 ring engine, driven through its registers and rings by the test as a driver."""
import numpy as np
import pytest

from npa.nic_model import vmxnet3 as hw
from npa.nic_model.sriov import SriovNic

CFG, TXR, TXC, RXR, RXC, BUFS, BSIZE = 0x1000, 0x2000, 0x3000, 0x4000, 0x5000, 0x10000, 2048
MAC = [0x020000000001, 0x020000000002]
N = 32


def frame(dst: int, src: int, n: int, fill: int) -> bytes:
    return dst.to_bytes(6, "big") + src.to_bytes(6, "big") + b"\x88\xb5" + bytes([fill % 256]) * (n - 14)


class Driver:
    """A minimal vmxnet3 driver: rings of N entries, gen bits by lap, one completion per frame."""

    def __init__(self, nic: SriovNic, i: int, cq_every: bool = True):
        self.vf = nic.vfs[i]
        self.mem = bytearray(1 << 20)
        self.iommu = self.vf.attach(self.mem)
        self.iommu.map(CFG, 0x5000)
        self.iommu.map(BUFS, 2 * N * BSIZE)
        nic.set_vf_mac(self.vf, MAC[i])
        cfg = np.frombuffer(self.mem, hw.CONFIG, 1, CFG)
        cfg[0] = (TXR, TXC, RXR, RXC, N, N, N, N, BSIZE, (0, 0, 0))
        self.vf.write32(hw.DSAL, CFG)
        self.vf.write32(hw.CMD, hw.CMD_ACTIVATE_DEV)
        assert self.vf.read32(hw.CMD) == 0
        self.tx_tail = self.txc_next = self.rx_tail = self.rxc_next = 0
        self.cq_every = cq_every

    def ring(self, base, dtype):
        return np.frombuffer(self.mem, dtype, N, base)

    @staticmethod
    def gen(count: int) -> int:
        return 0 if (count // N) % 2 else 1

    def send(self, frames: list[bytes]) -> None:
        txr = self.ring(TXR, hw.DESC)
        for i, f in enumerate(frames):
            slot = self.tx_tail % N
            addr = BUFS + slot * BSIZE
            self.mem[addr:addr + len(f)] = f
            cq = hw.TXD_CQ if self.cq_every or i == len(frames) - 1 else 0
            txr[slot] = (addr, len(f) | self.gen(self.tx_tail) << hw.TXD_GEN_SHIFT, hw.TXD_EOP | cq)
            self.tx_tail += 1
        self.vf.write32(hw.TXPROD, self.tx_tail % N)

    def tx_completions(self) -> list[int]:
        """Consume TX completions while their gen matches this lap's; returns their txdIdx."""
        txc, out = self.ring(TXC, hw.COMP), []
        while (txc[self.txc_next % N]["dword3"] >> 31) == self.gen(self.txc_next):
            out.append(int(txc[self.txc_next % N]["dword0"] & hw.IDX_MASK))
            self.txc_next += 1
        return out

    def post(self, n: int) -> None:
        rxr = self.ring(RXR, hw.DESC)
        for _ in range(n):
            slot = self.rx_tail % N
            rxr[slot] = (BUFS + (N + slot) * BSIZE, BSIZE | self.gen(self.rx_tail) << hw.RXD_GEN_SHIFT, 0)
            self.rx_tail += 1
        self.vf.write32(hw.RXPROD, self.rx_tail % N)

    def received(self) -> list[bytes]:
        rxc, out = self.ring(RXC, hw.COMP), []
        while (rxc[self.rxc_next % N]["dword3"] >> 31) == self.gen(self.rxc_next):
            c = rxc[self.rxc_next % N]
            slot = int(c["dword0"] & hw.IDX_MASK)
            assert slot == self.rxc_next % N and not c["dword2"] & hw.RCD_ERR
            a = BUFS + (N + slot) * BSIZE
            out.append(bytes(self.mem[a:a + int(c["dword2"] & hw.LEN_MASK)]))
            self.rxc_next += 1
        return out


@pytest.fixture
def pair():
    nic = SriovNic("vmxnet3", 2)
    return nic, Driver(nic, 0), Driver(nic, 1)


def test_generation_flips_at_wrap_and_frames_stay_in_order(pair):
    nic, a, b = pair
    got, sent = [], []
    for burst in range(5):  # 100 frames through 32-entry rings: three wraps
        frames = [frame(MAC[1], MAC[0], 60 + burst, burst * 20 + i) for i in range(20)]
        b.post(20)
        a.send(frames)
        nic.step()
        sent += frames
        got += b.received()
        assert a.tx_completions() == [(burst * 20 + i) % N for i in range(20)]
    assert got == sent
    assert a.vf.txr.gen == 0 and a.vf.txr.next == 100 % N  # 3 wraps: gen 1 -> 0 -> 1 -> 0
    assert a.vf.txc.gen == 0 and b.vf.rxc.gen == 0


def test_stale_completion_entry_is_never_consumed_twice(pair):
    nic, a, b = pair
    b.post(N - 1)
    a.send([frame(MAC[1], MAC[0], 60, i) for i in range(N - 1)])
    nic.step()
    assert len(a.tx_completions()) == N - 1 and len(b.received()) == N - 1
    # Nothing new: every entry left in the completion rings is from the lap just consumed.
    assert a.tx_completions() == [] and b.received() == []
    a.send([frame(MAC[1], MAC[0], 60, 99)])
    nic.step()
    assert a.tx_completions() == [(N - 1) % N]  # the new one only, written with the flipped gen
    assert a.tx_completions() == []


def test_full_rx_completion_ring_holds_frames_back_in_the_port(pair):
    nic, a, b = pair
    b.post(N - 1)
    sent = [frame(MAC[1], MAC[0], 60, i) for i in range(3 * (N - 1))]
    for k in range(3):  # three rings' worth while the receiver consumes nothing
        a.send(sent[k * (N - 1):(k + 1) * (N - 1)])
        nic.step()
        assert len(a.tx_completions()) == N - 1
    assert b.vf.stats.rx_frames == N - 1 and b.vf.port.pending() == 2 * (N - 1)
    got = b.received()  # the full completion ring, consumed exactly once
    assert got == sent[:N - 1] and b.received() == []
    for _ in range(2):
        b.post(N - 1)
        nic.step()
        got += b.received()
    assert got == sent and b.vf.port.stats.drops == 0


def test_completion_requested_on_the_last_frame_covers_the_burst():
    nic = SriovNic("vmxnet3", 2)
    a, b = Driver(nic, 0, cq_every=False), Driver(nic, 1)
    b.post(8)
    a.send([frame(MAC[1], MAC[0], 60, i) for i in range(8)])
    nic.step()
    assert a.tx_completions() == [7] and len(b.received()) == 8


def test_descriptor_not_yet_handed_over_by_gen_is_not_sent(pair):
    nic, a, b = pair
    b.post(4)
    a.send([frame(MAC[1], MAC[0], 60, i) for i in range(4)])
    a.ring(TXR, hw.DESC)[2]["dword2"] ^= 1 << hw.TXD_GEN_SHIFT  # the driver had not finished slot 2
    nic.step()
    assert a.vf.stats.tx_frames == 2 and a.vf.txr.next == 2
    a.ring(TXR, hw.DESC)[2]["dword2"] ^= 1 << hw.TXD_GEN_SHIFT
    nic.step()
    assert a.vf.stats.tx_frames == 4


def test_bad_descriptor_stops_the_queue_and_raises_an_event(pair):
    nic, a, b = pair
    a.vf.write32(hw.IMR0 + 8, 0)  # unmask the event vector
    a.send([frame(MAC[1], MAC[0], 60, 1)])
    a.ring(TXR, hw.DESC)[0]["dword3"] &= 0xFFFFFFFF ^ hw.TXD_EOP
    nic.step()
    assert a.vf.stats.tx_errors == 1 and a.vf.take_msix() & 0b10
    assert a.vf.read32(hw.ECR) & hw.ECR_QERR
    a.vf.write32(hw.CMD, hw.CMD_GET_QUEUE_STATUS)
    assert a.vf.read32(hw.CMD) & 1  # TX stopped


def test_activate_refuses_a_config_the_device_cannot_use(pair):
    nic, a, _ = pair
    np.frombuffer(a.mem, hw.CONFIG, 1, CFG)[0]["tx_comp_size"] = N // 2  # smaller than its ring
    a.vf.write32(hw.CMD, hw.CMD_ACTIVATE_DEV)
    assert a.vf.read32(hw.CMD) == 1


def test_unmask_acknowledges_the_vector(pair):
    nic, a, b = pair
    a.vf.write32(hw.IMR0, 0)
    b.post(1)
    a.send([frame(MAC[1], MAC[0], 60, 1)])
    nic.step()
    assert a.vf.take_msix() == 1 and a.vf.read32(hw.IMR0) == 1  # fired, then masked itself
    a.vf.write32(hw.IMR0, 0)
    assert a.vf.take_msix() == 0 and not a.vf.eicr & 1  # acknowledged: no second message
