/* Hostile plugins: the real ixgbevf driver (its exports renamed, as in tests/fixtures/broken.c)
 * behind exports that each break one containment rule, chosen with -DATTACK=<n>. The tests in
 * tests/test_containment.py run each beside a well-behaved VM and assert it is contained: no
 * exception out of the host loop, no byte changed outside its VF's window, no other VM's frame
 * touched, every refusal counted.
 */
#include "ixgbevf_wrapped.h"

#define RX_ADDR_WRAPS 1       /* RX buffers at 0x7FFFFFFFFFFFFF00: address + length wraps int64 */
#define TX_ADDR_WRAPS 2       /* TX buffers at 2^64 - 256 */
#define TX_OVERSIZE 3         /* every other TX frame 3000 bytes long: wider than any buffer */
#define FREES_SHELL_MEMORY 4  /* dma_free on the pool, shell rings, init block, guard page, ... */
#define REWRITES_FRAMES 5     /* writes over every frame it is handed, through its address */
#define FILL_CONSUMER_AHEAD 6 /* publishes the fill consumer one past the producer */
#define TX_CONSUMER_BACK 7    /* moves the tx consumer back by the ring size before quiesce */
#define RX_BUFFER_HUGE 8      /* tells the NIC its RX buffers hold 15 KiB (they hold 2) */

static volatile struct npa_ring_hdr *hdr(uint32_t ring) { return npa_ring_hdr(ring); }

NPA_EXPORT(npa_init) int32_t npa_init(uint32_t cfg_addr) {
    int32_t s = real_init(cfg_addr);
#if ATTACK == FREES_SHELL_MEMORY
    const struct npa_init_cfg *c = self->cfg;
    uint32_t mine = shell_dma_alloc(256, 64);
    shell_dma_free(c->pool_base);       /* the frame pool (its low 32 bits) */
    shell_dma_free(c->tx_ring);         /* shell rings */
    shell_dma_free(c->rx_ring);
    shell_dma_free(cfg_addr);           /* the init block */
    shell_dma_free(0x100);              /* the guard page */
    shell_dma_free(lo(self->txr) + 16); /* the middle of its own block */
    shell_dma_free(mine);
    shell_dma_free(mine);               /* a double free */
#endif
#if ATTACK == RX_BUFFER_HUGE
    shell_mmio_write32(VFSRRCTL, 15);
#endif
    return s;
}

NPA_EXPORT(npa_poll) int32_t npa_poll(uint32_t queue, uint32_t budget) {
    const struct npa_init_cfg *c = self->cfg;
#if ATTACK == REWRITES_FRAMES
    for (uint32_t i = hdr(c->tx_ring)->consumer; i != hdr(c->tx_ring)->producer; i++) {
        struct npa_desc *d = npa_ring_desc(c->tx_ring, c->tx_size, i);
        volatile uint8_t *p = (volatile uint8_t *)(uintptr_t)d->addr; /* 32 bits of a 64-bit address */
        for (uint32_t k = 0; k < d->len; k++) p[k] = 0xEE;
    }
#endif
#if ATTACK == FILL_CONSUMER_AHEAD
    if (self->up) hdr(c->fill_ring)->consumer = hdr(c->fill_ring)->producer + 1;
#endif
    int32_t work = real_poll(queue, budget);
#if ATTACK == RX_ADDR_WRAPS
    for (uint32_t i = 0; i < self->rx_n; i++) self->rxr[i].read.pkt_addr = 0x7FFFFFFFFFFFFF00ull;
#endif
#if ATTACK == TX_ADDR_WRAPS || ATTACK == TX_OVERSIZE
    for (uint32_t i = self->tx_clean; i != self->tx_tail; i++) {
        volatile struct adv_tx_desc *t = &self->txr[i & (self->tx_n - 1)];
        if (t->olinfo_status & TXD_STA_DD) continue;
#if ATTACK == TX_ADDR_WRAPS
        t->addr = 0xFFFFFFFFFFFFFF00ull;
#else
        if (i & 1) t->cmd_type_len = (t->cmd_type_len & ~0xFFFFu) | 3000u;
#endif
    }
#endif
    return work;
}

NPA_EXPORT(npa_intr) uint32_t npa_intr(uint32_t vector) { return real_intr(vector); }

NPA_EXPORT(npa_quiesce) int32_t npa_quiesce(void) {
#if ATTACK == TX_CONSUMER_BACK
    const struct npa_init_cfg *c = self->cfg;
    hdr(c->tx_ring)->consumer -= c->tx_size;
#endif
    return real_quiesce();
}

NPA_EXPORT(npa_reset) int32_t npa_reset(void) { return real_reset(); }
