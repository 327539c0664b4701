"""Fixtures of the conformance suite: the image under test, and benches to run it on.

Checks that need a running plugin skip, naming the reason, when the image failed a static check
or no NIC model drives it: a plugin fails on the rule it breaks, not on everything after it.
"""
from __future__ import annotations

import pytest

from npa.runtime.sandbox import LoadError

from npa.runtime.conformance.rig import Rig, Target
from npa.runtime.conformance.suite import TARGET


@pytest.fixture(scope="session")
def target(request: pytest.FixtureRequest) -> Target:
    return request.config.stash[TARGET]


def not_runnable(target: Target) -> str | None:
    """Why the image cannot be run on the bench, or None."""
    rep = target.report
    if rep.error is not None:
        return f"not reached: the image fails the static '{rep.error.check}' check"
    if target.model is None:
        return f"not reached: {target.model_note}"
    if not target.drives_model:
        return f"not reached: the plugin does not drive {target.model} ({target.pci_id})"
    return None


@pytest.fixture
def make_rig(target: Target):
    """A factory of benches (each a fresh VM, VF and plugin instance), closed after the check."""
    if (why := not_runnable(target)) is not None:
        pytest.skip(why)
    made: list[Rig] = []

    def make(*, wire: bool = False, **kw) -> Rig:
        if wire and not target.wired:
            pytest.skip(f"the {target.model} model has no wire: frames never come back")
        try:
            rig = Rig(target, **kw)
        except LoadError as e:
            pytest.skip(f"not reached: {e}")
        made.append(rig)
        return rig

    yield make
    for rig in made:
        rig.close()


@pytest.fixture
def rig(make_rig) -> Rig:
    """A bench with the plugin initialised."""
    r = make_rig()
    r.attach()
    return r


@pytest.fixture
def wired(make_rig) -> Rig:
    """A bench with a wire (what the VF sends comes back to it), plugin initialised."""
    r = make_rig(wire=True)
    r.attach()
    return r
