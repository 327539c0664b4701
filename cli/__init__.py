"""The `npa` command."""
import sys


def main() -> None:
    """The console script: the command's modules are imported inside the interrupt handler, so
    Ctrl-C at any moment is one line and exit status 130."""
    try:
        from .main import main as run
        run()
    except KeyboardInterrupt:
        print("npa: error: interrupted", file=sys.stderr)
        sys.exit(130)
