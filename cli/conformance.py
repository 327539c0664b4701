"""`npa conformance`: run the ABI conformance suite on one image and report per check."""
from __future__ import annotations

from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from npa.runtime.conformance import LIMITS, CheckResult, SuiteResult, Target, run

from .jsonout import write as write_json
from .console import err, out, table

STYLE = {"passed": "[green]pass[/]", "failed": "[red]FAIL[/]", "skipped": "[yellow]skip[/]"}


def selection_error(select: str) -> str | None:
    """Why a -k expression is not one pytest accepts (checked before the suite runs, so pytest's
    own error lines never reach the user), or None."""
    try:  # pytest's own parser (its module is private: if it moves, pytest itself says no)
        from _pytest.mark.expression import Expression
    except ImportError:
        return None
    try:
        Expression.compile(select)
    except Exception as e:  # ParseError before pytest 9, SyntaxError since
        return f"not a -k expression: {e}"
    return None


def certify(image: Path, nic: str | None, junit: Path | None, json_out: str | None,
            select: str | None, quiet: bool) -> SuiteResult:
    target = Target.open(image, nic)
    if quiet or not err.is_terminal:
        result = run(target, junit=junit, select=select)
    else:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=err, transient=True) as bar:
            task = bar.add_task("checks", total=None)

            def advance(done: int, total: int, res: CheckResult) -> None:
                bar.update(task, completed=done, total=total, description=res.check)

            result = run(target, junit=junit, select=select, progress=advance)
    if json_out is not None:
        write_json(json_out, {"schema": "npa.conformance/1", **result.as_json()})
    if result.checks and json_out != "-":
        report(result)
    return result


def report(result: SuiteResult) -> None:
    t = table("check", "result", "reason", title=f"{result.image}: {result.plugin} on "
              f"{result.nic or 'no NIC model'}", title_justify="left")
    for c in result.checks:
        t.add_row(c.check, STYLE.get(c.outcome, c.outcome), c.reason)
    out.print(t)
    limits = "; ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}" for k, v in LIMITS.items())
    out.print(f"limits: {limits}; NIC model: {result.nic or '-'} ({result.nic_note})")
    verdict = "[green]conformant[/]" if result.ok else "[red]not conformant[/]"
    out.print(f"{verdict}: {result.count('passed')} passed, {result.count('failed')} failed, "
              f"{result.count('skipped')} skipped in {result.seconds:.1f} s")
