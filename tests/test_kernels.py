"""The data path's compiled kernels against their own source run as Python: one implementation,
two ways of running it, the same answers on hostile inputs (hypothesis; `make fuzz` runs it long
and counts the inputs). Bounds checks stay on in the compiled form: an index past an array is an
IndexError, never a byte outside it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npa.nic_model import grants as compiled_grants
from npa.runtime.kernels import interpreted, kernels
from npa.runtime.shell import claim as compiled

from test_fuzz import COUNTS, FUZZ


PLAIN = interpreted(compiled)
PLAIN_GRANTS = interpreted(compiled_grants)
BASE = 1 << 32
EDGES = [0, 1, BASE - 1, BASE, 2**63 - 1, 2**63, 2**64 - 2048, 2**64 - 1]


def test_every_kernel_is_known_and_reported():
    status = kernels()
    assert set(status) == {"npa.runtime.shell.claim", "npa.nic_model.grants"}
    for mod in (compiled, compiled_grants):
        assert status[mod.__name__] == "interpreted" if mod.__file__.endswith(".py") else "compiled"


def _run(mod, state, slot, mark, base, size, nframes, addr, want, cons, outstanding):
    claim = mod.Claim(state.copy(), slot.copy(), mark.copy(), base, size, nframes)
    n = len(addr)
    idx, held, counts = np.empty(n, np.int64), np.empty(n, np.uint8), np.zeros(4, np.int64)
    kept = claim.run(addr, idx, held, want, cons, outstanding, counts)
    return kept, idx.tolist(), held.tolist(), counts.tolist()


@FUZZ
@given(nframes=st.sampled_from([1, 2, 7, 64, 512]), size=st.sampled_from([256, 2048, 2000]),
       seed=st.integers(0, 2**32 - 1), n=st.integers(0, 300), want=st.sampled_from([1, 2]),
       cons=st.integers(0, 2**32 - 1), outstanding=st.integers(0, 600))
def test_claim_compiled_and_interpreted_agree_on_hostile_entries(nframes, size, seed, n, want, cons,
                                                                 outstanding):
    rng = np.random.default_rng(seed)
    state = rng.integers(0, 4, nframes).astype(np.int8)
    slot = (cons + rng.integers(-700, 700, nframes)).astype(np.int64) & 0xFFFFFFFF
    mark = rng.integers(-5, 5, nframes).astype(np.int64)
    starts = BASE + rng.integers(0, nframes, n).astype(np.uint64) * np.uint64(size)
    pick = rng.integers(0, 4, n)
    addr = np.where(pick == 0, starts + rng.integers(0, 3, n).astype(np.uint64), starts)
    addr = np.where(pick == 1, rng.choice(np.array(EDGES, np.uint64), n), addr).astype(np.uint64)
    args = (state, slot, mark, BASE, size, nframes, addr, want, cons, outstanding)
    assert _run(compiled, *args) == _run(PLAIN, *args)
    COUNTS["kernels: claim, compiled vs interpreted"] += 1


@pytest.mark.parametrize("mod", [compiled, PLAIN], ids=["compiled", "interpreted"])
def test_claim_bounds_are_checked_even_when_the_caller_is_wrong(mod):
    """Arrays shorter than the pool the kernel was told of: an IndexError, not a stray write."""
    small = np.zeros(4, np.int8)
    claim = mod.Claim(small, np.zeros(4, np.int64), np.zeros(4, np.int64), BASE, 2048, 64)
    addr = np.array([BASE + 2048 * 40], np.uint64)  # frame 40 of 64: inside the pool, past the arrays
    with pytest.raises(IndexError):
        claim.run(addr, np.empty(1, np.int64), np.empty(1, np.uint8), 1, 0, 0, np.zeros(4, np.int64))


@pytest.mark.parametrize("mod", [compiled, compiled_grants], ids=["claim", "grants"])
def test_a_compiled_kernel_is_built_from_the_source_beside_it(mod):
    """Editing a kernel's .py or .pxd without reinstalling would run stale code: `make`
    reinstalls when they change; this says so if it did not."""
    so = Path(mod.__file__)
    if so.suffix == ".py":
        pytest.skip("interpreted here: nothing compiled to be stale")
    name = mod.__name__.rsplit(".", 1)[-1]
    for src in (so.with_name(name + ".py"), so.with_name(name + ".pxd")):
        assert so.stat().st_mtime >= src.stat().st_mtime, f"{so.name} is older than {src.name}: run make"


def _allowed(mod, grant, order, addr, lens, kind, frames, size):
    g = mod.Grants(grant.copy(), order.copy(), np.zeros(frames, np.int64), np.zeros(frames, np.int64),
                   BASE, size, frames)
    n = len(addr)
    idx, ok = np.empty(n, np.int64), np.empty(n, np.uint8)
    count = g.allowed(addr, lens, idx, ok, kind)
    return count, idx.tolist(), ok.tolist()


@FUZZ
@given(frames=st.sampled_from([1, 3, 64, 512]), size=st.sampled_from([256, 2048, 2000]),
       seed=st.integers(0, 2**32 - 1), n=st.integers(0, 300), kind=st.sampled_from([1, 2]),
       shape=st.sampled_from(["in order", "shuffled", "repeats", "hostile"]))
def test_grants_compiled_and_interpreted_agree_on_hostile_accesses(frames, size, seed, n, kind, shape):
    """Device accesses as a plugin's descriptors make them: in the guest's order, shuffled, a
    frame twice, or anywhere at all; the grants READ, WRITE, HOLD or none."""
    rng = np.random.default_rng(seed)
    grant = rng.choice(np.array([0, 1, 1, 1, 2, 3], np.int8), frames)
    order = rng.permutation(frames * 2)[:frames].astype(np.int64)
    by_order = np.argsort(order, kind="stable")
    pick = {"in order": by_order, "shuffled": rng.permutation(frames),
            "repeats": rng.integers(0, frames, frames), "hostile": rng.integers(0, frames, frames)}[shape]
    chosen = np.resize(pick, n).astype(np.uint64)
    addr = BASE + chosen * np.uint64(size)
    if shape == "hostile":
        edges = rng.choice(np.array(EDGES, np.uint64), n)
        addr = np.where(rng.random(n) < 0.3, edges, addr + rng.integers(0, 2, n).astype(np.uint64))
    lens = np.where(rng.random(n) < 0.9, rng.integers(0, size + 1, n),
                    rng.choice(np.array([-1, size + 1, 2**62]), n)).astype(np.int64)
    args = (grant, order, addr.astype(np.uint64), lens, kind, frames, size)
    assert _allowed(compiled_grants, *args) == _allowed(PLAIN_GRANTS, *args)
    COUNTS["kernels: grants, compiled vs interpreted"] += 1
