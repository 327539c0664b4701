"""`--json PATH|-` for every command that reports: check the destination before any work, then
write one document (or print it on stdout, instead of the tables)."""
from __future__ import annotations

import json
from pathlib import Path

import typer

from .errors import check_output, fail


def option(schema: str, what: str, instead: str | None = "the table", lead: str = "Also write"):
    """The `--json PATH|-` option of a command that writes `what` as JSON of `schema`."""
    tail = f", instead of {instead}" if instead else ""
    return typer.Option(None, "--json", help=f"{lead} {what} as JSON (schema {schema}) to this "
                        f"file; '-': to stdout{tail}.")


def check_dest(dest: str | None) -> None:
    """Refuse a --json path that cannot be written before any work is done."""
    check_output(dest, "--json")


def write(dest: str, data: dict) -> None:
    """The document, to a file or stdout; one error line if the path fails."""
    text = json.dumps(data, indent=2)
    if dest == "-":
        print(text)
        return
    try:
        Path(dest).write_text(text + "\n")
    except OSError as e:
        fail(f"--json {dest}: {e.strerror}")
