"""Errors that reach a user: each is one line saying what and where."""


class NpaError(Exception):
    """Base of every error the CLI prints as one line and exit status 1."""


class LoadError(NpaError):
    """The loader refused an image; `check` names the check that failed."""

    def __init__(self, check: str, message: str):
        super().__init__(message)
        self.check = check


class PluginFault(NpaError):
    """A call into a plugin trapped, ran out of fuel, missed its deadline, or misbehaved."""

    def __init__(self, export: str, reason: str, code=None):
        super().__init__(f"{export}: {reason}")
        self.export, self.reason, self.code = export, reason, code


def cause(e: Exception) -> str:
    """The last line of a wasmtime message: it leads with context and backtraces, ends with why."""
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return lines[-1] if lines else type(e).__name__
