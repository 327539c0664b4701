"""The README's examples run as written."""
import os
import re
import subprocess
import sys

from helpers import ROOT


def test_the_python_api_example_runs(tmp_path):
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Python API"):text.index("## Writing a plugin")]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                       timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    mode, sent, received = r.stdout.split()
    assert mode == "plugin" and int(sent) == 5_000 and int(received) == 5_000
