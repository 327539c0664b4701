"""The Shell API: the one source of truth for the contract between a shell and a plugin.

Everything a plugin author sees (the C header, the ABI reference) is generated from this package
by `python -m npa.shell_api.gen`; a test fails when the generated files drift.
"""
from .abi import (ABI_MAJOR, ABI_MINOR, EXPORTS, GUEST_MEMORY_BASE, IMPORT_MODULE, IMPORTS,
                  OPTIONAL_EXPORTS, PIC_IMPORTS, FuncSpec, abi_compatible)
from .features import Feature
from .layout import CFG_MAGIC, DESC_FLAGS, INIT_CFG, RING_DESC, RING_HDR, Layout
from .limits import LIMIT, LIMITS, Limit
from .status import Status

_MANIFEST = ("MANIFEST_SECTION", "Manifest", "ManifestError", "PluginToml")


def __getattr__(name: str):
    """The manifest's names load pydantic: imported on first use, so `npa --version` need not."""
    if name in _MANIFEST:
        from . import manifest
        return getattr(manifest, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ABI_MAJOR", "ABI_MINOR", "EXPORTS", "IMPORTS", "IMPORT_MODULE", "OPTIONAL_EXPORTS",
    "PIC_IMPORTS", "FuncSpec", "abi_compatible", "Feature", "DESC_FLAGS", "INIT_CFG", "RING_DESC",
    "RING_HDR", "CFG_MAGIC", "Layout", "MANIFEST_SECTION", "Manifest", "ManifestError",
    "PluginToml", "Status", "GUEST_MEMORY_BASE", "LIMIT", "LIMITS", "Limit",
]
