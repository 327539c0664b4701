"""Everything is in pyproject.toml; this only copies the bundled plugin images and sources
(top-level folders, not packages) into the package, so an installed npa has them."""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

BUNDLED = ("plugins-wasm", "plugins-src")


class BuildWithBundled(build_py):
    def run(self):
        super().run()
        here = Path(__file__).resolve().parent
        for name in BUNDLED:
            dest = Path(self.build_lib) / "cli" / "bundled" / name
            if dest.exists():
                shutil.rmtree(dest)
            shutil.copytree(here / name, dest, ignore=shutil.ignore_patterns("__pycache__"))


setup(cmdclass={"build_py": BuildWithBundled})
