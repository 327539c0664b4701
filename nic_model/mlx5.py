"""Mellanox ConnectX-5 VF (mlx5), one send queue and one receive queue, each with its own
completion queue: work queues, 64-byte completion entries with an owner bit, doorbell records.

Modelled on Linux's mlx5 driver and the PRM. Everything the device reads or writes in memory is
big-endian, as on ConnectX. Software posts work-queue entries (WQEs), publishes its producer
counter in a doorbell record in memory, and, for the send queue, rings an MMIO doorbell; the
device then reads the record. The device writes a completion entry (CQE) per signaled WQE; a
CQE at consumer index ci is software's when its owner bit equals (ci >> log_cq_size) & 1 and
its opcode is not INVALID, so an entry from the previous lap is never taken again. Software
publishes its CQ consumer index in the doorbell record; the device never writes over a CQE that
software has not consumed (work waits instead).

BAR0 registers (32-bit, byte offsets):
    0x0000 FW_REV   reads 0x00100000
    0x0004 CMD      bit 0 ENABLE: write 1 to read the queue config block and start the queues,
                    0 to stop them (and disarm both vectors); bit 31 RESET: function reset
                    (RESET_US). Reads: bit 0 queues up, bit 1 the config was refused,
                    bit 31 reset in progress.
    0x0008 QCFG_LO, 0x000C QCFG_HI  address of the queue config block
    0x0020 CQ_ARM   bits 23:0 the CQ's consumer index, bits 31:24 CQ number (0 send, 1 receive):
                    acknowledges vector 0 and arms it, once; it fires at the next CQE, or at
                    once if that CQ holds CQEs past the given index
    0x0030 EVENTS   async events: bit 0 send queue in error, bit 1 receive queue in error;
                    read; write 1 to clear
    0x0034 EVENT_ARM  write 1: acknowledge and arm vector 1 (the async event queue), once
    0x0800 SQ_DB    send doorbell (the BlueFlame register's offset): the device reads the send
                    counter from the doorbell record and runs the send queue up to it

Queue config block (64 bytes, big-endian): u64 sq, rq, send_cq, recv_cq, dbrec (base addresses;
queues 64-byte aligned); u8 log_sq_size, log_rq_size, log_send_cq_size, log_recv_cq_size
(entries = 2^log, 3..15; a CQ holds at least its queue's entries); u32 reserved[5].
Doorbell record (16 bytes, big-endian u32): +0 receive counter (RQ producer), +4 send counter
(SQ producer), +8 send CQ consumer index, +12 receive CQ consumer index. Counters are 16 bits
(wqe_counter), CQ indices 24 bits; both run free.

Send WQE (64 bytes): control segment u32 opmod_idx_opcode (bits 23:8 wqe index, bits 7:0
opcode, SEND = 0x0a), u32 qpn_ds (bits 5:0 size in 16-byte units), u8 signature, u8 rsvd[2],
u8 fm_ce_se (bit 3 CQ_UPDATE: write a CQE when done), u32 imm; Ethernet segment 16 bytes
(unused here); data segment u32 byte_count, u32 lkey, u64 addr; 16 bytes padding.
Receive WQE (16 bytes): data segment u32 byte_count (buffer size), u32 lkey, u64 addr.
This model reads neither qpn_ds's size nor lkey: every send WQE is taken as its control,
Ethernet and data segments, every buffer as in the VF's one memory region, its IOMMU window
(which checks every access). ConnectX counts the 16-byte segments a WQE uses (3 here: control,
Ethernet without inline headers, one data segment; the padding to 64 bytes not counted) and
checks lkey against its memory keys; the bundled plugin writes 4 (the whole WQE) and lkey 0.
CQE (64 bytes): 0x2C u32 byte_cnt; 0x37 u8 syndrome (error CQEs); 0x38 u32 qpn;
0x3C u16 wqe_counter; 0x3F u8 op_own: opcode << 4 | owner. Opcodes: 0x0 REQ (send done),
0x2 RESP_SEND (frame received), 0xD REQ_ERR, 0xE RESP_ERR, 0xF INVALID (software initialises
every CQE to op_own 0xF1). A send CQE completes its WQE and every one before it.
A bad send WQE or a send buffer outside the IOMMU window gets a REQ_ERR CQE and puts the send
queue in error (it stops; EVENTS bit 0, vector 1). A receive buffer outside the window or
shorter than the frame gets a RESP_ERR CQE with syndrome LOCAL_LENGTH and puts the receive queue
in error; the frame waits in the port (counted in rx_oversize, nothing written, nothing lost).
A receive buffer outside the window gets RESP_ERR (LOCAL_PROT) and the queue goes on. No write
ever passes a receive WQE's byte_count.
"""
from __future__ import annotations

import numpy as np

from .switch import Port, Switch
from .vf import Vf

PCI_VENDOR, PCI_DEVICE = 0x15B3, 0x1018  # ConnectX-5 Virtual Function

FW_REV, CMD, QCFG_LO, QCFG_HI, CQ_ARM, EVENTS, EVENT_ARM, SQ_DB = (
    0x0000, 0x0004, 0x0008, 0x000C, 0x0020, 0x0030, 0x0034, 0x0800)
CMD_ENABLE, CMD_REFUSED, CMD_RESET = 1 << 0, 1 << 1, 1 << 31
EV_SQ_ERR, EV_RQ_ERR = 1 << 0, 1 << 1
OP_SEND = 0x0A
CQE_REQ, CQE_RESP_SEND, CQE_REQ_ERR, CQE_RESP_ERR, CQE_INVALID = 0x0, 0x2, 0xD, 0xE, 0xF
SYND_LOCAL_LENGTH, SYND_LOCAL_PROT = 0x01, 0x04
CQ_UPDATE = 1 << 3
WQE_COUNTER = 0xFFFF
CQ_INDEX = 0xFFFFFF
MIN_LOG, MAX_LOG = 3, 15
MIN_FRAME, MAX_FRAME = 14, 9728

QCFG = np.dtype([("sq", ">u8"), ("rq", ">u8"), ("send_cq", ">u8"), ("recv_cq", ">u8"),
                 ("dbrec", ">u8"), ("log_sq", "u1"), ("log_rq", "u1"), ("log_send_cq", "u1"),
                 ("log_recv_cq", "u1"), ("reserved", ">u4", 5)])
DBREC = np.dtype([("rq_counter", ">u4"), ("sq_counter", ">u4"), ("send_cq_ci", ">u4"),
                  ("recv_cq_ci", ">u4")])
SEND_WQE = np.dtype([("opmod_idx_opcode", ">u4"), ("qpn_ds", ">u4"), ("signature", "u1"),
                     ("rsvd", "u1", 2), ("fm_ce_se", "u1"), ("imm", ">u4"), ("eth", ">u4", 4),
                     ("byte_count", ">u4"), ("lkey", ">u4"), ("addr", ">u8"), ("pad", ">u4", 4)])
RECV_WQE = np.dtype([("byte_count", ">u4"), ("lkey", ">u4"), ("addr", ">u8")])
CQE = np.dtype([("rsvd0", "u1", 44), ("byte_cnt", ">u4"), ("rsvd1", "u1", 7), ("syndrome", "u1"),
                ("qpn", ">u4"), ("wqe_counter", ">u2"), ("signature", "u1"), ("op_own", "u1")])
assert QCFG.itemsize == SEND_WQE.itemsize == CQE.itemsize == 64
assert RECV_WQE.itemsize == DBREC.itemsize == 16


class Cq:
    """A completion queue as the device fills it: base, log size, producer index."""

    def __init__(self, base: int, log_size: int):
        self.base, self.log_size, self.size, self.pi = base, log_size, 1 << log_size, 0

    def room(self, ci: int) -> int:
        return self.size - ((self.pi - ci) & CQ_INDEX)

    def write(self, view: np.ndarray, opcode: np.ndarray | int, wqe_counter: np.ndarray,
              byte_cnt: np.ndarray | int = 0, syndrome: np.ndarray | int = 0) -> None:
        n = len(wqe_counter)
        idx = self.pi + np.arange(n)
        slots = idx & (self.size - 1)
        owner = (idx >> self.log_size) & 1
        view["byte_cnt"][slots] = byte_cnt
        view["syndrome"][slots] = syndrome
        view["qpn"][slots] = 0
        view["wqe_counter"][slots] = wqe_counter & WQE_COUNTER
        view["op_own"][slots] = (np.asarray(opcode) << 4) | owner
        self.pi = (self.pi + n) & CQ_INDEX


class Mlx5Vf(Vf):
    PCI_VENDOR, PCI_DEVICE = PCI_VENDOR, PCI_DEVICE
    MODEL = "mlx5"
    DESCRIPTION = "Mellanox ConnectX-5 VF: WQEs + 64-byte CQEs with owner bits, doorbell records"

    def __init__(self, index: int, port: Port, switch: Switch):
        super().__init__(index, port, switch)
        ro = dict(on_write=lambda v: None)
        self.register(FW_REV, 0x00100000, **ro)
        self.register(CMD, 0, on_write=self._command, on_read=self._status)
        self.register(QCFG_LO, 0)
        self.register(QCFG_HI, 0)
        self.register(CQ_ARM, 0, on_write=self._arm_cq, on_read=lambda: 0)
        self.register(EVENTS, 0, on_write=lambda v: self.regs.__setitem__(EVENTS, self.regs[EVENTS] & ~v))
        self.register(EVENT_ARM, 0, on_write=self._arm_events, on_read=lambda: 0)
        self.register(SQ_DB, 0, on_write=self._ring_sq)
        self._down()

    def _down(self) -> None:
        self.up, self.refused, self.sq_err, self.rq_err, self.sq_kicked = False, False, False, False, False
        self.sq_ci = self.rq_ci = 0
        self.cqs: list[Cq] = []

    # -- control -------------------------------------------------------------------------------
    def _status(self) -> int:
        return ((CMD_RESET if self.resetting else 0) | (CMD_ENABLE if self.up else 0)
                | (CMD_REFUSED if self.refused else 0))

    def _command(self, val: int) -> None:
        if self.resetting:
            return
        if val & CMD_RESET:
            return self.reset()
        if val & CMD_ENABLE:
            self.refused = not self._enable()
        else:
            self.up = False
            self.disable_vectors((1 << self.NUM_VECTORS) - 1)

    def _enable(self) -> bool:
        cfg = self.dma_view((self.regs[QCFG_HI] << 32) | self.regs[QCFG_LO], QCFG.itemsize, QCFG)
        if cfg is None:
            return False
        c = cfg[0].copy()  # read once
        logs = [int(c[k]) for k in ("log_sq", "log_rq", "log_send_cq", "log_recv_cq")]
        if any(not MIN_LOG <= g <= MAX_LOG for g in logs) or logs[2] < logs[0] or logs[3] < logs[1]:
            return False
        areas = [(int(c["sq"]), 64 << logs[0]), (int(c["rq"]), 16 << logs[1]),
                 (int(c["send_cq"]), 64 << logs[2]), (int(c["recv_cq"]), 64 << logs[3]),
                 (int(c["dbrec"]), DBREC.itemsize)]
        if any(a % 64 or not self.iommu.covers(a, n) for a, n in areas):
            return False
        self.sq, self.rq, self.dbrec = areas[0][0], areas[1][0], areas[4][0]
        self.log_sq, self.log_rq = logs[0], logs[1]
        self.cqs = [Cq(int(c["send_cq"]), logs[2]), Cq(int(c["recv_cq"]), logs[3])]
        self.sq_ci = self.rq_ci = 0
        self.sq_err = self.rq_err = False
        self.up = True
        return True

    def reset(self) -> None:
        super().reset()
        self._down()
        for off in (QCFG_LO, QCFG_HI, EVENTS, SQ_DB):
            self.regs[off] = 0

    def _arm_cq(self, val: int) -> None:
        self.eicr &= ~1  # acknowledge vector 0, then arm it
        self.enable_vectors(1)
        cqn, ci = val >> 24, val & CQ_INDEX
        if cqn < len(self.cqs) and self.cqs[cqn].pi != ci:
            self.raise_cause(1)  # that CQ already holds entries software has not seen

    def _arm_events(self, val: int) -> None:
        if val & 1:
            self.eicr &= ~(1 << self.MISC_VECTOR)
            self.enable_vectors(1 << self.MISC_VECTOR)

    def _ring_sq(self, val: int) -> None:
        self.regs[SQ_DB] = val
        self.sq_kicked = True

    def _error(self, queue: str) -> None:
        setattr(self, f"{queue}_err", True)
        self.regs[EVENTS] |= EV_SQ_ERR if queue == "sq" else EV_RQ_ERR
        self.raise_cause(1 << self.MISC_VECTOR)

    def _queue(self, name: str):
        """(doorbell record, work queue, its CQ, the CQ's entries, queue size, producer count)
        as the device reads them, or None (a DMA fault: the queue goes to error)."""
        send = name == "sq"
        log, ci = (self.log_sq, self.sq_ci) if send else (self.log_rq, self.rq_ci)
        db = self.dma_view(self.dbrec, DBREC.itemsize, DBREC)
        wq = self.dma_view(self.sq if send else self.rq, (64 if send else 16) << log,
                           SEND_WQE if send else RECV_WQE)
        cq = self.cqs[0 if send else 1]
        cqv = self.dma_view(cq.base, 64 * cq.size, CQE)
        if db is None or wq is None or cqv is None:
            return None
        db = db[0].copy()  # read once
        size = 1 << log
        count = (int(db["sq_counter" if send else "rq_counter"]) - ci) & WQE_COUNTER
        return (db, wq, cq, cqv, size, count) if count <= size else None

    # -- ring engine ---------------------------------------------------------------------------
    def tx(self) -> None:
        if self.resetting or not self.up or self.sq_err or not self.sq_kicked:
            return
        if (q := self._queue("sq")) is None:
            return self._error("sq")
        db, sq, cq, cqv, size, pending = q
        n = pending
        idx = self.sq_ci + np.arange(n)
        wqe = sq[idx & (size - 1)]  # read once
        signaled = (wqe["fm_ce_se"] & CQ_UPDATE) != 0
        room = cq.room(int(db["send_cq_ci"]) & CQ_INDEX) - 1  # keep one for an error CQE
        n = min(n, int(np.searchsorted(np.cumsum(signaled), room, side="right")))
        wqe, idx, signaled = wqe[:n], idx[:n], signaled[:n]
        length = wqe["byte_count"].astype(np.int64)
        addr = wqe["addr"]
        good = ((wqe["opmod_idx_opcode"] & 0xFF) == OP_SEND) & (length >= MIN_FRAME) & (length <= MAX_FRAME)
        frames, end, _ = self.dma_gather_until(addr, length, good)
        self.stats.tx_frames += len(frames)
        self.stats.tx_bytes += frames.nbytes
        self.switch.forward(self.port, frames)
        done = idx[:end][signaled[:end]]
        cq.write(cqv, CQE_REQ, done, length[:end][signaled[:end]])
        self.sq_ci = (self.sq_ci + end) & WQE_COUNTER
        self.sq_kicked = end < pending  # a full CQ held work back: go on next tick
        if end < n:  # the queue stops at a bad WQE and says why in an error CQE
            j = end
            if good[j]:
                self.dma_fault(int(addr[j]), int(length[j]))
            else:
                self.stats.tx_errors += 1
            cq.write(cqv, CQE_REQ_ERR, idx[j:j + 1], 0, SYND_LOCAL_PROT if good[j] else SYND_LOCAL_LENGTH)
            self._error("sq")
        if len(done) or end < n:
            self.raise_cause(1)

    def rx(self) -> None:
        if self.resetting or not self.up or self.rq_err or not self.port.pending():
            return
        if (q := self._queue("rq")) is None:
            return self._error("rq")
        db, rq, cq, cqv, size, posted = q
        n = min(posted, cq.room(int(db["recv_cq_ci"]) & CQ_INDEX))
        if not n:
            return  # frames wait in the port's buffer
        idx = self.rq_ci + np.arange(n)
        wqe = rq[idx & (size - 1)]  # read once
        room = wqe["byte_count"].astype(np.int64)
        frames, stopped = self.receive_fitting(n, room)
        n = len(frames)
        idx, wqe, room = idx[:n], wqe[:n], room[:n]
        written = self.dma_scatter_until(wqe["addr"], frames, room) if n else 0
        if written < n:  # a WQE the device may not write: its frame waits in the port
            frames, stopped, why = frames.take(slice(0, written)), True, SYND_LOCAL_PROT
        else:  # the frame that does not fit its WQE waits in the port
            why = SYND_LOCAL_LENGTH
        self.stats.rx_frames += written
        self.stats.rx_bytes += frames.nbytes
        if written:
            cq.write(cqv, CQE_RESP_SEND, idx[:written], frames.lens, 0)
        self.rq_ci = (self.rq_ci + written) & WQE_COUNTER
        if stopped:  # the WQE that could not take its frame completes in error; the RQ errors
            cq.write(cqv, CQE_RESP_ERR, self.rq_ci + np.arange(1), 0, why)
            self.rq_ci = (self.rq_ci + 1) & WQE_COUNTER
            self._error("rq")
        self.raise_cause(1)
