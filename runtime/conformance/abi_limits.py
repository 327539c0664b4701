"""How a conformant plugin uses the Shell API: the limits the `abi_use` checks hold it to.

Each sits far from what the bundled plugins do (in brackets) and far below what hurts a host.
"""
MAX_UDELAY_US = 10_000  # one udelay call (the bundled plugins wait 10 µs at a time)
MAX_UDELAY_PER_CALL_US = 100_000  # all udelay calls of one export call (at most 1 ms)
MAX_ALLOCS_PER_INIT = 64  # dma_alloc calls in one npa_init (2)
MAX_ALLOCS_OUTSIDE_INIT = 0  # dma_alloc calls after npa_init: DMA memory is set up there
IDLE_STEPS = 100  # steps with no traffic...
MAX_IDLE_INTERRUPTS = 2  # ...during which at most this many interrupts are raised (0)

ABI_LIMITS = {
    "largest udelay (µs)": MAX_UDELAY_US,
    "udelay per export call (µs)": MAX_UDELAY_PER_CALL_US,
    "dma_alloc per npa_init": MAX_ALLOCS_PER_INIT,
    "dma_alloc outside npa_init": MAX_ALLOCS_OUTSIDE_INIT,
    f"interrupts in {IDLE_STEPS} idle steps": MAX_IDLE_INTERRUPTS,
}
