"""Where the bundled plugin images and sources are: `plugins-wasm/` and `plugins-src/` beside the
package's parts, the checkout's top-level folders in a checkout and package data once installed."""
from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent


def bundled(name: str) -> Path:
    """`plugins-wasm` or `plugins-src`, wherever this npa has them."""
    return PACKAGE / name
