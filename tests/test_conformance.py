"""The conformance suite itself: every bundled plugin passes it; every broken fixture fails it
on the check that names the rule it breaks, and on no check a correct driver would pass."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from helpers import IXGBEVF, ROOT, build_broken, manifest, npa, wat_plugin
from npa.runtime.conformance import Target, run

BUNDLED = sorted((ROOT / "plugins-wasm").glob("*.wasm"))

# C fixtures: the real ixgbevf plugin plus one bug each (tests/fixtures/broken.c), and the
# checks each must fail. Every other check must pass or skip.
BROKEN_C = {
    "LOSES_FRAME_ON_QUIESCE": {"ownership::quiesce_returns_every_frame",
                               "ownership::unsent_frames_resent"},
    # Every check whose traffic wraps the rx ring: the shell takes received frames only in the
    # order the device wrote them (its record), so at the wrap this plugin's traffic stops.
    "REORDERS_AT_WRAP": {"datapath::bursts_1_to_256", "datapath::ring_wraparound",
                         "datapath::no_host_call_per_frame", "lifecycle::reset_then_init",
                         "lifecycle::reinjection", "faults::device_reset_under_traffic",
                         "faults::dma_fault", "budgets::log_off_the_fast_path"},
    # It dereferences a frame address to flip a byte. Frames live in the guest's memory above
    # 4 GiB (ABI 1.1), so the pointer it forms lands in its own linear memory: no frame is
    # touched and every check passes (tests/test_containment.py asserts the bytes).
    "CORRUPTS_BIG_FRAMES": set(),
    "IGNORES_BACKPRESSURE": {"datapath::backpressure"},
    "NEVER_REARMS": {"interrupts::interrupt_driven_traffic", "interrupts::intr_acks_and_reports_queues"},
    "TRAPS_ON_ZERO_BUDGET": {"budgets::poll_honours_budget"},
    # A ring that stays full (back-pressure, a dead device after a reset) makes it spin.
    "LOOPS_WHEN_FULL": {"datapath::backpressure", "budgets::fuel_per_call",
                        "faults::device_reset_under_traffic"},
    "LOGS_EVERY_FRAME": {"budgets::log_off_the_fast_path", "datapath::no_host_call_per_frame"},
    "IGNORES_NOMEM": {"lifecycle::init_without_dma_memory"},
    "SENT_MARKED_UNSENT": {"ownership::quiesce_returns_every_frame", "ownership::unsent_frames_resent"},
    "LEAVES_VECTORS_ON": {"interrupts::masked_vectors_raise_nothing"},
    # ABI misuse the runtime survives: the abi_use group names each.
    "GROWS_MEMORY": {"abi_use::no_memory_grow"},
    "ALLOCS_EVERY_POLL": {"abi_use::dma_memory_set_up_at_init"},
    "FREES_FOREIGN": {"abi_use::dma_free_only_what_it_allocated"},
    "HUGE_UDELAY": {"abi_use::udelay_is_short"},
    "POLL_LIES": {"abi_use::poll_reports_the_work_it_did"},
    "WRITES_OFF_DATAPATH": {"abi_use::registers_inside_the_data_path"},
    "WRITES_OFF_BAR": {"abi_use::registers_inside_the_data_path"},
    "CAUSE_STORM": {"abi_use::no_interrupts_without_work"},
}

# WAT fixtures: images the loader refuses, each for one static rule.
BROKEN_WAT = {
    "forbidden_import": (dict(imports=['(import "env" "memory" (memory 1))',
                                       '(import "shell" "set_mac" (func (param i32 i32)))']),
                         {"static::imports"}),
    "wrong_import_signature": (dict(imports=['(import "env" "memory" (memory 1))',
                                             '(import "shell" "mmio_read32" (func (param i64) (result i32)))']),
                               {"static::imports"}),
    "missing_export": (dict(exports={"npa_reset": None}), {"static::exports"}),
    "wrong_export_signature": (dict(exports={"npa_poll": "(param i32) (result i32) i32.const 0"}),
                               {"static::exports"}),
    "not_pic": (dict(pic=False), {"static::position_independent"}),
    "newer_abi": (dict(man=manifest(abi_minor=99, **IXGBEVF)), {"static::abi_version"}),
    "too_big_for_slot": (dict(memory_size=2 << 20), {"static::fits_limits"}),
}


@pytest.fixture(scope="module")
def broken_c(tmp_path_factory) -> dict[str, Path]:
    return build_broken(tmp_path_factory.mktemp("broken"), BROKEN_C)


def _failed(path: Path) -> tuple[set[str], dict[str, str]]:
    result = run(Target.open(path))
    failed = {c.check: c.reason for c in result.checks if c.outcome == "failed"}
    assert result.ok == (not failed)
    return set(failed), failed


@pytest.mark.parametrize("image", BUNDLED, ids=[p.stem for p in BUNDLED])
def test_bundled_plugin_is_conformant(image, tmp_path):
    junit, js = tmp_path / "junit.xml", tmp_path / "result.json"
    r = npa("conformance", str(image), "--junit", str(junit), "--json", str(js))
    assert r.returncode == 0, r.stdout + r.stderr
    data = json.loads(js.read_text())
    assert data["ok"] and data["failed"] == 0 and data["passed"] >= 18
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite.get("name") == "npa-conformance"
    assert int(suite.get("tests")) == len(data["checks"]) and int(suite.get("failures")) == 0
    assert "conformant" in r.stdout and "static::imports" in r.stdout


@pytest.mark.parametrize("bug", BROKEN_C)
def test_broken_c_plugin_fails_where_expected(bug, broken_c):
    failed, reasons = _failed(broken_c[bug])
    assert failed == BROKEN_C[bug], reasons


@pytest.mark.parametrize("name", BROKEN_WAT)
def test_refused_image_fails_its_static_rule_only(name, tmp_path):
    kw, expected = BROKEN_WAT[name]
    kw.setdefault("man", manifest(**IXGBEVF))
    path = tmp_path / f"{name}.wasm"
    path.write_bytes(wat_plugin(**kw))
    failed, reasons = _failed(path)
    assert failed == expected, reasons


def test_runs_on_an_image_outside_the_repository(tmp_path):
    image = tmp_path / "vendor.wasm"
    image.write_bytes((ROOT / "plugins-wasm" / "nullvf.wasm").read_bytes())
    r = npa("conformance", str(image), "-q", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "null (matched 1b36:00f0" in r.stdout
    assert not (tmp_path / ".pytest_cache").exists()


def test_not_wasm_fails_the_first_static_check_and_skips_the_rest(tmp_path):
    bad = tmp_path / "bad.wasm"
    bad.write_bytes(b"MZ\x90\x00 not a plugin")
    r = npa("conformance", str(bad), "--json", str(tmp_path / "r.json"))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    data = json.loads((tmp_path / "r.json").read_text())
    assert [c["check"] for c in data["checks"] if c["outcome"] == "failed"] == ["static::valid_wasm"]
    assert data["skipped"] == len(data["checks"]) - 1


@pytest.mark.parametrize("args, message", [
    (["/no/such.wasm"], "/no/such.wasm: no such file"),
    ([str(BUNDLED[0]), "--nic", "e1000"], "--nic e1000: unknown NIC model"),
    ([str(BUNDLED[0]), "-k", "no_check_is_called_this"], "no check matches"),
])
def test_usage_errors_are_one_line(args, message):
    r = npa("conformance", *args)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("npa: error:") and message in lines[0], r.stderr


def test_the_whole_suite_is_bounded_in_time_whatever_the_plugin_does(tmp_path):
    """A plugin whose every poll is slow (20,000 host calls) cannot make certification last: the
    suite stops at its budget and the checks that ran out say so."""
    import time
    slow = build_broken(tmp_path, ["SLOW_POLLS"])["SLOW_POLLS"]
    t0 = time.monotonic()
    result = run(Target.open(slow), budget_s=2.0)
    # it stops at the budget, not after its thousands of slow polls (minutes); the slack is for
    # a loaded machine, not a measurement
    assert time.monotonic() - t0 < 2.0 + 10
    out_of_time = [c for c in result.checks if "out of time" in c.reason]
    assert out_of_time and not result.ok


def test_certification_ignores_the_callers_pytest_setup(tmp_path):
    """PYTEST_ADDOPTS, a pytest.ini and a conftest.py beside the image change nothing."""
    (tmp_path / "pytest.ini").write_text("[pytest]\naddopts = -k static\n")
    (tmp_path / "conftest.py").write_text("raise SystemExit('not this conftest')\n")
    image = tmp_path / "ixgbevf.wasm"
    image.write_bytes((ROOT / "plugins-wasm" / "ixgbevf.wasm").read_bytes())
    env = {**os.environ, "PYTEST_ADDOPTS": "-k static -x", "PYTEST_PLUGINS": "no_such_plugin"}
    r = subprocess.run([sys.executable, "-c", "from npa.cli.main import main; main()", "conformance",
                        str(image), "--json", str(tmp_path / "r.json")], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert len(json.loads((tmp_path / "r.json").read_text())["checks"]) == 36


def test_interrupt_checks_skip_with_the_reason_when_the_manifest_claims_no_intr(tmp_path):
    import shutil

    from npa.cli import toolchain

    src = tmp_path / "nullvf"
    shutil.copytree(ROOT / "plugins-src" / "nullvf", src)
    toml = src / "plugin.toml"
    toml.write_text(toml.read_text().replace('features = ["intr"]', "features = []"))
    built = toolchain.build(src, tmp_path)
    r = npa("conformance", str(built.path), "--json", "-", "-q")
    assert r.returncode == 0, r.stderr
    checks = {c["check"]: c for c in json.loads(r.stdout)["checks"]}
    intr = [c for name, c in checks.items() if name.startswith("interrupts::")]
    assert len(intr) == 3 and all(c["outcome"] == "skipped" and 'features = ["intr"]' in c["reason"]
                                  for c in intr)
