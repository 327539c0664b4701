"""npa installed from a wheel, used from a directory that is not this checkout: the bundled
images, example sources, headers and ABI.md come with the package."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from helpers import ROOT


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The wheel `pip wheel` builds from this checkout, unpacked into a target directory that
    stands first on the path (its dependencies come from this environment)."""
    tmp = tmp_path_factory.mktemp("wheel")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(tmp / "dist"), str(ROOT)], check=True,
                   capture_output=True, timeout=600)
    wheel = next((tmp / "dist").glob("npa-*.whl"))
    subprocess.run([*pip, "install", "--no-deps", "--target", str(tmp / "site"), str(wheel)],
                   check=True, capture_output=True, timeout=600)
    return tmp / "site"


def npa_from(site, cwd, *args):
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([sys.executable, "-c", "from npa.cli import main; main()", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_the_package_carries_images_sources_headers_and_the_reference(installed):
    for path in ("plugins-wasm/ixgbevf.wasm", "plugins-src/mlx5/mlx5.zig", "plugins-src/mlx5/plugin.toml",
                 "shell_api/include/npa_shell.h", "shell_api/include/npa_shell.zig", "shell_api/ABI.md"):
        assert (installed / "npa" / path).is_file(), path


def test_one_package_and_nothing_else_at_the_top(installed, tmp_path):
    top = {p.name for p in installed.iterdir()} - {"bin"}  # bin: pip --target's console scripts
    assert {n for n in top if not n.endswith(".dist-info")} == {"npa"}, top
    assert not (installed / "npa" / "tests").exists() and not (installed / "npa" / "benchmarks").exists()
    env = {**os.environ, "PYTHONPATH": str(installed)}
    for name in ("runtime", "cli", "nic_model", "shell_api"):
        r = subprocess.run([sys.executable, "-c", f"import {name}"], cwd=tmp_path, env=env,
                           capture_output=True, text=True)
        assert r.returncode == 1 and "ModuleNotFoundError" in r.stderr, name
    r = subprocess.run([sys.executable, "-m", "npa", "--version"], cwd=tmp_path, env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0 and "Shell API" in r.stdout, r.stderr


def test_every_command_works_from_anywhere(installed, tmp_path):
    check = subprocess.run([sys.executable, "-c", "import npa.cli; print(npa.cli.__file__)"], cwd=tmp_path,
                           env={**os.environ, "PYTHONPATH": str(installed)}, capture_output=True,
                           text=True)
    assert check.stdout.startswith(str(installed))  # not this checkout
    r = npa_from(installed, tmp_path, "run", "--packets", "1000", "-q")
    assert r.returncode == 0, r.stderr
    image = installed / "npa" / "plugins-wasm" / "mlx5.wasm"
    r = npa_from(installed, tmp_path, "conformance", "-q", str(image))
    assert r.returncode == 0, r.stdout + r.stderr
    r = npa_from(installed, tmp_path, "new", "acme", "--lang", "zig", "--nic", "vmxnet3")
    assert r.returncode == 0, r.stderr
    r = npa_from(installed, tmp_path, "build", "acme")
    assert r.returncode == 0 and (tmp_path / "plugins-wasm" / "acme.wasm").is_file(), r.stderr
    r = npa_from(installed, tmp_path, "--version")
    assert r.returncode == 0 and "Shell API 1.1" in r.stdout


def test_without_a_c_compiler_npa_installs_and_runs_interpreted(tmp_path):
    """The kernels are optional extensions: with no C compiler at install, the same .py runs,
    and `npa --version` says so."""
    import shutil

    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv", ".git", "build", "*.so", "*.c",
                                                             "__pycache__", "*.egg-info", ".hypothesis"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    env = {**os.environ, "CC": "/bin/false", "CXX": "/bin/false"}
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(tmp_path / "dist"), str(src)], check=True,
                   capture_output=True, timeout=600, env=env)
    wheel = next((tmp_path / "dist").glob("npa-*.whl"))
    subprocess.run([*pip, "install", "--no-deps", "--target", str(tmp_path / "site"), str(wheel)],
                   check=True, capture_output=True, timeout=600)
    assert not list((tmp_path / "site").rglob("*.so"))
    r = npa_from(tmp_path / "site", tmp_path, "--version")
    assert r.returncode == 0 and "data path interpreted (2 of 2 kernels" in r.stdout, r.stdout + r.stderr
    r = npa_from(tmp_path / "site", tmp_path, "run", "--packets", "2000", "-q")
    assert r.returncode == 0 and "clean:" in r.stdout, r.stdout + r.stderr
