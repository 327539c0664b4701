"""Lays out one VM's data path: the frame pool in the guest's memory, the shell rings and the
init config block in the plugin's linear memory (reserved off the DMA heap's top, so never in
its free list), and the IOMMU window's view of the pool."""
from __future__ import annotations

from dataclasses import dataclass

from npa.runtime.sandbox import Sandbox
from npa.shell_api import ABI_MAJOR, ABI_MINOR, CFG_MAGIC, INIT_CFG, Feature, Manifest

from .guest_memory import GuestMemory
from .rings import ShellRing

RING_NAMES = ("tx", "txc", "fill", "rx")


@dataclass
class DataPath:
    cfg_addr: int
    guest: GuestMemory
    frames: int
    frame_size: int
    rings: dict[str, ShellRing]
    mtu: int = 1514
    record: object | None = None  # the IOMMU's frame record (nic_model.dma_record), with a VF

    @property
    def pool_base(self) -> int:
        """The frame pool's DMA address: the start of the guest's memory."""
        return self.guest.base

    def offer(self, box: Sandbox, features: int) -> None:
        """Rewrite the features the shell offers (the manifest's, intersected) before init."""
        box.region.set_u32(self.cfg_addr + INIT_CFG.offsets["features"], features)


def setup(box: Sandbox, manifest: Manifest | None = None, *, ring_size: int = 256, frames: int = 1024,
          frame_size: int = 2048, mtu: int = 1514, offer: Feature = Feature.INTR) -> DataPath:
    """Make the guest's memory and pool, reserve the four shell rings and the init config
    block, map the pool into the VF's window and write the block."""
    guest = GuestMemory(frames * frame_size)
    rings = {}
    for name in RING_NAMES:
        addr = box.heap.reserve(ShellRing.bytes_for(ring_size), 64)
        rings[name] = ShellRing(box.region, addr, ring_size) if addr else None
    cfg = box.heap.reserve(INIT_CFG.size, 64)
    if not (cfg and all(rings.values())):
        raise MemoryError("the region's DMA heap is too small for this data path")
    record = None
    if box.iommu is not None:  # frames are the only shell memory the VF reaches, one grant at a time
        box.iommu.attach(guest.base, guest.np)
        record = box.iommu.map_frames(guest.base, frame_size, frames)
    bar = box.bar
    vendor = getattr(bar, "PCI_VENDOR", manifest.devices[0].vendor if manifest else 0)
    device = getattr(bar, "PCI_DEVICE", manifest.devices[0].device if manifest else 0)
    box.region.write(cfg, INIT_CFG.pack(
        magic=CFG_MAGIC, abi_major=ABI_MAJOR, abi_minor=ABI_MINOR, cfg_size=INIT_CFG.size,
        features=int(offer) & (manifest.features if manifest else ~0), pci_vendor=vendor, pci_device=device,
        bar0_size=getattr(bar, "SIZE", 0), num_queues=1,
        num_vectors=getattr(bar, "NUM_VECTORS", 1), mtu=mtu, frame_size=frame_size,
        pool_base=guest.base & 0xFFFFFFFF, pool_base_hi=guest.base >> 32, pool_frames=frames,
        **{f"{n}_ring": r.addr for n, r in rings.items()},
        **{f"{n}_size": r.size for n, r in rings.items()}))
    return DataPath(cfg, guest, frames, frame_size, rings, mtu, record)
