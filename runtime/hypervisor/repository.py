"""The hypervisor's plugin repository: a directory of images, one chosen per VF by PCI ids.

Only manifests are read (no compilation), so scanning is cheap. A VF gets the one image whose
manifest lists its vendor:device ids; none, or more than one, is an error that names them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from npa.runtime.sandbox import LoadError, NpaError, read_manifest
from npa.shell_api import Manifest


@dataclass(frozen=True)
class Entry:
    path: Path
    manifest: Manifest

    @property
    def devices(self) -> list[str]:
        return [str(d) for d in self.manifest.devices]


class Repository:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise NpaError(f"plugin repository {self.root}: not a directory")
        self.entries: list[Entry] = []
        self.unreadable: dict[Path, str] = {}
        for path in sorted(self.root.glob("*.wasm")):
            try:
                self.entries.append(Entry(path, read_manifest(path.read_bytes())))
            except (OSError, LoadError) as e:
                self.unreadable[path] = str(e)

    def select(self, pci_id: str, what: str = "") -> Entry:
        """The image that drives `pci_id`; NpaError when none or several do."""
        match = [e for e in self.entries if pci_id in e.devices]
        vf = f"{pci_id}" + (f" ({what})" if what else "")
        if len(match) == 1:
            return match[0]
        if not match:
            held = ", ".join(f"{e.path.name} ({' '.join(e.devices)})" for e in self.entries) or "no image"
            raise NpaError(f"no plugin in {self.root} drives {vf}; it holds {held}")
        raise NpaError(f"{len(match)} plugins in {self.root} drive {vf}: "
                       f"{', '.join(e.path.name for e in match)}; remove all but one or name the image")


def image_for(root: str | Path, model) -> Path:
    """The image the hypervisor injects for a VF of `model` (a VF model class)."""
    from npa.nic_model.vf import pci_id

    return Repository(root).select(pci_id(model), model.MODEL).path
