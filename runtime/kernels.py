"""The data path's compiled kernels: each a plain Python module with an augmenting .pxd beside
it, compiled by Cython at install where a C compiler is (setup.py), run as Python elsewhere.
This says which run compiled without importing them (`npa --version` stays quick)."""
from __future__ import annotations

import importlib.util
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent  # npa's directory


def kernels() -> dict[str, str]:
    """{module name: "compiled" or "interpreted"} for every kernel (a .py with a .pxd)."""
    out = {}
    for pxd in sorted(p for top in ("nic_model", "runtime") for p in (PACKAGE / top).rglob("*.pxd")):
        name = "npa." + ".".join(pxd.relative_to(PACKAGE).with_suffix("").parts)
        built = any(pxd.with_suffix(suffix).exists() for suffix in EXTENSION_SUFFIXES)
        out[name] = "compiled" if built else "interpreted"
    return out


def summary() -> str:
    """One line: how the data path's kernels run here."""
    k = kernels()
    n = sum(v == "compiled" for v in k.values())
    if n == len(k):
        return f"compiled ({n} kernel{'s' * (n != 1)}, Cython, bounds-checked)"
    return (f"interpreted ({len(k) - n} of {len(k)} kernels: no C compiler when npa was "
            "installed; the same source runs as Python, slowly)")


def interpreted(module):
    """A kernel's .py source run as plain Python, whatever was compiled: the baseline of
    `npa bench kernels` and the other side of the tests' compiled-vs-interpreted comparison."""
    name = module.__name__.rsplit(".", 1)[-1]
    spec = importlib.util.spec_from_file_location(f"{module.__name__}_interpreted",
                                                  Path(module.__file__).with_name(name + ".py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
