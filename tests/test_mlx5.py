"""The mlx5 ring engine: WQEs, doorbell records, CQEs with owner bits, driven by the test."""
import numpy as np
import pytest

from npa.nic_model import mlx5 as hw
from npa.nic_model.sriov import SriovNic

QCFG, DBREC, SQ, RQ, SCQ, RCQ, BUFS, BSIZE = 0x1000, 0x1040, 0x2000, 0x4000, 0x5000, 0x7000, 0x10000, 2048
MAC = [0x020000000001, 0x020000000002]
LOG = 5
N = 1 << LOG


def frame(dst: int, src: int, n: int, fill: int) -> bytes:
    return dst.to_bytes(6, "big") + src.to_bytes(6, "big") + b"\x88\xb5" + bytes([fill % 256]) * (n - 14)


class Driver:
    """A minimal mlx5 driver: 32-entry queues and CQs, consumer indices published in the record."""

    def __init__(self, nic: SriovNic, i: int):
        self.vf = nic.vfs[i]
        self.mem = bytearray(1 << 20)
        self.iommu = self.vf.attach(self.mem)
        self.iommu.map(QCFG, 0x8000)
        self.iommu.map(BUFS, 2 * N * BSIZE)
        nic.set_vf_mac(self.vf, MAC[i])
        for cq in (SCQ, RCQ):
            self.cq(cq)["op_own"] = 0xF1  # INVALID, owner 1
        np.frombuffer(self.mem, hw.QCFG, 1, QCFG)[0] = (SQ, RQ, SCQ, RCQ, DBREC, LOG, LOG, LOG, LOG, (0,) * 5)
        self.vf.write32(hw.QCFG_LO, QCFG)
        self.vf.write32(hw.CMD, hw.CMD_ENABLE)
        assert self.vf.read32(hw.CMD) == hw.CMD_ENABLE
        self.sq_tail = self.rq_tail = 0
        self.ci = {SCQ: 0, RCQ: 0}

    def cq(self, base):
        return np.frombuffer(self.mem, hw.CQE, N, base)

    @property
    def db(self):
        return np.frombuffer(self.mem, hw.DBREC, 1, DBREC)[0]

    def send(self, frames: list[bytes], signal: str = "last", ring: bool = True) -> None:
        sq = np.frombuffer(self.mem, hw.SEND_WQE, N, SQ)
        for i, f in enumerate(frames):
            slot = self.sq_tail % N
            addr = BUFS + slot * BSIZE
            self.mem[addr:addr + len(f)] = f
            ce = hw.CQ_UPDATE if signal == "all" or (signal == "last" and i == len(frames) - 1) else 0
            w = np.zeros(1, hw.SEND_WQE)[0]
            w["opmod_idx_opcode"] = (self.sq_tail & 0xFFFF) << 8 | hw.OP_SEND
            w["qpn_ds"], w["fm_ce_se"], w["byte_count"], w["addr"] = 4, ce, len(f), addr
            sq[slot] = w
            self.sq_tail += 1
        self.db["sq_counter"] = self.sq_tail & 0xFFFF
        if ring:
            self.vf.write32(hw.SQ_DB, self.sq_tail & 0xFFFF)

    def post(self, n: int) -> None:
        rq = np.frombuffer(self.mem, hw.RECV_WQE, N, RQ)
        for _ in range(n):
            slot = self.rq_tail % N
            rq[slot] = (BSIZE, 0, BUFS + (N + slot) * BSIZE)
            self.rq_tail += 1
        self.db["rq_counter"] = self.rq_tail & 0xFFFF

    def cqes(self, base, publish: bool = True) -> list[np.void]:
        """Consume CQEs while owner == lap parity of ci and the opcode is valid."""
        out, cq = [], self.cq(base)
        while True:
            c = cq[self.ci[base] % N]
            if c["op_own"] >> 4 == hw.CQE_INVALID or (c["op_own"] & 1) != (self.ci[base] >> LOG) & 1:
                break
            out.append(c.copy())
            self.ci[base] += 1
        if publish:
            self.db["send_cq_ci" if base == SCQ else "recv_cq_ci"] = self.ci[base] & 0xFFFFFF
        return out

    def received(self) -> list[bytes]:
        out = []
        for c in self.cqes(RCQ):
            assert c["op_own"] >> 4 == hw.CQE_RESP_SEND
            a = BUFS + (N + int(c["wqe_counter"]) % N) * BSIZE
            out.append(bytes(self.mem[a:a + int(c["byte_cnt"])]))
        return out


@pytest.fixture
def pair():
    nic = SriovNic("mlx5", 2)
    return nic, Driver(nic, 0), Driver(nic, 1)


def test_owner_bit_follows_the_lap_parity_and_frames_stay_in_order(pair):
    nic, a, b = pair
    sent, got = [], []
    for burst in range(5):  # 100 frames through 32-entry queues and CQs: three laps
        frames = [frame(MAC[1], MAC[0], 60 + burst, burst * 20 + i) for i in range(20)]
        b.post(20)
        a.send(frames, signal="all")
        nic.step()
        cqes = a.cqes(SCQ)
        assert [int(c["wqe_counter"]) for c in cqes] == list(range(burst * 20, burst * 20 + 20))
        assert all(c["op_own"] & 1 == ((burst * 20 + i) >> LOG) & 1 for i, c in enumerate(cqes))
        sent += frames
        got += b.received()
    assert got == sent


def test_stale_cqe_from_the_previous_lap_is_never_consumed_twice(pair):
    nic, a, b = pair
    b.post(N)
    a.send([frame(MAC[1], MAC[0], 60, i) for i in range(N)], signal="all")
    nic.step()
    first = a.cqes(SCQ)  # the device keeps one CQE free for an error: the last WQE waits
    nic.step()
    assert len(first) == N - 1 and len(first + a.cqes(SCQ)) == N and len(b.received()) == N
    # A whole lap consumed: every CQE in the ring now has owner 0 and ci's parity is 1.
    assert a.cqes(SCQ) == [] and b.received() == []
    a.send([frame(MAC[1], MAC[0], 60, 99)], signal="all")
    nic.step()
    assert [int(c["wqe_counter"]) for c in a.cqes(SCQ)] == [N]


def test_a_signaled_cqe_completes_the_whole_burst(pair):
    nic, a, b = pair
    b.post(8)
    a.send([frame(MAC[1], MAC[0], 60, i) for i in range(8)], signal="last")
    nic.step()
    assert [int(c["wqe_counter"]) for c in a.cqes(SCQ)] == [7] and len(b.received()) == 8


def test_send_queue_waits_for_the_mmio_doorbell_receive_queue_reads_the_record(pair):
    nic, a, b = pair
    b.post(4)  # the receive side has no MMIO doorbell: the record alone posts buffers
    a.send([frame(MAC[1], MAC[0], 60, i) for i in range(4)], ring=False)
    nic.step()
    assert a.vf.stats.tx_frames == 0  # record written, doorbell not rung
    a.vf.write32(hw.SQ_DB, a.sq_tail)
    nic.step()
    assert a.vf.stats.tx_frames == 4 and len(b.received()) == 4


def test_full_receive_cq_holds_frames_in_the_port_until_software_consumes(pair):
    nic, a, b = pair
    b.post(N)
    sent = [frame(MAC[1], MAC[0], 60, i) for i in range(N + 8)]
    a.send(sent[:N // 2])
    nic.step()
    a.cqes(SCQ)
    a.send(sent[N // 2:N])
    nic.step()
    assert len(b.cqes(RCQ, publish=False)) == N  # the CQ is full and software has not said so
    b.post(8)
    a.cqes(SCQ)
    a.send(sent[N:])
    nic.step()
    assert b.vf.stats.rx_frames == N and b.vf.port.pending() == 8  # never written over a CQE
    b.db["recv_cq_ci"] = b.ci[RCQ]
    nic.step()
    assert b.vf.stats.rx_frames == N + 8 and len(b.cqes(RCQ)) == 8


def test_send_buffer_outside_the_window_stops_the_queue_with_an_error_cqe(pair):
    nic, a, b = pair
    a.vf.write32(hw.EVENT_ARM, 1)
    a.send([frame(MAC[1], MAC[0], 60, 1)])
    np.frombuffer(a.mem, hw.SEND_WQE, N, SQ)[0]["addr"] = 0x90000  # not mapped
    nic.step()
    (cqe,) = a.cqes(SCQ)
    assert cqe["op_own"] >> 4 == hw.CQE_REQ_ERR and cqe["syndrome"] == hw.SYND_LOCAL_PROT
    assert a.vf.stats.dma_faults == 1 and a.vf.read32(hw.EVENTS) & hw.EV_SQ_ERR
    assert a.vf.take_msix() & 0b10
    a.send([frame(MAC[1], MAC[0], 60, 2)])
    nic.step()
    assert a.vf.stats.tx_frames == 0  # the queue stays in error


def test_arming_a_cq_with_unseen_cqes_fires_at_once(pair):
    nic, a, b = pair
    a.vf.write32(hw.CQ_ARM, 0 << 24 | 0)
    b.post(1)
    a.send([frame(MAC[1], MAC[0], 60, 1)])
    nic.step()
    assert a.vf.take_msix() == 1
    a.vf.write32(hw.CQ_ARM, 0 << 24 | 0)  # re-armed without consuming the CQE
    assert a.vf.take_msix() == 1
    a.cqes(SCQ)
    a.vf.write32(hw.CQ_ARM, 0 << 24 | a.ci[SCQ])
    assert a.vf.take_msix() == 0 and not a.vf.eicr & 1
