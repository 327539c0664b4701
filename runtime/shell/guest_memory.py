"""The guest's own memory: where its frames live, out of the plugin's reach.

It sits at `GUEST_MEMORY_BASE` (4 GiB) in the VM's 64-bit DMA address space, above anything a
wasm32 plugin can address: the plugin handles frame addresses as opaque u64 values it copies
from shell-ring entries into descriptors, and the NIC's DMA engine reaches the frames through
the VF's IOMMU window. So a vendor plugin can neither read nor rewrite a guest's packets.
"""
from __future__ import annotations

import numpy as np

from shell_api import GUEST_MEMORY_BASE


class GuestMemory:
    def __init__(self, size: int, base: int = GUEST_MEMORY_BASE):
        self.base, self.size = base, size
        self.np = np.zeros(size, np.uint8)  # untouched pages cost nothing until written

    def offsets(self, addrs: np.ndarray) -> np.ndarray:
        """DMA addresses inside this memory (checked by the caller) as offsets into `np`."""
        return (np.asarray(addrs).astype(np.uint64) - np.uint64(self.base)).astype(np.int64)
