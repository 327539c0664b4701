//! mlx5: a Shell API v1 plugin for the Mellanox ConnectX-5 VF model, one send and one receive queue.
//!
//! The data path in one picture (counters run free; slot = counter & (queue - 1)):
//!   shell tx   --poll--> send WQEs (CQ_UPDATE on a burst's last) + send counter in the doorbell
//!                        record + one MMIO doorbell  --send CQE (wqe_counter)-->  txc
//!   shell fill --poll--> receive WQEs + receive counter in the doorbell record (no MMIO at all)
//!                        --receive CQE (byte_cnt, or an error)-->  shell rx
//! A CQE at consumer index ci is ours when its owner bit is the lap parity of ci and its opcode
//! is not INVALID; consumed indices go back to the device through the doorbell record. All the
//! device reads and writes is big-endian. Layouts: nic_model/mlx5.py.
const npa = @import("npa");

const CMD: u32 = 0x0004;
const QCFG_LO: u32 = 0x0008;
const QCFG_HI: u32 = 0x000C;
const CQ_ARM: u32 = 0x0020;
const EVENTS: u32 = 0x0030;
const EVENT_ARM: u32 = 0x0034;
const SQ_DB: u32 = 0x0800;

const CMD_ENABLE: u32 = 1 << 0;
const CMD_REFUSED: u32 = 1 << 1;
const CMD_RESET: u32 = 1 << 31;
const OP_SEND: u32 = 0x0A;
const CQ_UPDATE: u8 = 1 << 3;
const CQE_REQ: u8 = 0x0;
const CQE_RESP_SEND: u8 = 0x2;
const CQE_REQ_ERR: u8 = 0xD;
const CQE_INVALID: u8 = 0xF;
const SEND_CQ: u32 = 0;
const RECV_CQ: u32 = 1;
const VEC_CQ: u32 = 0;
const VEC_EVENT: u32 = 1;
const HW_MAX: u32 = 512; // entries per queue at most
const HW_MIN: u32 = 8;

const SendWqe = extern struct {
    opmod_idx_opcode: u32,
    qpn_ds: u32,
    signature: u8,
    rsvd: [2]u8,
    fm_ce_se: u8,
    imm: u32,
    eth: [4]u32,
    byte_count: u32,
    lkey: u32,
    addr: u64,
    pad: [4]u32,
};
const RecvWqe = extern struct { byte_count: u32, lkey: u32, addr: u64 };
const Cqe = extern struct {
    rsvd0: [44]u8,
    byte_cnt: u32,
    rsvd1: [7]u8,
    syndrome: u8,
    qpn: u32,
    wqe_counter: u16,
    signature: u8,
    op_own: u8,
};
const QueueConfig = extern struct {
    sq: u64,
    rq: u64,
    send_cq: u64,
    recv_cq: u64,
    dbrec: u64,
    log_sq: u8,
    log_rq: u8,
    log_send_cq: u8,
    log_recv_cq: u8,
    reserved: [5]u32,
};
const DoorbellRecord = extern struct { rq_counter: u32, sq_counter: u32, send_cq_ci: u32, recv_cq_ci: u32 };
comptime {
    if (@sizeOf(SendWqe) != 64 or @sizeOf(Cqe) != 64 or @sizeOf(QueueConfig) != 64) @compileError("layout");
    if (@sizeOf(RecvWqe) != 16 or @sizeOf(DoorbellRecord) != 16) @compileError("layout");
    if (@offsetOf(Cqe, "byte_cnt") != 0x2C or @offsetOf(Cqe, "op_own") != 0x3F) @compileError("Cqe");
}

/// A completion queue as software consumes it.
const Cq = struct {
    ring: [*]volatile Cqe = undefined,
    log: u5 = 0,
    ci: u32 = 0,

    /// The CQE at ci when the device has written it on this lap, else null.
    fn next(self: *const Cq) ?*volatile Cqe {
        const cqe = &self.ring[self.ci & ((@as(u32, 1) << self.log) - 1)];
        const own = cqe.op_own;
        if (own >> 4 == CQE_INVALID or (own & 1) != ((self.ci >> self.log) & 1)) return null;
        return cqe;
    }
};

const State = struct {
    cfg: *const npa.InitCfg = undefined,
    qc: ?*QueueConfig = null,
    sq: ?[*]volatile SendWqe = null,
    rq: ?[*]volatile RecvWqe = null,
    db: ?*volatile DoorbellRecord = null,
    scq: Cq = .{},
    rcq: Cq = .{},
    sq_n: u32 = 0,
    rq_n: u32 = 0,
    sq_tail: u32 = 0, // WQEs posted
    sq_clean: u32 = 0, // WQEs completed
    rq_tail: u32 = 0, // receive WQEs posted
    rq_next: u32 = 0, // receive WQEs completed (= receive CQEs consumed)
    up: bool = false,
    stopping: bool = false,
    err: bool = false,
};
var st: State = .{};
var tx_shadow: [HW_MAX]npa.Desc = undefined;
var rx_shadow: [HW_MAX]npa.Desc = undefined;

fn be16(x: u16) u16 {
    return @byteSwap(x);
}
fn be32(x: u32) u32 {
    return @byteSwap(x);
}
fn be64(x: u64) u64 {
    return @byteSwap(x);
}
fn addrOf(p: anytype) u32 {
    return @intCast(@intFromPtr(p));
}

fn deviceReset() i32 {
    npa.mmio_write32(CMD, CMD_RESET);
    var i: u32 = 0;
    while (i < 100) : (i += 1) {
        if (npa.mmio_read32(CMD) & CMD_RESET == 0) return npa.OK;
        npa.udelay(10);
    }
    return npa.TIMEOUT;
}

fn alloc(size: u32) u32 {
    return npa.dma_alloc(size, 64);
}

fn release(addr: u32) void {
    if (addr != 0) npa.dma_free(addr);
}

fn freeQueues() void {
    if (st.qc) |p| release(addrOf(p));
    if (st.sq) |p| release(addrOf(p));
    if (st.rq) |p| release(addrOf(p));
    if (st.db) |p| release(addrOf(p));
    if (st.scq.log != 0) release(addrOf(st.scq.ring));
    if (st.rcq.log != 0) release(addrOf(st.rcq.ring));
    st.qc = null;
    st.sq = null;
    st.rq = null;
    st.db = null;
    st.scq = .{};
    st.rcq = .{};
}

fn log2(n: u32) u5 {
    return @intCast(31 - @clz(n));
}

fn queueSize(shell_size: u32) u32 {
    return if (shell_size < HW_MAX) shell_size else HW_MAX;
}

/// A CQ of 2^log entries, every one INVALID with owner 1: nothing is ours before the device writes.
fn newCq(log: u5) ?Cq {
    const addr = alloc(@as(u32, 64) << log);
    if (addr == 0) return null;
    const ring: [*]volatile Cqe = @ptrFromInt(addr);
    var i: u32 = 0;
    while (i < (@as(u32, 1) << log)) : (i += 1) ring[i].op_own = (CQE_INVALID << 4) | 1;
    return .{ .ring = ring, .log = log };
}

fn setup(cfg: *const npa.InitCfg, sq_n: u32, rq_n: u32) i32 {
    const qc_addr = alloc(@sizeOf(QueueConfig));
    if (qc_addr != 0) st.qc = @ptrFromInt(qc_addr);
    const sq_addr = alloc(sq_n * @sizeOf(SendWqe));
    if (sq_addr != 0) st.sq = @ptrFromInt(sq_addr);
    const rq_addr = alloc(rq_n * @sizeOf(RecvWqe));
    if (rq_addr != 0) st.rq = @ptrFromInt(rq_addr);
    const db_addr = alloc(@sizeOf(DoorbellRecord));
    if (db_addr != 0) st.db = @ptrFromInt(db_addr);
    st.scq = newCq(log2(sq_n)) orelse .{};
    st.rcq = newCq(log2(rq_n)) orelse .{};
    if (st.qc == null or st.sq == null or st.rq == null or st.db == null or st.scq.log == 0 or st.rcq.log == 0)
        return npa.NOMEM;
    const db = st.db.?;
    db.* = .{ .rq_counter = 0, .sq_counter = 0, .send_cq_ci = 0, .recv_cq_ci = 0 };
    st.qc.?.* = .{
        .sq = be64(sq_addr),
        .rq = be64(rq_addr),
        .send_cq = be64(addrOf(st.scq.ring)),
        .recv_cq = be64(addrOf(st.rcq.ring)),
        .dbrec = be64(db_addr),
        .log_sq = log2(sq_n),
        .log_rq = log2(rq_n),
        .log_send_cq = st.scq.log,
        .log_recv_cq = st.rcq.log,
        .reserved = .{ 0, 0, 0, 0, 0 },
    };
    st.cfg = cfg;
    st.sq_n = sq_n;
    st.rq_n = rq_n;
    st.sq_tail = 0;
    st.sq_clean = 0;
    st.rq_tail = 0;
    st.rq_next = 0;
    return npa.OK;
}

fn armCqs() void {
    npa.mmio_write32(CQ_ARM, (SEND_CQ << 24) | (st.scq.ci & 0xFFFFFF));
    npa.mmio_write32(CQ_ARM, (RECV_CQ << 24) | (st.rcq.ci & 0xFFFFFF));
}

export fn npa_init(cfg_addr: u32) i32 {
    const cfg: *const npa.InitCfg = @ptrFromInt(cfg_addr);
    if (cfg.magic != npa.CFG_MAGIC or cfg.abi_major != npa.ABI_MAJOR) return npa.CONFIG;
    if (st.up) return npa.STATE;
    if (cfg.num_queues < 1 or cfg.frame_size < cfg.mtu) return npa.CONFIG;
    const sq_n = queueSize(cfg.tx_size);
    const rq_n = queueSize(cfg.fill_size);
    if (sq_n < HW_MIN or rq_n < HW_MIN or cfg.txc_size < sq_n or cfg.rx_size < rq_n) return npa.UNSUPPORTED;
    const s = deviceReset();
    if (s != npa.OK) return s;
    freeQueues();
    const r = setup(cfg, sq_n, rq_n);
    if (r != npa.OK) {
        freeQueues();
        return r;
    }
    st.stopping = false;
    st.err = false;
    npa.mmio_write32(QCFG_LO, addrOf(st.qc.?));
    npa.mmio_write32(QCFG_HI, 0);
    npa.mmio_write32(CMD, CMD_ENABLE);
    if (npa.mmio_read32(CMD) & (CMD_ENABLE | CMD_REFUSED) != CMD_ENABLE) return npa.DEVICE;
    npa.mmio_write32(EVENT_ARM, 1);
    armCqs();
    st.up = true;
    return npa.OK;
}

fn ringFull(h: *volatile npa.RingHdr, prod: u32, size: u32) bool {
    return prod -% h.consumer >= size;
}

/// Send CQEs hand the WQEs they complete back on txc: the one named and every one before it.
/// An error CQE completes its WQE with DESC_ERROR and leaves the queue stopped.
fn txReclaim() u32 {
    const c = st.cfg;
    const txc = npa.ringHdr(c.txc_ring);
    var prod = txc.producer;
    var done: u32 = 0;
    while (st.sq_clean != st.sq_tail) {
        const cqe = st.scq.next() orelse break;
        const opcode = cqe.op_own >> 4;
        const last = st.sq_clean +% ((@as(u32, be16(cqe.wqe_counter)) -% st.sq_clean) & 0xFFFF);
        if (last -% st.sq_clean >= st.sq_tail -% st.sq_clean or (opcode != CQE_REQ and opcode != CQE_REQ_ERR)) {
            st.err = true; // a CQE for a WQE we never posted
            break;
        }
        while (st.sq_clean != last +% 1 and !ringFull(txc, prod, c.txc_size)) : (st.sq_clean +%= 1) {
            var d = tx_shadow[st.sq_clean & (st.sq_n - 1)];
            if (opcode == CQE_REQ_ERR and st.sq_clean == last) d.flags |= npa.DESC_ERROR;
            npa.ringDesc(c.txc_ring, c.txc_size, prod).* = d;
            prod +%= 1;
            done += 1;
        }
        if (st.sq_clean != last +% 1) break; // txc is full: this CQE again next time
        if (opcode == CQE_REQ_ERR) st.err = true;
        st.scq.ci +%= 1;
    }
    txc.producer = prod;
    st.db.?.send_cq_ci = be32(st.scq.ci & 0xFFFFFF);
    return done;
}

fn txPost(budget: u32) u32 {
    const c = st.cfg;
    const tx = npa.ringHdr(c.tx_ring);
    const cons = tx.consumer;
    const avail = tx.producer -% cons;
    const room = st.sq_n - 1 - (st.sq_tail -% st.sq_clean);
    var k = @min(avail, room, budget);
    if (k > c.tx_size) k = 0; // a producer index that cannot be right: send nothing
    const sq = st.sq.?;
    var i: u32 = 0;
    while (i < k) : (i += 1) {
        const t = st.sq_tail +% i;
        const slot = t & (st.sq_n - 1);
        const d = npa.ringDesc(c.tx_ring, c.tx_size, cons +% i).*;
        const w = &sq[slot];
        w.opmod_idx_opcode = be32(((t & 0xFFFF) << 8) | OP_SEND);
        w.qpn_ds = be32(4);
        w.fm_ce_se = if (i == k - 1) CQ_UPDATE else 0;
        w.byte_count = be32(d.len & 0xFFFF);
        w.lkey = 0;
        w.addr = be64(d.addr);
        tx_shadow[slot] = d;
    }
    if (k != 0) {
        tx.consumer = cons +% k;
        st.sq_tail +%= k;
        st.db.?.sq_counter = be32(st.sq_tail & 0xFFFF);
        npa.mmio_write32(SQ_DB, st.sq_tail & 0xFFFF); // one doorbell per burst
    }
    return k;
}

fn rxToShell(cqe: ?*volatile Cqe, rx_ring: u32, rx_size: u32, prod: *u32) void {
    var d = rx_shadow[st.rq_next & (st.rq_n - 1)];
    if (cqe != null and cqe.?.op_own >> 4 == CQE_RESP_SEND) {
        d.len = be32(cqe.?.byte_cnt);
        d.flags = 0;
    } else {
        d.len = 0;
        d.flags = npa.DESC_EMPTY;
    }
    npa.ringDesc(rx_ring, rx_size, prod.*).* = d;
    prod.* +%= 1;
    st.rq_next +%= 1;
    if (cqe != null) st.rcq.ci +%= 1;
}

fn rxHarvest(budget: u32) u32 {
    const c = st.cfg;
    const rx = npa.ringHdr(c.rx_ring);
    var prod = rx.producer;
    var k: u32 = 0;
    while (k < budget and st.rq_next != st.rq_tail and !ringFull(rx, prod, c.rx_size)) : (k += 1) {
        const cqe = st.rcq.next() orelse break;
        rxToShell(cqe, c.rx_ring, c.rx_size, &prod);
    }
    rx.producer = prod;
    st.db.?.recv_cq_ci = be32(st.rcq.ci & 0xFFFFFF);
    return k;
}

fn rxRefill() void {
    const c = st.cfg;
    const fill = npa.ringHdr(c.fill_ring);
    const cons = fill.consumer;
    const avail = fill.producer -% cons;
    const room = st.rq_n - 1 - (st.rq_tail -% st.rq_next);
    var k = @min(avail, room);
    if (k > c.fill_size) k = 0;
    const rq = st.rq.?;
    var i: u32 = 0;
    while (i < k) : (i += 1) {
        const slot = (st.rq_tail +% i) & (st.rq_n - 1);
        const d = npa.ringDesc(c.fill_ring, c.fill_size, cons +% i).*;
        rq[slot] = .{ .byte_count = be32(c.frame_size), .lkey = 0, .addr = be64(d.addr) };
        rx_shadow[slot] = d;
    }
    if (k != 0) {
        fill.consumer = cons +% k;
        st.rq_tail +%= k;
        st.db.?.rq_counter = be32(st.rq_tail & 0xFFFF); // the record is the receive doorbell
    }
}

export fn npa_poll(queue: u32, budget: u32) i32 {
    if (!st.up or st.stopping) return -npa.STATE;
    if (queue != 0) return -npa.UNSUPPORTED;
    if (st.err) return -npa.DEVICE;
    var work = txReclaim();
    // Nothing completed while WQEs are out: are the queues still up? (A reset by the PF takes
    // them down silently.) One register read, only on a poll that found no work.
    if (work == 0 and st.sq_clean != st.sq_tail and npa.mmio_read32(CMD) & CMD_ENABLE == 0) st.err = true;
    if (st.err) return -npa.DEVICE;
    work += txPost(budget);
    work += rxHarvest(budget);
    rxRefill();
    return @intCast(work);
}

export fn npa_intr(vector: u32) u32 {
    if (vector > VEC_EVENT) return 0;
    if (vector == VEC_EVENT) {
        const ev = npa.mmio_read32(EVENTS);
        if (ev != 0 and st.up) st.err = true;
        npa.mmio_write32(EVENTS, ev);
        if (st.up) npa.mmio_write32(EVENT_ARM, 1);
    } else if (st.up) {
        armCqs(); // acknowledge, and fire again once there is more
    }
    return if (st.up) 1 else 0;
}

/// Stop the queues, then hand every frame back: completed sends on txc, the rest marked UNSENT;
/// received frames on rx, posted buffers marked EMPTY. NPA_STATE while a shell ring is full.
export fn npa_quiesce() i32 {
    if (!st.up) return npa.OK;
    const c = st.cfg;
    if (!st.stopping) {
        npa.mmio_write32(CMD, 0); // stop both queues, disarm both vectors
        st.stopping = true;
    }
    _ = txReclaim();
    const txc = npa.ringHdr(c.txc_ring);
    var prod = txc.producer;
    while (st.sq_clean != st.sq_tail and !ringFull(txc, prod, c.txc_size)) : (st.sq_clean +%= 1) {
        var d = tx_shadow[st.sq_clean & (st.sq_n - 1)];
        d.flags |= npa.DESC_UNSENT;
        npa.ringDesc(c.txc_ring, c.txc_size, prod).* = d;
        prod +%= 1;
    }
    txc.producer = prod;
    const rx = npa.ringHdr(c.rx_ring);
    prod = rx.producer;
    while (st.rq_next != st.rq_tail and !ringFull(rx, prod, c.rx_size))
        rxToShell(st.rcq.next(), c.rx_ring, c.rx_size, &prod);
    rx.producer = prod;
    if (st.sq_clean != st.sq_tail or st.rq_next != st.rq_tail) return npa.STATE;
    st.up = false;
    st.stopping = false;
    return npa.OK;
}

export fn npa_reset() i32 {
    st.up = false;
    st.stopping = false;
    st.err = false;
    const s = deviceReset();
    freeQueues();
    return s;
}
