/* nullvf: a complete Shell API v1 plugin for the null VF (no wire behind it).
 *
 * BAR0 of the null VF: 0x00 ID (reads 0x4e554c4c "NULL"), 0x04 CTRL (bit 0 reset, self-clearing),
 * 0x08 STATUS (bit 0 ready), 0x0C ICR (read to clear), 0x10 IMS (interrupt mask set),
 * 0x14 TXDB (doorbell: frames sent so far), 0x18 RXBASE (address of posted-buffer array).
 */
#include "npa_shell.h"

#define REG_ID 0x00
#define REG_CTRL 0x04
#define REG_STATUS 0x08
#define REG_ICR 0x0C
#define REG_IMS 0x10
#define REG_TXDB 0x14
#define REG_RXBASE 0x18
#define NULL_ID 0x4e554c4cu
#define MAX_POSTED 1024u

struct state {
    const struct npa_init_cfg *cfg;
    struct npa_desc *posted; /* fill buffers the "device" holds, from dma_alloc */
    uint32_t nposted, sent, up;
};
static struct state st;
static struct state *const self = &st;
/* A table of pointers in static data, indexed at run time: the loader must relocate it
 * (__wasm_apply_data_relocs) for the messages to come out right at any base. */
static const char *const state_msg[2] = {"nullvf: data path down", "nullvf: data path up"};

static void say_state(void) {
    const char *s = state_msg[self->up & 1];
    uint32_t n = 0;
    while (s[n]) n++;
    shell_log(NPA_LOG_INFO, (uint32_t)(uintptr_t)s, n);
}

static int32_t device_reset(void) {
    shell_mmio_write32(REG_CTRL, 1);
    for (int i = 0; i < 100; i++) {
        if (shell_mmio_read32(REG_STATUS) & 1) return NPA_OK;
        shell_udelay(10);
    }
    return NPA_TIMEOUT;
}

NPA_EXPORT(npa_init) int32_t npa_init(uint32_t cfg_addr) {
    const struct npa_init_cfg *cfg = (const struct npa_init_cfg *)(uintptr_t)cfg_addr;
    if (cfg->magic != NPA_CFG_MAGIC || cfg->abi_major != NPA_ABI_MAJOR) return NPA_CONFIG;
    if (self->up) return NPA_STATE;
    if (shell_mmio_read32(REG_ID) != NULL_ID) return NPA_DEVICE;
    int32_t s = device_reset();
    if (s != NPA_OK) return s;
    if (self->posted) shell_dma_free((uint32_t)(uintptr_t)self->posted); /* re-init after quiesce */
    uint32_t n = cfg->fill_size < MAX_POSTED ? cfg->fill_size : MAX_POSTED;
    uint32_t a = shell_dma_alloc(n * sizeof(struct npa_desc), 64);
    if (a == 0) return NPA_NOMEM;
    self->cfg = cfg;
    self->posted = (struct npa_desc *)(uintptr_t)a;
    self->nposted = 0;
    self->up = 1;
    shell_mmio_write32(REG_RXBASE, a);
    shell_mmio_write32(REG_IMS, 1);
    say_state();
    return NPA_OK;
}

/* TX: every frame completes at once. RX: buffers are posted and never filled. */
NPA_EXPORT(npa_poll) int32_t npa_poll(uint32_t queue, uint32_t budget) {
    if (!self->up) return -NPA_STATE;
    if (queue != 0) return -NPA_UNSUPPORTED;
    const struct npa_init_cfg *c = self->cfg;
    volatile struct npa_ring_hdr *tx = npa_ring_hdr(c->tx_ring), *txc = npa_ring_hdr(c->txc_ring);
    volatile struct npa_ring_hdr *fill = npa_ring_hdr(c->fill_ring);
    uint32_t done = 0, cons = tx->consumer, prod = txc->producer;
    while (done < budget && cons != tx->producer && prod - txc->consumer < c->txc_size) {
        *npa_ring_desc(c->txc_ring, c->txc_size, prod++) = *npa_ring_desc(c->tx_ring, c->tx_size, cons++);
        done++;
    }
    tx->consumer = cons;
    txc->producer = prod;
    if (done) {
        self->sent += done;
        shell_mmio_write32(REG_TXDB, self->sent); /* one doorbell per burst */
    }
    uint32_t max = c->fill_size < MAX_POSTED ? c->fill_size : MAX_POSTED, posted = 0;
    for (cons = fill->consumer; posted < budget && cons != fill->producer && self->nposted < max; posted++)
        self->posted[self->nposted++] = *npa_ring_desc(c->fill_ring, c->fill_size, cons++);
    fill->consumer = cons;
    return (int32_t)done;
}

NPA_EXPORT(npa_intr) uint32_t npa_intr(uint32_t vector) {
    uint32_t icr = shell_mmio_read32(REG_ICR);
    return (vector == 0 && icr) ? 1u : 0u;
}

/* Hand every frame back: TX is never held; posted RX buffers return EMPTY. */
NPA_EXPORT(npa_quiesce) int32_t npa_quiesce(void) {
    if (!self->up) return NPA_OK;
    const struct npa_init_cfg *c = self->cfg;
    volatile struct npa_ring_hdr *rx = npa_ring_hdr(c->rx_ring);
    uint32_t prod = rx->producer;
    while (self->nposted) {
        if (prod - rx->consumer >= c->rx_size) return NPA_STATE; /* shell must drain rx first */
        struct npa_desc d = self->posted[--self->nposted];
        d.len = 0;
        d.flags = NPA_DESC_EMPTY;
        *npa_ring_desc(c->rx_ring, c->rx_size, prod++) = d;
        rx->producer = prod;
    }
    shell_mmio_write32(REG_IMS, 0);
    self->up = 0;
    say_state();
    return NPA_OK;
}

NPA_EXPORT(npa_reset) int32_t npa_reset(void) {
    if (self->posted) shell_dma_free((uint32_t)(uintptr_t)self->posted);
    self->posted = 0;
    self->nposted = 0;
    self->up = 0;
    return device_reset();
}
