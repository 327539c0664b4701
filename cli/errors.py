"""The error contract of every command: one `npa: error:` line, exit 2 when the input or the
usage was wrong, 1 for a negative verdict; and the checks that make a wrong input fail before
any work, naming the option and the path."""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import typer

USAGE, VERDICT = 2, 1


def fail(message: str, code: int = USAGE) -> None:
    """One line on stderr, then exit with `code` (a usage error unless told otherwise)."""
    print(f"npa: error: {message}", file=sys.stderr)
    raise typer.Exit(code)


def check_output(path: str | Path | None, option: str) -> None:
    """Refuse, before any work, an output file that could not be written: a directory, a missing
    directory, a read-only place. The probe opens the file for appending and removes it again if
    it did not exist, so nothing is left behind and no directory is ever created."""
    if path is None or str(path) == "-":
        return
    p = Path(path)
    _check_place(p, option, "a file")
    existed = p.exists()
    try:
        with open(p, "ab"):
            pass
    except OSError as e:
        fail(f"{option} {p}: {e.strerror}")
    if not existed:
        p.unlink(missing_ok=True)


def check_socket_path(path: str | None, option: str) -> None:
    """A Unix socket npa is to create: in a directory that exists, not over a file or a
    directory, and short enough for sun_path."""
    if path is None:
        return
    p = Path(path)
    _check_place(p, option, "a socket path")
    if len(str(p).encode()) > 107:
        fail(f"{option} {p}: longer than a Unix socket path may be (107 bytes)")
    if p.exists() and not p.is_socket():
        fail(f"{option} {p}: exists and is not a socket")


def _check_place(p: Path, option: str, noun: str) -> None:
    """The place of a file to be made: not a directory, and its directory exists."""
    if p.is_dir():
        fail(f"{option} {p}: a directory, not {noun}")
    if not p.parent.is_dir():
        fail(f"{option} {p}: no directory {p.parent}")


def check_output_dir(path: Path, option: str) -> None:
    """Refuse, before any work, a directory npa is to write into that is a file, that could not
    be created (its parent missing: npa creates the directory named, never its parents) or that
    is read-only."""
    if path.exists() and not path.is_dir():
        fail(f"{option} {path}: a file, not a directory")
    if not path.exists() and not path.parent.is_dir():
        fail(f"{option} {path}: no directory {path.parent}")
    probe = path if path.is_dir() else path.parent
    try:
        fd, name = tempfile.mkstemp(prefix=".npa-probe-", dir=probe)
    except OSError as e:
        fail(f"{option} {path}: {e.strerror}")
    os.close(fd)
    os.unlink(name)


def check_input(path: Path, what: str = "") -> Path:
    """A file npa is to read: it exists, is a file and can be read; else a usage error."""
    label = f"{what} {path}" if what else str(path)
    if not path.exists():
        fail(f"{label}: no such file")
    if path.is_dir():
        fail(f"{label}: a directory, not a file")
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        fail(f"{label}: {e.strerror}")
    return path
