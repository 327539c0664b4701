"""`--json PATH|-` for every command that reports: check the destination before any work, then
write one document (or print it on stdout, instead of the tables)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import typer


def option(schema: str, what: str, instead: str | None = "the table", lead: str = "Also write"):
    """The `--json PATH|-` option of a command that writes `what` as JSON of `schema`."""
    tail = f", instead of {instead}" if instead else ""
    return typer.Option(None, "--json", help=f"{lead} {what} as JSON (schema {schema}) to this "
                        f"file; '-': to stdout{tail}.")


def fail(message: str, code: int = 1) -> None:
    print(f"npa: error: {message}", file=sys.stderr)
    raise typer.Exit(code)


def check_dest(dest: str | None) -> None:
    """Refuse a --json path that cannot be written before any work is done."""
    if dest in (None, "-"):
        return
    p = Path(dest)
    if p.is_dir() or not p.parent.is_dir():
        fail(f"--json {dest}: " + ("a directory, not a file" if p.is_dir()
                                   else f"no directory {p.parent}"), 2)


def write(dest: str, data: dict) -> None:
    """The document, to a file or stdout; one error line if the path fails."""
    text = json.dumps(data, indent=2)
    if dest == "-":
        print(text)
        return
    try:
        Path(dest).write_text(text + "\n")
    except OSError as e:
        fail(f"--json {dest}: {e.strerror}", 2)
