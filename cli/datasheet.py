"""`npa datasheet MODEL`: a NIC model's documentation as a vendor writes a driver from it, whole:
its registers, formats, errors and reset (the model's own text), then every descriptor, entry and
block layout the device reads or writes, field by field with offsets (pydoc abbreviates them)."""
from __future__ import annotations

import numpy as np

from .console import out, table


def layouts(module) -> list[tuple[str, np.dtype]]:
    """The structured dtypes a model module defines: its in-memory formats, by name."""
    return [(name, value) for name, value in vars(module).items()
            if isinstance(value, np.dtype) and value.names and not name.startswith("_")]


def _type(dt: np.dtype) -> str:
    base = dt.base if dt.subdtype else dt
    kind = {"u": "u", "i": "s", "f": "f"}.get(base.kind, base.kind)
    order = "" if base.itemsize == 1 else (" be" if base.byteorder == ">" else " le")
    shape = f"[{']['.join(map(str, dt.shape))}]" if dt.subdtype else ""
    return f"{kind}{base.itemsize * 8}{order}{shape}"


def show(model_class) -> None:
    import importlib
    module = importlib.import_module(model_class.__module__)
    out.print(f"[bold]{model_class.MODEL}[/bold]: {model_class.DESCRIPTION}\n", highlight=False)
    out.print((module.__doc__ or "").strip(), markup=False, highlight=False)
    for name, dt in layouts(module):
        t = table("offset", "field", "type", "bytes", title=f"{name} ({dt.itemsize} bytes)")
        for field in dt.names:
            sub, offset = dt.fields[field][:2]
            t.add_row(f"0x{offset:02x}", field, _type(sub), str(sub.itemsize))
        out.print()
        out.print(t)
