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
/* Containment II: lies about what the device did, and doing nothing. */
#define BOGUS_TXC_THEN_TRAP 9 /* rewrites its txc entries to other frames, then traps */
#define TXC_PRODUCER_JUMPS 10 /* publishes the txc producer 300 entries ahead */
#define RX_PRODUCER_JUMPS 11  /* publishes the rx producer 300 entries ahead */
#define SMASHES_ITS_STACK 12  /* recursion past its stack after 8 polls; then whatever it does */
#define TX_CONSUMER_BACK_ONE 13 /* moves the tx consumer back by one: "send it again" */
#define RX_REPLAY 14          /* hands the last received buffer back again once it is re-posted */
#define RX_NEVER_FILLED 15    /* hands posted buffers back as 60-byte frames the NIC never wrote */
#define DOES_NOTHING 16       /* initialises, then never moves a frame */
#define RX_BUFFER_ZERO 17     /* programs a receive buffer size of 0 */
#define GREEDY 18             /* does its work, then burns ~5 million instructions every poll */
/* Containment III: descriptors in guest memory, frames handed back untaken, wall time. */
#define RX_RING_IN_GUEST 19   /* points its RX ring at frames 8-11 of the guest's pool */
#define TX_RING_IN_GUEST 20   /* VFTDBAH = 1: its TX ring in guest memory, above 4 GiB */
#define FILL_BACK_UNTAKEN 21  /* hands back on rx, EMPTY, a fill entry it never took */
#define TX_BACK_UNTAKEN 22    /* hands back on txc, UNSENT, a tx entry it never took */
#define RX_BUFFER_TWICE 23    /* posts one RX buffer in two descriptors */
#define MMIO_HOG 24           /* 20,000 mmio_read32 calls every poll: cheap in fuel, not in time */
#define INIT_SPINS 25         /* npa_init spins for about 0.4 s before it returns */

static volatile struct npa_ring_hdr *hdr(uint32_t ring) { return npa_ring_hdr(ring); }
static uint32_t polls;
static struct npa_desc last_rx;

#if ATTACK == SMASHES_ITS_STACK
static uint32_t deep(volatile uint8_t *p, uint32_t n) {
    volatile uint8_t frame[4096];
    frame[0] = (uint8_t)n;
    return n ? deep(frame, n - 1) + frame[0] : (uint32_t)(uintptr_t)p;
}
#endif

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
#if ATTACK == RX_BUFFER_ZERO
    shell_mmio_write32(VFSRRCTL, 0);
#endif
#if ATTACK == RX_RING_IN_GUEST
    {
        const struct npa_init_cfg *c = self->cfg;
        uint64_t frames = ((uint64_t)c->pool_base_hi << 32 | c->pool_base) + 8ull * c->frame_size;
        shell_mmio_write32(VFRDBAL, (uint32_t)frames);
        shell_mmio_write32(VFRDBAH, (uint32_t)(frames >> 32));
    }
#endif
#if ATTACK == TX_RING_IN_GUEST
    shell_mmio_write32(VFTDBAH, 1);
#endif
#if ATTACK == INIT_SPINS
    for (uint32_t i = 0; i < 400000; i++) (void)shell_mmio_read32(VFRDH); /* ~0.4 s, little fuel */
#endif
    return s;
}

NPA_EXPORT(npa_poll) int32_t npa_poll(uint32_t queue, uint32_t budget) {
    const struct npa_init_cfg *c = self->cfg;
    polls++;
#if ATTACK == DOES_NOTHING
    return 0;
#endif
#if ATTACK == GREEDY
    for (volatile uint32_t spin = 0; spin < 1000000; spin++) {}
#endif
#if ATTACK == SMASHES_ITS_STACK
    if (polls > 8) deep(0, 64); /* 256 KiB of frames on a 64 KiB stack: over its own data */
#endif
#if ATTACK == TX_CONSUMER_BACK_ONE
    if (polls == 8 && hdr(c->tx_ring)->consumer) hdr(c->tx_ring)->consumer -= 1;
#endif
#if ATTACK == RX_NEVER_FILLED
    if (polls > 8 && hdr(c->fill_ring)->consumer != hdr(c->fill_ring)->producer) {
        struct npa_desc d = *npa_ring_desc(c->fill_ring, c->fill_size, hdr(c->fill_ring)->consumer++);
        d.len = 60;
        *npa_ring_desc(c->rx_ring, c->rx_size, hdr(c->rx_ring)->producer++) = d;
    }
#endif
#if ATTACK == RX_REPLAY
    if (polls > 8 && last_rx.addr) {
        *npa_ring_desc(c->rx_ring, c->rx_size, hdr(c->rx_ring)->producer++) = last_rx;
        last_rx.addr = 0;
    }
    uint32_t rx0 = hdr(c->rx_ring)->producer;
#endif
#if ATTACK == BOGUS_TXC_THEN_TRAP || ATTACK == TXC_PRODUCER_JUMPS
    uint32_t txc0 = hdr(c->txc_ring)->producer;
#endif
#if ATTACK == RX_PRODUCER_JUMPS
    if (polls == 8) hdr(c->rx_ring)->producer += 300;
#endif
#if ATTACK == MMIO_HOG
    for (uint32_t i = 0; i < 20000; i++) (void)shell_mmio_read32(VFRDH);
#endif
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
#if ATTACK == FILL_BACK_UNTAKEN || ATTACK == TX_BACK_UNTAKEN
#if ATTACK == FILL_BACK_UNTAKEN
    uint32_t from = c->fill_ring, from_size = c->fill_size, to = c->rx_ring, to_size = c->rx_size;
    uint32_t flag = NPA_DESC_EMPTY;
#else
    uint32_t from = c->tx_ring, from_size = c->tx_size, to = c->txc_ring, to_size = c->txc_size;
    uint32_t flag = NPA_DESC_UNSENT;
#endif
    if (polls % 4 == 0 && hdr(from)->consumer != hdr(from)->producer) {
        struct npa_desc d = *npa_ring_desc(from, from_size, hdr(from)->consumer); /* not taken */
        d.flags = flag;
        *npa_ring_desc(to, to_size, hdr(to)->producer) = d;
        hdr(to)->producer++;
        return 1; /* and leaves it on the ring this poll: the shell reaps it untaken */
    }
#endif
    int32_t work = real_poll(queue, budget);
#if ATTACK == RX_REPLAY
    if (polls == 8 && hdr(c->rx_ring)->producer != rx0)
        last_rx = *npa_ring_desc(c->rx_ring, c->rx_size, hdr(c->rx_ring)->producer - 1);
#endif
#if ATTACK == BOGUS_TXC_THEN_TRAP
    if (polls > 5) {
        for (uint32_t i = txc0; i != hdr(c->txc_ring)->producer; i++)
            npa_ring_desc(c->txc_ring, c->txc_size, i)->addr += 2 * c->frame_size;
        if (polls > 8) __builtin_trap();
    }
#endif
#if ATTACK == TXC_PRODUCER_JUMPS
    if (polls == 8) hdr(c->txc_ring)->producer = txc0 + 300;
#endif
#if ATTACK == RX_BUFFER_TWICE
    if (polls == 8 && self->rx_tail - self->rx_next >= 2) {
        uint32_t m = self->rx_n - 1;
        self->rxr[(self->rx_next + 1) & m].read.pkt_addr = self->rxr[self->rx_next & m].read.pkt_addr;
    }
#endif
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
