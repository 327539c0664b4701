/* vmxnet3: a Shell API v1 plugin for the VMware vmxnet3 (UPT) model, one TX and one RX queue.
 *
 * The data path in one picture (counters run free; slot = counter & (ring - 1); an entry's gen
 * is 1 on even laps of its ring and 0 on odd ones):
 *   shell tx   --poll-->  TX ring (gen written last, cq on every frame)  --TX completion--> txc
 *   shell fill --poll-->  RX ring (posted buffers)  --RX completion (len, err)-->  shell rx
 * One doorbell write per burst and direction (TXPROD, RXPROD). Completions are consumed while
 * their gen equals the lap parity of our consumer counter, so an entry left from the previous
 * lap is never taken twice. Register and descriptor layouts: nic_model/vmxnet3.py.
 */
#include "npa_shell.h"

#define IMR(v) (0x000u + 8u * (v))
#define TXPROD 0x600
#define RXPROD 0x800
#define DSAL 0x1010
#define DSAH 0x1014
#define CMD 0x1020
#define ECR 0x1040

#define CMD_ACTIVATE_DEV 0xCAFE0000u
#define CMD_QUIESCE_DEV 0xCAFE0001u
#define CMD_RESET_DEV 0xCAFE0002u
#define CMD_GET_QUEUE_STATUS 0xF00D0000u
#define CMD_BUSY 0xFFFFFFFFu
#define ECR_QERR 1u

#define TXD_GEN_SHIFT 14
#define TXD_EOP (1u << 12)
#define TXD_CQ (1u << 13)
#define RXD_GEN_SHIFT 31
#define COMP_GEN_SHIFT 31
#define RCD_ERR (1u << 14)
#define LEN_MASK 0x3FFFu
#define IDX_MASK 0xFFFu
#define VEC_QUEUE 0u
#define VEC_EVENT 1u

#define HW_MAX 512u /* entries per ring at most; vmxnet3 wants 32..4096, a multiple of 32 */
#define HW_MIN 32u

struct desc {
    uint64_t addr;
    uint32_t dword2, dword3;
};
struct comp {
    uint32_t dword0, dword1, dword2, dword3;
};
struct queue_config {
    uint64_t tx_ring, tx_comp, rx_ring, rx_comp;
    uint32_t tx_size, tx_comp_size, rx_size, rx_comp_size, rx_buf_size, reserved[3];
};
_Static_assert(sizeof(struct queue_config) == 64, "queue_config size");

struct state {
    const struct npa_init_cfg *cfg;
    struct queue_config *qc;
    volatile struct desc *txr, *rxr;
    volatile struct comp *txc, *rxc;
    uint32_t tx_n, rx_n;
    uint32_t tx_tail, tx_clean; /* posted, completed (= TX completions consumed: one per frame) */
    uint32_t rx_tail, rx_next;  /* posted, harvested (= RX completions consumed) */
    uint32_t up, stopping, error;
};
static struct state st;
static struct state *const self = &st;
static struct npa_desc tx_shadow[HW_MAX], rx_shadow[HW_MAX];

static uint32_t lo(const volatile void *p) { return (uint32_t)(uintptr_t)p; }
/* The gen of the entry a free-running counter `c` names on a ring of n (a power of two). */
static uint32_t gen_of(uint32_t c, uint32_t n) { return (c & n) ? 0u : 1u; }

static uint32_t command(uint32_t cmd) {
    shell_mmio_write32(CMD, cmd);
    return shell_mmio_read32(CMD);
}

static int32_t device_reset(void) {
    shell_mmio_write32(CMD, CMD_RESET_DEV);
    for (int i = 0; i < 100; i++) {
        if (shell_mmio_read32(CMD) != CMD_BUSY) return NPA_OK;
        shell_udelay(10);
    }
    return NPA_TIMEOUT;
}

static void release(volatile void *p) {
    if (p) shell_dma_free(lo(p));
}

static void free_rings(void) {
    release(self->txr);
    release(self->txc);
    release(self->rxr);
    release(self->rxc);
    release(self->qc);
    self->txr = self->rxr = 0;
    self->txc = self->rxc = 0;
    self->qc = 0;
}

static volatile void *alloc_zeroed(uint32_t size) {
    volatile uint32_t *p = (volatile uint32_t *)(uintptr_t)shell_dma_alloc(size, 64);
    for (uint32_t i = 0; p && i < size / 4; i++) p[i] = 0; /* no stale gen bits */
    return p;
}

static uint32_t ring_size(uint32_t shell_size) {
    return shell_size < HW_MAX ? shell_size : HW_MAX;
}

NPA_EXPORT(npa_init) int32_t npa_init(uint32_t cfg_addr) {
    const struct npa_init_cfg *cfg = (const struct npa_init_cfg *)(uintptr_t)cfg_addr;
    if (cfg->magic != NPA_CFG_MAGIC || cfg->abi_major != NPA_ABI_MAJOR) return NPA_CONFIG;
    if (self->up) return NPA_STATE;
    if (cfg->num_queues < 1 || cfg->frame_size < cfg->mtu) return NPA_CONFIG;
    uint32_t tx_n = ring_size(cfg->tx_size), rx_n = ring_size(cfg->fill_size);
    if (tx_n < HW_MIN || rx_n < HW_MIN || cfg->txc_size < tx_n || cfg->rx_size < rx_n) return NPA_UNSUPPORTED;
    int32_t s = device_reset();
    if (s != NPA_OK) return s;
    free_rings();
    self->qc = (struct queue_config *)alloc_zeroed(sizeof(struct queue_config));
    self->txr = alloc_zeroed(tx_n * 16);
    self->txc = alloc_zeroed(tx_n * 16);
    self->rxr = alloc_zeroed(rx_n * 16);
    self->rxc = alloc_zeroed(rx_n * 16);
    if (!self->qc || !self->txr || !self->txc || !self->rxr || !self->rxc) {
        free_rings();
        return NPA_NOMEM;
    }
    struct queue_config *q = self->qc;
    q->tx_ring = lo(self->txr);
    q->tx_comp = lo(self->txc);
    q->rx_ring = lo(self->rxr);
    q->rx_comp = lo(self->rxc);
    q->tx_size = q->tx_comp_size = tx_n;
    q->rx_size = q->rx_comp_size = rx_n;
    q->rx_buf_size = cfg->frame_size;
    self->cfg = cfg;
    self->tx_n = tx_n;
    self->rx_n = rx_n;
    self->tx_tail = self->tx_clean = self->rx_tail = self->rx_next = 0;
    self->stopping = self->error = 0;
    shell_mmio_write32(DSAL, lo(q));
    shell_mmio_write32(DSAH, 0);
    if (command(CMD_ACTIVATE_DEV) != 0) return NPA_DEVICE;
    shell_mmio_write32(IMR(VEC_QUEUE), 0);
    shell_mmio_write32(IMR(VEC_EVENT), 0);
    self->up = 1;
    return NPA_OK;
}

static int ring_full(volatile struct npa_ring_hdr *h, uint32_t prod, uint32_t size) {
    return prod - h->consumer >= size;
}

static int comp_ready(volatile struct comp *ring, uint32_t n, uint32_t c) {
    return (ring[c & (n - 1)].dword3 >> COMP_GEN_SHIFT) == gen_of(c, n);
}

/* TX completions (one per frame) hand the frames back on txc, in order. */
static uint32_t tx_reclaim(void) {
    const struct npa_init_cfg *c = self->cfg;
    volatile struct npa_ring_hdr *txc = npa_ring_hdr(c->txc_ring);
    uint32_t n = self->tx_n, prod = txc->producer, done = 0;
    while (self->tx_clean != self->tx_tail && !ring_full(txc, prod, c->txc_size) &&
           comp_ready(self->txc, n, self->tx_clean)) {
        *npa_ring_desc(c->txc_ring, c->txc_size, prod++) = tx_shadow[self->tx_clean & (n - 1)];
        self->tx_clean++;
        done++;
    }
    txc->producer = prod;
    return done;
}

static uint32_t tx_post(uint32_t budget) {
    const struct npa_init_cfg *c = self->cfg;
    volatile struct npa_ring_hdr *tx = npa_ring_hdr(c->tx_ring);
    uint32_t n = self->tx_n, cons = tx->consumer, avail = tx->producer - cons;
    uint32_t room = n - 1 - (self->tx_tail - self->tx_clean);
    uint32_t k = avail < room ? avail : room;
    if (k > budget) k = budget;
    if (k > c->tx_size) k = 0; /* a producer index that cannot be right: send nothing */
    for (uint32_t i = 0; i < k; i++) {
        uint32_t t = self->tx_tail + i, slot = t & (n - 1);
        struct npa_desc d = *npa_ring_desc(c->tx_ring, c->tx_size, cons + i);
        volatile struct desc *hw = &self->txr[slot];
        hw->addr = d.addr;
        hw->dword3 = TXD_EOP | TXD_CQ;
        hw->dword2 = (d.len & LEN_MASK) | (gen_of(t, n) << TXD_GEN_SHIFT); /* ownership last */
        tx_shadow[slot] = d;
    }
    if (k) {
        tx->consumer = cons + k;
        self->tx_tail += k;
        shell_mmio_write32(TXPROD, self->tx_tail & (n - 1)); /* one doorbell per burst */
    }
    return k;
}

static void rx_to_shell(volatile struct comp *rc, volatile struct npa_ring_hdr *rx, uint32_t *prod) {
    const struct npa_init_cfg *c = self->cfg;
    struct npa_desc d = rx_shadow[self->rx_next & (self->rx_n - 1)];
    if (!rc || (rc->dword2 & RCD_ERR)) {
        d.len = 0;
        d.flags = NPA_DESC_EMPTY;
    } else {
        d.len = rc->dword2 & LEN_MASK;
        d.flags = 0;
    }
    *npa_ring_desc(c->rx_ring, c->rx_size, (*prod)++) = d;
    self->rx_next++;
}

static uint32_t rx_harvest(uint32_t budget) {
    const struct npa_init_cfg *c = self->cfg;
    volatile struct npa_ring_hdr *rx = npa_ring_hdr(c->rx_ring);
    uint32_t n = self->rx_n, prod = rx->producer, k = 0;
    while (k < budget && self->rx_next != self->rx_tail && !ring_full(rx, prod, c->rx_size) &&
           comp_ready(self->rxc, n, self->rx_next)) {
        rx_to_shell(&self->rxc[self->rx_next & (n - 1)], rx, &prod);
        k++;
    }
    rx->producer = prod;
    return k;
}

static void rx_refill(void) {
    const struct npa_init_cfg *c = self->cfg;
    volatile struct npa_ring_hdr *fill = npa_ring_hdr(c->fill_ring);
    uint32_t n = self->rx_n, cons = fill->consumer, avail = fill->producer - cons;
    uint32_t room = n - 1 - (self->rx_tail - self->rx_next);
    uint32_t k = avail < room ? avail : room;
    if (k > c->fill_size) k = 0;
    for (uint32_t i = 0; i < k; i++) {
        uint32_t t = self->rx_tail + i, slot = t & (n - 1);
        struct npa_desc d = *npa_ring_desc(c->fill_ring, c->fill_size, cons + i);
        self->rxr[slot].addr = d.addr;
        self->rxr[slot].dword2 = (c->frame_size & LEN_MASK) | (gen_of(t, n) << RXD_GEN_SHIFT);
        rx_shadow[slot] = d;
    }
    if (k) {
        fill->consumer = cons + k;
        self->rx_tail += k;
        shell_mmio_write32(RXPROD, self->rx_tail & (n - 1)); /* one doorbell per burst */
    }
}

/* Nothing completed while frames are out: ask whether the queues still run (a reset by the PF
 * or an error stops them). Two register accesses, only on a poll that found no work. */
static int queues_stopped(void) {
    uint32_t status = command(CMD_GET_QUEUE_STATUS);
    return status == CMD_BUSY || (status & 3u) != 0;
}

NPA_EXPORT(npa_poll) int32_t npa_poll(uint32_t queue, uint32_t budget) {
    if (!self->up || self->stopping) return -NPA_STATE;
    if (queue != 0) return -NPA_UNSUPPORTED;
    if (self->error) return -NPA_DEVICE;
    uint32_t work = tx_reclaim();
    if (!work && self->tx_clean != self->tx_tail && queues_stopped()) {
        self->error = 1;
        return -NPA_DEVICE;
    }
    work += tx_post(budget);
    work += rx_harvest(budget);
    rx_refill();
    return (int32_t)work;
}

NPA_EXPORT(npa_intr) uint32_t npa_intr(uint32_t vector) {
    if (vector > VEC_EVENT) return 0;
    if (vector == VEC_EVENT) {
        uint32_t ecr = shell_mmio_read32(ECR);
        if (ecr & ECR_QERR) self->error = self->up;
        shell_mmio_write32(ECR, ecr);
    }
    if (self->up) shell_mmio_write32(IMR(vector), 0); /* acknowledge and unmask */
    return self->up ? 1u : 0u;
}

/* Stop the device, then hand every frame back: completed TX on txc, the rest marked UNSENT;
 * completed RX on rx, posted buffers marked EMPTY. NPA_STATE when a shell ring is full. */
NPA_EXPORT(npa_quiesce) int32_t npa_quiesce(void) {
    if (!self->up) return NPA_OK;
    const struct npa_init_cfg *c = self->cfg;
    if (!self->stopping) {
        shell_mmio_write32(IMR(VEC_QUEUE), 1);
        shell_mmio_write32(IMR(VEC_EVENT), 1);
        command(CMD_QUIESCE_DEV);
        self->stopping = 1;
    }
    tx_reclaim();
    volatile struct npa_ring_hdr *txc = npa_ring_hdr(c->txc_ring), *rx = npa_ring_hdr(c->rx_ring);
    uint32_t prod = txc->producer;
    for (; self->tx_clean != self->tx_tail && !ring_full(txc, prod, c->txc_size); self->tx_clean++) {
        struct npa_desc d = tx_shadow[self->tx_clean & (self->tx_n - 1)];
        d.flags |= NPA_DESC_UNSENT;
        *npa_ring_desc(c->txc_ring, c->txc_size, prod++) = d;
    }
    txc->producer = prod;
    prod = rx->producer;
    for (uint32_t n = self->rx_n; self->rx_next != self->rx_tail && !ring_full(rx, prod, c->rx_size);) {
        int done = comp_ready(self->rxc, n, self->rx_next); /* received, or a posted buffer */
        rx_to_shell(done ? &self->rxc[self->rx_next & (n - 1)] : 0, rx, &prod);
    }
    rx->producer = prod;
    if (self->tx_clean != self->tx_tail || self->rx_next != self->rx_tail) return NPA_STATE;
    self->up = 0;
    self->stopping = 0;
    return NPA_OK;
}

NPA_EXPORT(npa_reset) int32_t npa_reset(void) {
    self->up = 0;
    self->stopping = 0;
    self->error = 0;
    int32_t s = device_reset();
    free_rings();
    return s;
}
