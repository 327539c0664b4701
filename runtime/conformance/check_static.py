"""Static checks: what the loader verifies before anything runs, one rule per check.

The loader stops at the first rule an image breaks; a later rule is then "not reached" (skipped),
so a broken image fails exactly the check that names its fault.
"""
from __future__ import annotations

import pytest

from npa.runtime.sandbox import CHECKS, MAX_IMAGE_BYTES, LoadError, RegionPlan, place

from npa.runtime.conformance.rig import BASES


def loader_verdict(target, check: str) -> None:
    """Fail with the loader's message if it refused the image on `check`; skip if it stopped
    on an earlier one."""
    err = target.report.error
    if err is None:
        return
    if err.check == check:
        pytest.fail(str(err), pytrace=False)
    if err.check in CHECKS and CHECKS.index(err.check) < CHECKS.index(check):
        pytest.skip(f"not reached: the image fails the '{err.check}' check")


def test_valid_wasm(target):
    """The image is a valid WebAssembly module of at most the loader's size limit."""
    loader_verdict(target, "wasm")


def test_manifest(target):
    """An `npa.manifest` custom section is present and valid against the manifest schema."""
    loader_verdict(target, "manifest")


def test_abi_version(target):
    """The manifest's ABI major equals the runtime's and its minor is not newer."""
    loader_verdict(target, "abi")


def test_imports(target):
    """Imports come only from the Shell API (module `shell`), each with its exact signature,
    plus the env imports of a position-independent module."""
    loader_verdict(target, "imports")


def test_exports(target):
    """Every required `npa_*` export is present with its exact signature; no unknown `npa_*`."""
    loader_verdict(target, "exports")


def test_position_independent(target):
    """The image has a `dylink.0` section, needs no shared library and imports its memory."""
    loader_verdict(target, "pic")


def test_fits_limits(target):
    """The image, its data and its stack fit the hypervisor's plugin slot at every base the
    suite uses, and the image is within the size limit."""
    rep = target.report
    if rep.error is not None:
        pytest.skip(f"not reached: the image fails the '{rep.error.check}' check")
    assert rep.size <= MAX_IMAGE_BYTES, f"image is {rep.size} bytes; the limit is {MAX_IMAGE_BYTES}"
    for base in BASES:
        plan = RegionPlan().at(base)
        try:
            place(rep, base, plan.plugin_slot, plan.stack_size, plan.size)
        except LoadError as e:
            pytest.fail(str(e), pytrace=False)


def test_drives_nic_model(target):
    """The manifest lists the PCI vendor:device ids of the NIC model the suite runs it on
    (the hypervisor never loads a plugin on a VF whose ids it does not list)."""
    m = target.report.manifest
    if m is None:
        pytest.skip("not reached: no manifest")
    assert target.model is not None, target.model_note
    ids = ", ".join(sorted(str(d) for d in m.devices))
    assert target.drives_model, f"the manifest lists {ids}, not {target.model}'s {target.pci_id}"
