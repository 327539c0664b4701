"""The README's examples run as written."""
import os
import re
import subprocess
import sys

import pytest

from helpers import ROOT


def test_the_python_api_example_runs(tmp_path):
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Python API"):text.index("## Writing a plugin")]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    mode, sent, received = r.stdout.split()
    assert mode == "plugin" and int(sent) == 5_000 and int(received) == 5_000


def _network_examples() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"<!-- example: network -->\n```sh\n(.*?)```", text, re.S)


def _why_not_network() -> str | None:
    import shutil
    if os.geteuid() != 0:
        return "needs root (network namespaces, TAP devices)"
    if not os.path.exists("/dev/net/tun"):
        return "needs /dev/net/tun"
    missing = [t for t in ("ip", "ping", "tcpdump") if shutil.which(t) is None]
    return f"needs {', '.join(missing)} (make sysdeps installs them)" if missing else None


def test_the_readme_has_network_examples():
    assert len(_network_examples()) >= 2


@pytest.mark.parametrize("index", range(len(_network_examples())))
def test_a_network_example_runs_as_pasted(index, tmp_path):
    """Each marked shell block, as written, in bash -e with the venv's npa on PATH, in the
    namespaces it makes itself; whatever happens, its namespaces, processes and sockets go."""
    if why := _why_not_network():
        pytest.skip(why)
    block = _network_examples()[index]
    namespaces = re.findall(r"ip netns add (\S+)", block)
    # and the namespaces an `npa host --guest netns` of the block makes (npa-NAME-vmN)
    namespaces += sorted(set(re.findall(r"ip netns exec (npa-\S+)", block)))
    names = re.findall(r"--name (\S+)", block)
    sockets = re.findall(r"--control (\S+\.sock)", block)
    existing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    assert not set(namespaces) & set(existing), f"namespace {namespaces} exists already"
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    try:  # to files, not pipes: a background process left by a failing line cannot hold them
        with open(out, "w") as o, open(err, "w") as e:
            code = subprocess.run(["bash", "-e", "-c", block], cwd=tmp_path, env=env, stdout=o,
                                  stderr=e, timeout=180).returncode
    finally:
        for name in names:  # a host left running by a failed line, in the machine's namespace
            subprocess.run(["pkill", "-f", "--", f"--name {name} "], capture_output=True)
        for ns in namespaces:
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
            for pid in pids:
                subprocess.run(["kill", "-9", pid], capture_output=True)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        for sock in sockets:
            if os.path.exists(sock):
                os.unlink(sock)
    stdout, stderr = out.read_text(), err.read_text()
    assert code == 0, stdout[-3000:] + stderr[-3000:]
    assert "Traceback" not in stderr and "npa: error" not in stderr, stderr
    if "--guest netns" in block:  # iperf3 to a Linux guest, and a ping between two of them
        assert "iperf Done." in stdout and " 3 received" in stdout, stdout
    elif "npa migrate" in block:
        assert "vm0 runs on the destination" in stdout + stderr
        assert " 0% packet loss" in stdout, stdout  # the ping that ran through the move
    else:
        assert "5 received" in stdout and "ICMP echo reply" in stdout, stdout
