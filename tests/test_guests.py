"""Real guests (`npa host --guest netns`): a Linux network stack behind every VM, reached through
the vendor's plugin. Each test runs `npa host` in the machine's own namespace (the guests'
namespaces are made there, where `ip netns exec` finds them), moves the host's uplink TAP into a
namespace of its own as the Linux endpoint, and uses only addresses inside those namespaces;
every namespace goes at the end, the host's with the host."""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from test_network import NEEDS, _can_make_namespaces, _wait_for, npa_cli, sh

MISSING = NEEDS + [t for t in ("iperf3", "curl") if shutil.which(t) is None]
pytestmark = pytest.mark.skipif(
    not os.path.exists("/dev/net/tun") or not _can_make_namespaces() or MISSING,
    reason="needs root allowed to make network namespaces, /dev/net/tun"
           + (f", and {', '.join(MISSING)}" if MISSING else ""))
_ids = itertools.count()
ENDPOINT, VM0, VM1 = "10.78.0.1", "10.78.0.2", "10.78.0.3"


@pytest.fixture
def guests(tmp_path):
    """Start `npa host --guest netns ARGS` and its endpoint namespace; yields a function that
    does so and returns (host process, endpoint namespace, name of vm i's namespace)."""
    made: list = []

    def start(*args: str):
        tag = f"g{os.getpid() % 10000}{next(_ids)}"
        ns = f"npa-{tag}-end"
        sh("ip", "netns", "add", ns).check_returncode()
        made.append(("ns", ns))
        control = tmp_path / f"{tag}.sock"
        p = subprocess.Popen([sys.executable, "-c", "from npa.cli import main; main()", "host",
                              "--uplink", f"tap:{tag}", "--name", tag, "--vms", "2",
                              "--ip", f"{VM0}/24", "--guest", "netns", "--control", str(control),
                              *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        made.append(("proc", p))
        r = npa_cli("stat", "--control", str(control), "--wait", "20", timeout=30)
        assert r.returncode == 0, r.stderr + (p.stderr.read() if p.poll() is not None else "")
        sh("ip", "link", "set", tag, "netns", ns).check_returncode()
        sh("ip", "addr", "add", f"{ENDPOINT}/24", "dev", tag, ns=ns).check_returncode()
        sh("ip", "link", "set", tag, "up", ns=ns).check_returncode()
        sh("ip", "link", "set", "lo", "up", ns=ns).check_returncode()
        return p, ns, lambda i: f"npa-{tag}-vm{i}", control

    yield start
    for kind, what in reversed(made):
        if kind == "proc" and what.poll() is None:
            what.send_signal(signal.SIGTERM)
            try:
                what.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                what.kill()
                what.communicate()
        elif kind == "ns":
            sh("ip", "netns", "del", what)
    left = [n for n in sh("ip", "netns", "list").stdout.split() if n.startswith("npa-g")]
    assert not left, f"namespaces left behind: {left}"


def stop(p: subprocess.Popen) -> tuple[int, str, str]:
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=30)
    return p.returncode, out, err


@pytest.mark.parametrize("nic", ["ixgbevf", "vmxnet3", "mlx5"])
def test_a_linux_guest_runs_iperf3_and_serves_a_file_through_each_plugin(guests, nic, tmp_path):
    host, ns, vm, _ = guests("--nic", nic)
    assert sh("ip", "-br", "addr", "show", "eth0", ns=vm(0)).stdout.split()[2] == f"{VM0}/24"
    r = sh("ping", "-c", "3", "-i", "0.1", "-W", "2", ENDPOINT, ns=vm(0))  # guest -> bridge
    assert " 3 received" in r.stdout, r.stdout + r.stderr
    r = sh("ping", "-c", "3", "-i", "0.1", "-W", "2", VM1, ns=vm(0))  # guest -> guest, in the switch
    assert " 3 received" in r.stdout, r.stdout + r.stderr

    server = subprocess.Popen(["ip", "netns", "exec", vm(0), "iperf3", "-s", "-1", "-J"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: "5201" in sh("ss", "-ltn", ns=vm(0)).stdout, "iperf3 listening")
        r = sh("iperf3", "-c", VM0, "-t", "3", "-J", ns=ns, timeout=60)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr
        end = json.loads(r.stdout)["end"]
        assert end["sum_received"]["bytes"] > 1_000_000, end["sum_received"]
    finally:
        server.kill()
        server.wait(timeout=10)

    blob = tmp_path / "blob.bin"
    blob.write_bytes(os.urandom(10 << 20))
    web = subprocess.Popen(["ip", "netns", "exec", vm(0), sys.executable, "-m", "http.server",
                            "--bind", VM0, "8080"], cwd=tmp_path,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: "8080" in sh("ss", "-ltn", ns=vm(0)).stdout, "http.server listening")
        got = subprocess.run(["ip", "netns", "exec", ns, "curl", "-sf", "--max-time", "60",
                              f"http://{VM0}:8080/blob.bin"], capture_output=True, timeout=90)
        assert got.returncode == 0, got.stderr
        assert hashlib.sha256(got.stdout).digest() == hashlib.sha256(blob.read_bytes()).digest()
    finally:
        web.kill()
        web.wait(timeout=10)
    code, out, err = stop(host)
    assert code == 0, err
    assert not any(n.startswith(vm(0)) for n in sh("ip", "netns", "list").stdout.split())


def _decisions(control, vm: str) -> list[str]:
    r = npa_cli("stat", "--control", str(control), "--json", "-")
    doc = json.loads(r.stdout)
    return next(v for v in doc["vms"] if v["name"] == vm)["guest"]["link_decisions"]


def _port(control, vm: int) -> dict:
    doc = json.loads(npa_cli("stat", "--control", str(control), "--json", "-").stdout)
    return next(p for p in doc["ports"] if p["name"] == f"vf{vm}")


def test_a_guest_mac_change_is_the_policys_to_decide(guests, tmp_path):
    """vm0's policy allows a second MAC, vm1's does not: vm0's change is taken (the switch
    follows, traffic flows), vm1's is refused (its frames are dropped as spoofed and counted),
    and vm1 is reachable again once its MAC is back."""
    policy = tmp_path / "policy.toml"
    policy.write_text('[vm.vm0]\nmacs = ["02:00:0a:4e:00:02", "02:00:00:00:00:aa"]\n')
    host, ns, vm, control = guests("--policy", str(policy))

    sh("ip", "link", "set", "eth0", "address", "02:00:00:00:00:aa", ns=vm(0)).check_returncode()
    _wait_for(lambda: any("MAC 02:00:00:00:00:aa: ok" in d for d in _decisions(control, "vm0")),
              "vm0's MAC change decided")
    r = sh("ping", "-c", "3", "-i", "0.1", "-W", "2", ENDPOINT, ns=vm(0))
    assert " 3 received" in r.stdout, r.stdout + r.stderr

    spoofed = _port(control, 1)["spoofed"]
    sh("ip", "link", "set", "eth0", "address", "02:00:00:00:00:bb", ns=vm(1)).check_returncode()
    _wait_for(lambda: any("MAC 02:00:00:00:00:bb: refused (vm.vm1.mac" in d
                          for d in _decisions(control, "vm1")), "vm1's MAC change refused")
    r = sh("ping", "-c", "3", "-i", "0.1", "-W", "1", ENDPOINT, ns=vm(1))
    assert " 0 received" in r.stdout, r.stdout
    assert _port(control, 1)["spoofed"] > spoofed  # its frames, dropped at the switch and counted

    sh("ip", "link", "set", "eth0", "address", "02:00:0a:4e:00:03", ns=vm(1)).check_returncode()
    try:
        _wait_for(lambda: any("MAC 02:00:0a:4e:00:03: ok" in d for d in _decisions(control, "vm1")),
                  "vm1's MAC back")
    except AssertionError:
        raise AssertionError(str(_decisions(control, "vm1")))
    r = sh("ping", "-c", "3", "-i", "0.1", "-W", "2", ENDPOINT, ns=vm(1))
    assert " 3 received" in r.stdout, r.stdout + r.stderr
    code, _, err = stop(host)
    assert code == 0, err
    assert "refused" in err  # the decision is logged as well
