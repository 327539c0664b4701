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

from test_network import NEEDS, _can_make_namespaces, _wait_for, npa_cli, sh, stop

MISSING = NEEDS + [t for t in ("iperf3", "curl") if shutil.which(t) is None]
pytestmark = pytest.mark.skipif(
    not os.path.exists("/dev/net/tun") or not _can_make_namespaces() or MISSING,
    reason="needs root allowed to make network namespaces, /dev/net/tun"
           + (f", and {', '.join(MISSING)}" if MISSING else ""))
_ids = itertools.count()
ENDPOINT, VM0, VM1 = "10.78.0.1", "10.78.0.2", "10.78.0.3"
# iperf3's client and server, the kernels' TCP and npa share this machine's cores here, so the
# wall time a plugin's call takes measures that contention more than the plugin: the budgets
# that fault a plugin by wall time (tested in test_containment) are set out of the way.
LAB_DEFAULTS = "[defaults]\nwall_us_per_step = 1000000\ncall_budget_ms = 1000\nwatchdog_us = 1000000\n"


class Lab:
    """Hosts in the machine's namespace and one endpoint namespace (`self.ns`, a bridge br0 at
    ENDPOINT/24 with every host's uplink TAP on it); `close()` stops the hosts and removes every
    namespace the test or its hosts made, whatever state a failure left them in."""

    def __init__(self, tmp_path):
        self.tmp, self.tag = tmp_path, f"g{os.getpid() % 10000}{next(_ids)}"
        self.ns, self.procs = f"npa-{self.tag}-end", []
        sh("ip", "netns", "add", self.ns).check_returncode()
        sh("ip", "link", "set", "lo", "up", ns=self.ns).check_returncode()
        sh("ip", "link", "add", "br0", "type", "bridge", ns=self.ns).check_returncode()
        sh("ip", "addr", "add", f"{ENDPOINT}/24", "dev", "br0", ns=self.ns).check_returncode()
        sh("ip", "link", "set", "br0", "up", ns=self.ns).check_returncode()

    def host(self, *args: str, guest: str = "netns") -> tuple[subprocess.Popen, str, callable]:
        """`npa host --guest netns ARGS`, up and on the bridge: (process, control socket, the
        namespace name of its vm i)."""
        name = f"{self.tag}{len(self.procs)}"
        control = str(self.tmp / f"{name}.sock")
        if "--policy" not in args:
            policy = self.tmp / f"{name}.toml"
            policy.write_text(LAB_DEFAULTS)
            args = (*args, "--policy", str(policy))
        p = subprocess.Popen([sys.executable, "-c", "from npa.cli import main; main()", "host",
                              "--uplink", f"tap:{name}", "--name", name, "--guest", guest,
                              "--control", control, *args],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.procs.append(p)
        r = npa_cli("stat", "--control", control, "--wait", "20", timeout=30)
        assert r.returncode == 0, r.stderr + (p.stderr.read() if p.poll() is not None else "")
        sh("ip", "link", "set", name, "netns", self.ns).check_returncode()
        sh("ip", "link", "set", name, "master", "br0", ns=self.ns).check_returncode()
        sh("ip", "link", "set", name, "up", ns=self.ns).check_returncode()
        return p, control, lambda i: f"npa-{name}-vm{i}"

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    _, err = p.communicate(timeout=30)
                    print("host stderr:", err[-3000:])  # shown when the test failed
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.communicate()
        for n in sh("ip", "netns", "list").stdout.split():
            if n.startswith(f"npa-{self.tag}"):
                for pid in sh("ip", "netns", "pids", n).stdout.split():
                    subprocess.run(["kill", "-9", pid], capture_output=True)
                sh("ip", "netns", "del", n)


@pytest.fixture
def lab(tmp_path):
    made = Lab(tmp_path)
    yield made
    made.close()
    left = [n for n in sh("ip", "netns", "list").stdout.split() if n.startswith(f"npa-{made.tag}")]
    assert not left, f"namespaces left behind: {left}"


@pytest.fixture
def guests(lab):
    """A host with two Linux guests: (process, endpoint namespace, vm i's namespace, control)."""
    def start(*args: str):
        p, control, vm = lab.host("--vms", "2", "--ip", f"{VM0}/24", *args)
        return p, lab.ns, vm, control
    return start


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


def test_a_tap_guest_is_the_users_to_configure(lab):
    """--guest tap: the VM's TAP in the host's namespace with the VM's MAC and MTU, for the user
    to set up; put in a namespace and addressed, it reaches the endpoint through the plugin, and
    it goes with the host."""
    host, _, _ = lab.host("--vms", "1", "--ip", f"{VM0}/24", guest="tap")
    name = f"{lab.tag}0-vm0"
    link = sh("ip", "-br", "link", "show", name).stdout.split()
    assert link[2] == "02:00:0a:4e:00:02", link  # the VM's MAC, from its address
    mine = f"npa-{lab.tag}-mine"
    sh("ip", "netns", "add", mine).check_returncode()
    sh("ip", "link", "set", name, "netns", mine).check_returncode()
    sh("ip", "addr", "add", f"{VM0}/24", "dev", name, ns=mine).check_returncode()
    sh("ip", "link", "set", name, "up", ns=mine).check_returncode()
    r = sh("ping", "-c", "3", "-i", "0.1", "-W", "2", ENDPOINT, ns=mine)
    assert " 3 received" in r.stdout, r.stdout + r.stderr
    code, _, err = stop(host)
    assert code == 0, err
    assert name not in sh("ip", "-br", "link", ns=mine).stdout  # the device went with the host


def _stat(control) -> dict:
    """What `npa stat --json -` says of the host at `control`."""
    return json.loads(npa_cli("stat", "--control", str(control), "--json", "-").stdout)


def _decisions(control, vm: str) -> list[str]:
    return next(v for v in _stat(control)["vms"] if v["name"] == vm)["guest"]["link_decisions"]


def _port(control, vm: int) -> dict:
    return next(p for p in _stat(control)["ports"] if p["name"] == f"vf{vm}")


def test_a_guest_mac_change_is_the_policys_to_decide(guests, tmp_path):
    """vm0's policy allows a second MAC, vm1's does not: vm0's change is taken (the switch
    follows, traffic flows), vm1's is refused (its frames are dropped as spoofed and counted),
    and vm1 is reachable again once its MAC is back."""
    policy = tmp_path / "policy.toml"
    policy.write_text(LAB_DEFAULTS + '[vm.vm0]\nmacs = ["02:00:0a:4e:00:02", "02:00:00:00:00:aa"]\n')
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


TCP_SINK = r"""
import socket, sys
import numpy as np
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind((sys.argv[1], 5001))
ls.listen(1)
ls.settimeout(30)
c, _ = ls.accept()
c.settimeout(30)
n = bad = 0
while (d := c.recv(1 << 16)):
    a = np.frombuffer(d, np.uint8)
    bad += int(np.count_nonzero(a != ((np.arange(len(a)) + n) & 255).astype(np.uint8)))
    n += len(d)
c.sendall(b"k")
print(n, bad)
"""
TCP_SOURCE = r"""
import socket, sys, time
s = socket.create_connection((sys.argv[1], 5001), timeout=30)
pattern, n = bytes(range(256)) * 256, 0
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    s.sendall(pattern)
    n += len(pattern)
s.shutdown(socket.SHUT_WR)
assert s.recv(1) == b"k"
retrans = open("/proc/net/snmp").read().split("Tcp:")[2].split()[11]
print(n, retrans)
"""


def test_a_tcp_stream_survives_moves_to_another_vendors_nic_and_back(lab):
    """A TCP connection from a Linux guest to the endpoint, carrying a counting byte pattern,
    while `npa migrate` moves the guest ixgbevf -> mlx5 -> ixgbevf (its TAP handed over each
    time): no reset, every byte once and in order."""
    _, a, vm = lab.host("--nic", "ixgbevf", "--vms", "1", "--ip", f"{VM0}/24")
    _, b, _ = lab.host("--nic", "mlx5", "--vms", "0")
    sink = subprocess.Popen(["ip", "netns", "exec", lab.ns, sys.executable, "-c", TCP_SINK, ENDPOINT],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: "5001" in sh("ss", "-ltn", ns=lab.ns).stdout, "the sink listening")
        source = subprocess.Popen(["ip", "netns", "exec", vm(0), sys.executable, "-c", TCP_SOURCE,
                                   ENDPOINT, "6"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
        time.sleep(1.5)
        for there, back in ((a, b), (b, a)):
            r = npa_cli("migrate", "vm0", "--from", there, "--to", back, "--json", "-", timeout=60)
            assert r.returncode == 0, r.stderr
            assert json.loads(r.stdout)["outcome"] == "moved"
            if back == b:  # the new host's VF has the guest's groups: neighbour discovery works
                r = sh("ping", "-6", "-c", "2", "-i", "0.2", "-W", "2", "fe80::aff:fe4e:2%br0", ns=lab.ns)
                assert " 2 received" in r.stdout, r.stdout + r.stderr
            time.sleep(1)
        out, err = source.communicate(timeout=60)
        assert source.returncode == 0, err  # no reset, no timeout
        sent, retrans = map(int, out.split())
        got, bad = map(int, sink.communicate(timeout=30)[0].split())
    finally:
        for p in (sink, locals().get("source")):
            if p is not None and p.poll() is None:
                p.kill()
                p.communicate()
    assert got == sent > 10_000_000 and bad == 0, (got, sent, bad)
    print(f"{sent} bytes across two moves, {retrans} segments retransmitted")


def test_a_guest_that_deletes_its_device_costs_only_itself(guests):
    """The guest kernel deletes the TAP under the host (`ip link del eth0`): the host goes on
    (nothing raised out of its loop, not spinning on the dead descriptor), the other VM keeps
    its connectivity, and `npa stat` says what happened to the first."""
    host, ns, vm, control = guests()
    sh("ip", "link", "del", "eth0", ns=vm(0)).check_returncode()
    r = sh("ping", "-c", "3", "-i", "0.1", "-W", "2", ENDPOINT, ns=vm(1))
    assert " 3 received" in r.stdout, r.stdout + r.stderr + sh("ip", "addr", ns=vm(1)).stdout
    g = _stat(control)["vms"][0]["guest"]
    assert g["tap_error"] and g["link_unwatched"] == 1, g
    code, _, err = stop(host)
    assert code == 0 and "Traceback" not in err, err


def test_ipv6_works_between_linux_guests_once_their_groups_are_joined(guests):
    """Neighbour discovery goes to multicast groups the switch delivers only to VFs that joined:
    the groups each guest kernel joined become its multicast requests, the policy allows them,
    and a ping over IPv6 link-local addresses goes through."""
    host, ns, vm, control = guests()
    for i in (0, 1):
        _wait_for(lambda: "tentative" not in sh("ip", "-6", "addr", "show", "eth0", ns=vm(i)).stdout
                  and "fe80::" in sh("ip", "-6", "addr", "show", "eth0", ns=vm(i)).stdout,
                  f"vm{i}'s link-local address")
    _wait_for(lambda: any("multicast groups" in d and d.endswith(": ok")
                          for d in _decisions(control, "vm1")), "vm1's groups joined")
    r = sh("ping", "-6", "-c", "3", "-i", "0.1", "-W", "2", "fe80::aff:fe4e:3%eth0", ns=vm(0))
    assert " 3 received" in r.stdout, r.stdout + r.stderr
    code, _, err = stop(host)
    assert code == 0, err
