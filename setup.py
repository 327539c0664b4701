"""Everything else is in pyproject.toml; this adds the data path's compiled kernels.

Each kernel is a plain Python module with an augmenting .pxd beside it. Cython (a build
requirement only) compiles it with bounds checks on; where the build finds no C compiler, the
extension is optional and the same .py runs, interpreted (`npa --version` says which).
"""
from pathlib import Path

from setuptools import Extension, setup

KERNELS = sorted(str(p.with_suffix(".py")) for top in ("nic_model", "runtime")
                 for p in Path(top).rglob("*.pxd"))  # as runtime/kernels.py finds them
DIRECTIVES = {"language_level": 3, "boundscheck": True, "wraparound": False,
              "initializedcheck": True, "cdivision": False, "binding": False}


def kernels() -> list[Extension]:
    try:
        from Cython.Build import cythonize
    except ImportError:  # built without the build requirements: interpreted
        return []
    # Cython finds a module's augmenting .pxd by the module's package path, which is the
    # checkout's (runtime.shell.claim); the installed name gets the `npa.` prefix afterwards.
    exts = [Extension(path[:-3].replace("/", "."), [path]) for path in KERNELS]
    built = cythonize(exts, compiler_directives=DIRECTIVES, quiet=True)
    for ext in built:
        ext.name = "npa." + ext.name
        ext.optional = True  # no C compiler: the .py runs instead
    return built


setup(ext_modules=kernels())
