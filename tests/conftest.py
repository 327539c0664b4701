import atexit
import os
import shutil
import tempfile

# Keep compiled-module caches of test runs out of the user's cache, and gone afterwards.
if "NPA_CACHE_DIR" not in os.environ:
    os.environ["NPA_CACHE_DIR"] = tempfile.mkdtemp(prefix="npa-test-cache-")
    atexit.register(shutil.rmtree, os.environ["NPA_CACHE_DIR"], ignore_errors=True)


def pytest_terminal_summary(terminalreporter):
    """`make fuzz`: the inputs tried per trust boundary (tests/test_fuzz.py)."""
    import sys
    fuzz = sys.modules.get("test_fuzz")
    if fuzz is None or not fuzz.COUNTS or not os.environ.get("NPA_FUZZ_EXAMPLES"):
        return
    failed = len(terminalreporter.stats.get("failed", []))
    terminalreporter.write_line("")
    terminalreporter.write_line(f"{'boundary':44} {'inputs':>9}")
    for name, n in sorted(fuzz.COUNTS.items()):
        terminalreporter.write_line(f"{name:44} {n:>9,}")
    terminalreporter.write_line(f"{'total':44} {sum(fuzz.COUNTS.values()):>9,}")
    terminalreporter.write_line(f"exceptions, writes outside a window, frames owned twice: "
                                f"{'see the failures above' if failed else '0'}")
