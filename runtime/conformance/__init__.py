"""The ABI conformance suite: certifies a plugin image against the Shell API.

`run(Target.open(path))` runs every check (pytest modules `check_*.py` here) on the NIC model the
plugin's manifest names, on a bench where the plugin's traffic comes back to it (`rig.py`).
"""
from .rig import MODELS, Rig, Target, Violation
from .suite import GROUPS, LIMITS, CheckResult, SuiteResult, run

__all__ = ["GROUPS", "LIMITS", "MODELS", "CheckResult", "Rig", "SuiteResult", "Target", "Violation", "run"]
