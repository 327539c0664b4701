/* ixgbevf: a Shell API v1 plugin for the Intel 82599 virtual function (one queue pair).
 *
 * The data path in one picture (indices run free, slots are index & (ring - 1)):
 *   shell tx  --poll-->  hardware TX ring (DD on the RS descriptor of each burst)  --> txc
 *   shell fill --poll--> hardware RX ring (posted buffers)  --DD write-back-->  shell rx
 * One doorbell write per burst and per direction (VFTDT, VFRDT). The hardware overwrites RX
 * descriptors on write-back, so each slot's shell entry is kept in a shadow ring here.
 * Register and descriptor layouts: nic_model/ixgbe.py (the 82599 datasheet's).
 */
#include "npa_shell.h"

#define VFCTRL 0x0000
#define VTEICR 0x0100
#define VTEIMS 0x0108
#define VTEIMC 0x010C
#define VFRDBAL 0x1000
#define VFRDBAH 0x1004
#define VFRDLEN 0x1008
#define VFRDH 0x1010
#define VFSRRCTL 0x1014
#define VFRDT 0x1018
#define VFRXDCTL 0x1028
#define VFTDBAL 0x2000
#define VFTDBAH 0x2004
#define VFTDLEN 0x2008
#define VFTDH 0x2010
#define VFTDT 0x2018
#define VFTXDCTL 0x2028

#define CTRL_RST (1u << 26)
#define DCTL_ENABLE (1u << 25)
#define TXD_DTYP_DATA (3u << 20)
#define TXD_EOP (1u << 24)
#define TXD_IFCS (1u << 25)
#define TXD_RS (1u << 27)
#define TXD_DEXT (1u << 29)
#define TXD_STA_DD 1u
#define RXD_DD 1u
#define RXD_VP (1u << 3)
#define RXD_RXE (1u << 29)
#define VEC_QUEUE 0u
#define VEC_MISC 1u

#define HW_MAX 512u /* descriptors per hardware ring at most (a multiple of 8) */

struct adv_tx_desc {
    uint64_t addr;
    uint32_t cmd_type_len;
    uint32_t olinfo_status;
};
union adv_rx_desc {
    struct { uint64_t pkt_addr, hdr_addr; } read;
    struct { uint32_t pkt_info, rss, status_error; uint16_t length, vlan; } wb;
};

struct state {
    const struct npa_init_cfg *cfg;
    volatile struct adv_tx_desc *txr;
    volatile union adv_rx_desc *rxr;
    uint32_t tx_n, rx_n;               /* hardware ring sizes */
    uint32_t tx_tail, tx_clean;        /* next slot to fill, oldest slot not yet reclaimed */
    uint32_t rx_tail, rx_next;         /* next slot to post, next slot to harvest */
    uint32_t up, stopping, error;
};
static struct state st;
static struct state *const self = &st;
static struct npa_desc tx_shadow[HW_MAX], rx_shadow[HW_MAX];
static uint8_t tx_rs[HW_MAX];

static uint32_t lo(const volatile void *p) { return (uint32_t)(uintptr_t)p; }

static int32_t device_reset(void) {
    shell_mmio_write32(VFCTRL, CTRL_RST);
    for (int i = 0; i < 100; i++) {
        if (!(shell_mmio_read32(VFCTRL) & CTRL_RST)) return NPA_OK;
        shell_udelay(10);
    }
    return NPA_TIMEOUT;
}

static void free_rings(void) {
    if (self->txr) shell_dma_free(lo(self->txr));
    if (self->rxr) shell_dma_free(lo(self->rxr));
    self->txr = 0;
    self->rxr = 0;
}

static uint32_t ring_size(uint32_t shell_size) {
    return shell_size < HW_MAX ? shell_size : HW_MAX;
}

NPA_EXPORT(npa_init) int32_t npa_init(uint32_t cfg_addr) {
    const struct npa_init_cfg *cfg = (const struct npa_init_cfg *)(uintptr_t)cfg_addr;
    if (cfg->magic != NPA_CFG_MAGIC || cfg->abi_major != NPA_ABI_MAJOR) return NPA_CONFIG;
    if (self->up) return NPA_STATE;
    if (cfg->num_queues < 1 || cfg->frame_size < 1024 || cfg->frame_size < cfg->mtu) return NPA_CONFIG;
    uint32_t tx_n = ring_size(cfg->tx_size), rx_n = ring_size(cfg->fill_size);
    if (tx_n < 8 || rx_n < 8 || cfg->txc_size < tx_n || cfg->rx_size < rx_n) return NPA_UNSUPPORTED;
    int32_t s = device_reset();
    if (s != NPA_OK) return s;
    free_rings();
    self->txr = (volatile struct adv_tx_desc *)(uintptr_t)shell_dma_alloc(tx_n * 16, 128);
    self->rxr = (volatile union adv_rx_desc *)(uintptr_t)shell_dma_alloc(rx_n * 16, 128);
    if (!self->txr || !self->rxr) {
        free_rings();
        return NPA_NOMEM;
    }
    self->cfg = cfg;
    self->tx_n = tx_n;
    self->rx_n = rx_n;
    self->tx_tail = self->tx_clean = self->rx_tail = self->rx_next = 0;
    self->stopping = self->error = 0;
    shell_mmio_write32(VFTDBAL, lo(self->txr));
    shell_mmio_write32(VFTDBAH, 0);
    shell_mmio_write32(VFTDLEN, tx_n * 16);
    shell_mmio_write32(VFTDH, 0);
    shell_mmio_write32(VFTDT, 0);
    shell_mmio_write32(VFTXDCTL, DCTL_ENABLE);
    shell_mmio_write32(VFRDBAL, lo(self->rxr));
    shell_mmio_write32(VFRDBAH, 0);
    shell_mmio_write32(VFRDLEN, rx_n * 16);
    shell_mmio_write32(VFSRRCTL, cfg->frame_size / 1024);
    shell_mmio_write32(VFRDH, 0);
    shell_mmio_write32(VFRDT, 0);
    shell_mmio_write32(VFRXDCTL, DCTL_ENABLE);
    shell_mmio_write32(VTEIMS, (1u << VEC_QUEUE) | (1u << VEC_MISC));
    self->up = 1;
    return NPA_OK;
}

static int ring_full(volatile struct npa_ring_hdr *h, uint32_t prod, uint32_t size) {
    return prod - h->consumer >= size;
}

/* Completed TX bursts go back on txc. Only a burst's last descriptor asks for status (RS). */
static uint32_t tx_reclaim(void) {
    const struct npa_init_cfg *c = self->cfg;
    volatile struct npa_ring_hdr *txc = npa_ring_hdr(c->txc_ring);
    uint32_t m = self->tx_n - 1, clean = self->tx_clean, prod = txc->producer, done = 0;
    while (clean != self->tx_tail) {
        uint32_t end = clean;
        while (!tx_rs[end & m]) end++;
        if (!(self->txr[end & m].olinfo_status & TXD_STA_DD)) break;
        for (; clean != end + 1 && !ring_full(txc, prod, c->txc_size); clean++, done++)
            *npa_ring_desc(c->txc_ring, c->txc_size, prod++) = tx_shadow[clean & m];
        if (clean != end + 1) break; /* txc is full: the shell drains it, we go on next time */
    }
    self->tx_clean = clean;
    txc->producer = prod;
    return done;
}

static uint32_t tx_post(uint32_t budget) {
    const struct npa_init_cfg *c = self->cfg;
    volatile struct npa_ring_hdr *tx = npa_ring_hdr(c->tx_ring);
    uint32_t m = self->tx_n - 1, cons = tx->consumer, avail = tx->producer - cons;
    uint32_t room = self->tx_n - 1 - (self->tx_tail - self->tx_clean);
    uint32_t n = avail < room ? avail : room;
    if (n > budget) n = budget;
    if (n > c->tx_size) n = 0; /* a producer index that cannot be right: send nothing */
    for (uint32_t i = 0; i < n; i++) {
        uint32_t slot = (self->tx_tail + i) & m;
        struct npa_desc d = *npa_ring_desc(c->tx_ring, c->tx_size, cons + i);
        uint32_t len = d.len & 0xFFFFu;
        self->txr[slot].addr = d.addr;
        self->txr[slot].cmd_type_len = TXD_DTYP_DATA | TXD_DEXT | TXD_EOP | TXD_IFCS | len |
                                       (i == n - 1 ? TXD_RS : 0);
        self->txr[slot].olinfo_status = len << 14;
        tx_shadow[slot] = d;
        tx_rs[slot] = i == n - 1;
    }
    if (n) {
        tx->consumer = cons + n;
        self->tx_tail += n;
        shell_mmio_write32(VFTDT, self->tx_tail & m); /* one doorbell per burst */
    }
    return n;
}

static void rx_to_shell(struct npa_desc d, uint32_t status, uint32_t length, uint32_t vlan,
                        volatile struct npa_ring_hdr *rx, uint32_t *prod) {
    const struct npa_init_cfg *c = self->cfg;
    if (!(status & RXD_DD) || (status & RXD_RXE)) {
        d.len = 0;
        d.flags = NPA_DESC_EMPTY;
    } else {
        d.len = length;
        d.flags = (status & RXD_VP) ? NPA_DESC_VLAN : 0;
        d.vlan = (uint16_t)vlan;
    }
    *npa_ring_desc(c->rx_ring, c->rx_size, (*prod)++) = d;
}

static uint32_t rx_harvest(uint32_t budget) {
    const struct npa_init_cfg *c = self->cfg;
    volatile struct npa_ring_hdr *rx = npa_ring_hdr(c->rx_ring);
    uint32_t m = self->rx_n - 1, prod = rx->producer, n = 0;
    while (n < budget && self->rx_next != self->rx_tail && !ring_full(rx, prod, c->rx_size)) {
        volatile union adv_rx_desc *hw = &self->rxr[self->rx_next & m];
        uint32_t status = hw->wb.status_error;
        if (!(status & RXD_DD)) break;
        rx_to_shell(rx_shadow[self->rx_next & m], status, hw->wb.length, hw->wb.vlan, rx, &prod);
        self->rx_next++;
        n++;
    }
    rx->producer = prod;
    return n;
}

static void rx_refill(void) {
    const struct npa_init_cfg *c = self->cfg;
    volatile struct npa_ring_hdr *fill = npa_ring_hdr(c->fill_ring);
    uint32_t m = self->rx_n - 1, cons = fill->consumer, avail = fill->producer - cons;
    uint32_t room = self->rx_n - 1 - (self->rx_tail - self->rx_next);
    uint32_t n = avail < room ? avail : room;
    if (n > c->fill_size) n = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t slot = (self->rx_tail + i) & m;
        struct npa_desc d = *npa_ring_desc(c->fill_ring, c->fill_size, cons + i);
        self->rxr[slot].read.pkt_addr = d.addr;
        self->rxr[slot].read.hdr_addr = 0;
        rx_shadow[slot] = d;
    }
    if (n) {
        fill->consumer = cons + n;
        self->rx_tail += n;
        shell_mmio_write32(VFRDT, self->rx_tail & m); /* one doorbell per burst */
    }
}

NPA_EXPORT(npa_poll) int32_t npa_poll(uint32_t queue, uint32_t budget) {
    if (!self->up || self->stopping) return -NPA_STATE;
    if (queue != 0) return -NPA_UNSUPPORTED;
    if (self->error) return -NPA_DEVICE;
    uint32_t work = tx_reclaim();
    /* Nothing completed while descriptors are out: make sure the queue still runs (a VF reset
     * by the PF stops it silently). One register read, and only on a poll that found no work. */
    if (!work && self->tx_clean != self->tx_tail && !(shell_mmio_read32(VFTXDCTL) & DCTL_ENABLE)) {
        self->error = 1;
        return -NPA_DEVICE;
    }
    work += tx_post(budget);
    work += rx_harvest(budget);
    rx_refill();
    return (int32_t)work;
}

NPA_EXPORT(npa_intr) uint32_t npa_intr(uint32_t vector) {
    if (vector > VEC_MISC) return 0;
    shell_mmio_write32(VTEICR, 1u << vector); /* acknowledge this vector's cause */
    if (vector == VEC_MISC && self->up) {
        /* A device error (DMA fault, malformed ring) stops a queue: report it from poll. */
        if (!(shell_mmio_read32(VFTXDCTL) & DCTL_ENABLE) || !(shell_mmio_read32(VFRXDCTL) & DCTL_ENABLE))
            self->error = 1;
    }
    if (self->up) shell_mmio_write32(VTEIMS, 1u << vector); /* re-arm */
    return self->up ? 1u : 0u;
}

/* Stop both queues, then hand every frame back: sent TX on txc, unsent TX on txc marked UNSENT,
 * received RX on rx, posted-but-empty RX buffers on rx marked EMPTY. If a shell ring is full,
 * return NPA_STATE having handed back what fits; the shell drains and calls again. */
NPA_EXPORT(npa_quiesce) int32_t npa_quiesce(void) {
    if (!self->up) return NPA_OK;
    const struct npa_init_cfg *c = self->cfg;
    if (!self->stopping) {
        shell_mmio_write32(VTEIMC, (1u << VEC_QUEUE) | (1u << VEC_MISC));
        shell_mmio_write32(VFTXDCTL, 0);
        shell_mmio_write32(VFRXDCTL, 0);
        self->stopping = 1;
    }
    volatile struct npa_ring_hdr *txc = npa_ring_hdr(c->txc_ring), *rx = npa_ring_hdr(c->rx_ring);
    uint32_t tm = self->tx_n - 1, head = shell_mmio_read32(VFTDH);
    uint32_t sent_end = self->tx_clean + ((head - self->tx_clean) & tm); /* the device stopped here */
    uint32_t prod = txc->producer;
    for (; self->tx_clean != self->tx_tail; self->tx_clean++) {
        if (ring_full(txc, prod, c->txc_size)) break;
        struct npa_desc d = tx_shadow[self->tx_clean & tm];
        if (self->tx_clean - sent_end < 0x80000000u) d.flags |= NPA_DESC_UNSENT;
        *npa_ring_desc(c->txc_ring, c->txc_size, prod++) = d;
    }
    txc->producer = prod;
    uint32_t rm = self->rx_n - 1;
    prod = rx->producer;
    for (; self->rx_next != self->rx_tail; self->rx_next++) {
        if (ring_full(rx, prod, c->rx_size)) break;
        volatile union adv_rx_desc *hw = &self->rxr[self->rx_next & rm];
        rx_to_shell(rx_shadow[self->rx_next & rm], hw->wb.status_error, hw->wb.length, hw->wb.vlan, rx, &prod);
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
