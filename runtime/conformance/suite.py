"""Runs the conformance checks (pytest modules next to this file) on one image.

The checks are ordinary pytest tests, so `--junit` is pytest's own JUnit XML and `-k` is pytest's
own selection; this module only hands the target to them and collects one result per check.
"""
from __future__ import annotations

import os
import re
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from .abi_limits import ABI_LIMITS
from .rig import BASES, DEADLINE_S, FUEL, SUITE_BUDGET_S, Target, start_clock

HERE = Path(__file__).resolve().parent
GROUPS = ("static", "lifecycle", "datapath", "ownership", "interrupts", "faults", "budgets", "abi_use")
TARGET = pytest.StashKey[Target]()
LIMITS = {
    "fuel per export call": FUEL,
    "deadline per export call (s)": DEADLINE_S,
    "plugin bases": ", ".join(f"0x{b:x}" for b in BASES),
    "whole suite (s)": SUITE_BUDGET_S,
    **ABI_LIMITS,
}


@dataclass
class CheckResult:
    group: str
    name: str
    outcome: str  # passed | failed | skipped
    reason: str = ""
    rule: str = ""
    seconds: float = 0.0

    @property
    def check(self) -> str:
        return f"{self.group}::{self.name}"


@dataclass
class SuiteResult:
    image: str
    plugin: str
    nic: str | None
    nic_note: str
    checks: list[CheckResult] = field(default_factory=list)
    seconds: float = 0.0
    exit_code: int = 0  # pytest's

    def count(self, outcome: str) -> int:
        return sum(c.outcome == outcome for c in self.checks)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.count("failed") == 0 and bool(self.checks)

    def as_json(self) -> dict:
        return {"image": self.image, "plugin": self.plugin, "nic": self.nic, "nic_note": self.nic_note,
                "limits": LIMITS, "ok": self.ok, "seconds": round(self.seconds, 3),
                **{k: self.count(k) for k in ("passed", "failed", "skipped")},
                "checks": [{"check": c.check, **asdict(c)} for c in self.checks]}


_PREFIX = re.compile(r"^(?:[\w.]+(?:Error|Violation|Exception)|Failed|Skipped): ")


def _reason(report: pytest.TestReport) -> str:
    lr = report.longrepr
    if lr is None:
        return ""
    if isinstance(lr, tuple):  # a skip: (file, line, message)
        text = lr[2]
    elif getattr(lr, "reprcrash", None) is not None:
        text = lr.reprcrash.message
    else:
        text = str(lr)
    line = text.strip().splitlines()[0] if text.strip() else ""
    return _PREFIX.sub("", line)


class _Collector:
    """A pytest plugin: gives the checks their target and keeps one result per check."""

    def __init__(self, target: Target, progress: Callable[[int, int, CheckResult], None] | None):
        self.target, self.progress = target, progress
        self.results: dict[str, CheckResult] = {}
        self.rules: dict[str, str] = {}
        self.total = 0

    def pytest_configure(self, config: pytest.Config) -> None:
        config.stash[TARGET] = self.target

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.total = len(session.items)
        for item in session.items:
            doc = getattr(item.obj, "__doc__", None) or ""
            self.rules[item.nodeid] = " ".join(doc.split())

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:  # a broken suite, not a broken plugin: say so, never hide it
            self.results[report.nodeid] = CheckResult("suite", report.nodeid, "failed",
                                                      _reason(report) or "collection failed")

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        module, _, func = report.nodeid.partition("::")
        group = Path(module).stem.removeprefix("check_")
        res = self.results.setdefault(report.nodeid, CheckResult(
            group, func.removeprefix("test_"), "passed", rule=self.rules.get(report.nodeid, "")))
        res.seconds += report.duration
        if report.failed and res.outcome != "failed":
            res.outcome, res.reason = "failed", _reason(report)
        elif report.skipped and res.outcome == "passed":
            res.outcome, res.reason = "skipped", _reason(report)
        if report.when == "teardown" and self.progress is not None:
            self.progress(len([r for r in self.results.values() if r.group != "suite"]), self.total, res)


@contextmanager
def _hermetic():
    """Certify the same thing everywhere: the caller's PYTEST_ADDOPTS and installed pytest
    plugins do not reach the suite's pytest (nor do ini files: `-c` names an empty one)."""
    saved = {k: os.environ.get(k) for k in ("PYTEST_ADDOPTS", "PYTEST_PLUGINS",
                                              "PYTEST_DISABLE_PLUGIN_AUTOLOAD")}
    for k in ("PYTEST_ADDOPTS", "PYTEST_PLUGINS"):
        os.environ.pop(k, None)
    os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run(target: Target, *, junit: str | Path | None = None, select: str | None = None,
        progress: Callable[[int, int, CheckResult], None] | None = None,
        budget_s: float = SUITE_BUDGET_S) -> SuiteResult:
    """Run every check (or those matching `select`, a pytest -k expression) on `target`, in at
    most `budget_s` seconds (plus one export call's deadline): a check that runs out fails and
    says so."""
    collector = _Collector(target, progress)
    args = [str(HERE / f"check_{g}.py") for g in GROUPS]
    args += ["-c", os.devnull, "--rootdir", str(HERE), "-o", "python_files=check_*.py",
             "-o", "junit_suite_name=npa-conformance", "-o", "junit_family=xunit2",
             "-p", "no:cacheprovider", "-p", "no:terminal", "-p", "no:warnings",
             # wasmtime turns traps into signals it handles itself: pytest's faulthandler
             # would report them as crashes, and when it unregisters, unhook wasmtime's handler.
             "-p", "no:faulthandler", "--capture=no",
             # Pytest loads these files by path; in a checkout the package's directory is the
             # checkout itself, so its own module names would be wrong: the checks import their
             # rig absolutely, and pytest leaves sys.path alone.
             "--import-mode=importlib"]
    if junit is not None:
        args += ["--junitxml", str(junit)]
    if select:
        args += ["-k", select]
    t0 = time.perf_counter()
    start_clock(budget_s)
    with _hermetic():
        code = pytest.main(args, plugins=[collector])
    if code == pytest.ExitCode.INTERRUPTED:  # Ctrl-C: pytest caught it; the caller should see it
        raise KeyboardInterrupt
    m = target.report.manifest
    return SuiteResult(str(target.path), f"{m.name} {m.version}" if m else "?", target.model,
                       target.model_note, list(collector.results.values()),
                       time.perf_counter() - t0, int(code))
