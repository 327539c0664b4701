"""Where the bundled plugin images and sources are: the checkout's top-level folders when npa
runs from one, else the copies `pip install` put inside the package (setup.py's build step)."""
from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent


def bundled(name: str) -> Path:
    """`plugins-wasm` or `plugins-src`, wherever this npa has them."""
    checkout = _HERE.parent / name
    return checkout if checkout.is_dir() else _HERE / "bundled" / name
