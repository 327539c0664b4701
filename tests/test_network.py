"""`npa host` on real Linux networking: each test makes its own network namespace, runs the host
process there on a TAP device (or two hosts on a UDP segment), and talks to the VMs with Linux's
own ping, a UDP socket and tcpdump. Only addresses inside the namespaces the tests create are
used; every loop is bounded; namespaces and processes are removed afterwards.

Needs root, /dev/net/tun, iproute2, ping and tcpdump (the Makefile installs the last three);
skipped with the reason elsewhere.
"""
from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dpkt
import pytest

from helpers import ROOT

NEEDS = [t for t in ("ip", "ping", "tcpdump") if shutil.which(t) is None]


def _can_make_namespaces() -> bool:
    """Root may still be refused namespaces (a container without CAP_SYS_ADMIN): try one."""
    if os.geteuid() != 0 or NEEDS:
        return False
    probe = f"npa-probe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True).returncode == 0
    if made:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return made


pytestmark = pytest.mark.skipif(
    not os.path.exists("/dev/net/tun") or not _can_make_namespaces(),
    reason="needs root allowed to make network namespaces, /dev/net/tun"
           + (f", and {', '.join(NEEDS)}" if NEEDS else ""))
_ids = itertools.count()
UDP_ECHO = r"""
import random, socket, sys
dst, n = (sys.argv[1], 7), int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1.0)
rng, ok = random.Random(7), 0
for i in range(n):
    data = rng.randbytes(rng.randint(4, 1200))
    s.sendto(data, dst)
    try:
        ok += s.recvfrom(2048)[0] == data
    except socket.timeout:
        pass
print(ok)
"""


def sh(*cmd: str, ns: str | None = None, **kw) -> subprocess.CompletedProcess:
    full = ["ip", "netns", "exec", ns, *cmd] if ns else list(cmd)
    return subprocess.run(full, capture_output=True, text=True, timeout=kw.pop("timeout", 60), **kw)


@pytest.fixture
def netns():
    """A fresh network namespace with loopback up; deleted afterwards, with what ran in it."""
    name = f"npa-t{os.getpid()}-{next(_ids)}"
    sh("ip", "netns", "add", name).check_returncode()
    sh("ip", "link", "set", "lo", "up", ns=name).check_returncode()
    procs: list[subprocess.Popen] = []
    yield name, procs
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=10)
    sh("ip", "netns", "del", name)


def start_host(ns: str, procs: list, *args: str, tap: str | None = None) -> subprocess.Popen:
    """`npa host ARGS` inside `ns`; with `tap`, waits for the device and gives it 10.77.0.1/24."""
    p = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c",
                          "from npa.cli.main import main; main()", "host", *args],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    procs.append(p)
    if tap:
        for _ in range(100):  # at most 10 s for the process to come up
            if sh("ip", "link", "show", tap, ns=ns).returncode == 0:
                break
            assert p.poll() is None, p.communicate()[1]
            time.sleep(0.1)
        sh("ip", "addr", "add", "10.77.0.1/24", "dev", tap, ns=ns).check_returncode()
        sh("ip", "link", "set", tap, "up", ns=ns).check_returncode()
    return p


def stop(p: subprocess.Popen) -> tuple[int, str, str]:
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=30)
    return p.returncode, out, err


@pytest.mark.parametrize("nic", ["ixgbevf", "vmxnet3", "mlx5"])
def test_linux_pings_and_udp_echoes_vms_through_each_plugin(netns, nic, tmp_path):
    ns, procs = netns
    host = start_host(ns, procs, "--nic", nic, "--uplink", "tap:npa0", "--vms", "2",
                      "--ip", "10.77.0.2/24", tap="npa0")
    pcap = tmp_path / "tap.pcap"
    dump = subprocess.Popen(["ip", "netns", "exec", ns, "tcpdump", "-i", "npa0", "-w", str(pcap),
                             "-U", "-c", "200"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    procs.append(dump)
    time.sleep(0.5)  # tcpdump attaches
    for vm in ("10.77.0.2", "10.77.0.3"):
        r = sh("ping", "-c", "20", "-i", "0.02", "-W", "1", vm, ns=ns)
        assert " 20 received" in r.stdout, r.stdout + r.stderr
    r = sh(sys.executable, "-c", UDP_ECHO, "10.77.0.2", "1000", ns=ns, timeout=120)
    assert r.stdout.strip() == "1000", r.stdout + r.stderr  # every datagram back byte for byte
    code, out, err = stop(host)
    assert code == 0, err
    assert "vm0" in out and "plugin" in out
    assert sh("ip", "link", "show", "npa0", ns=ns).returncode != 0  # the TAP went with the host
    dump.wait(timeout=10) if dump.poll() is not None else dump.send_signal(signal.SIGINT)
    dump.wait(timeout=10)
    kinds = _dissect(pcap)
    assert kinds["arp"] and kinds["icmp"] >= 40 and kinds["udp"] > 0, kinds


def _dissect(path: Path) -> dict[str, int]:
    """What tcpdump saw, each frame dissected and its IPv4 header checked."""
    kinds = {"arp": 0, "icmp": 0, "udp": 0, "bad": 0}
    with open(path, "rb") as f:
        for _, buf in dpkt.pcap.Reader(f):
            eth = dpkt.ethernet.Ethernet(buf)
            if isinstance(eth.data, dpkt.arp.ARP):
                kinds["arp"] += 1
            elif isinstance(eth.data, dpkt.ip.IP):
                ip = eth.data
                raw = bytes(ip)[:ip.hl * 4]
                ok = dpkt.in_cksum(raw) == 0
                kinds["bad"] += not ok
                kinds["icmp" if isinstance(ip.data, dpkt.icmp.ICMP) else "udp"] += 1
    assert kinds["bad"] == 0, kinds
    return kinds


def test_without_root_or_tun_the_error_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-c", "from npa.cli.main import main; main()", "host",
                        "--uplink", "tap:" + "x" * 20], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode != 0 and r.stderr.count("\n") == 1 and r.stderr.startswith("npa: error: tap:")


def test_two_hosts_on_one_udp_segment_a_vm_pings_a_vm_on_the_other(tmp_path):
    """Unprivileged: host A's vm0 and host B's vm0 share a segment of UDP datagrams on 127.0.0.1."""
    from npa.runtime.host.control import ask
    a_sock, b_sock = str(tmp_path / "a.sock"), str(tmp_path / "b.sock")
    pa, pb = 47000 + os.getpid() % 1000, 48000 + os.getpid() % 1000
    cmd = [sys.executable, "-c", "from npa.cli.main import main; main()", "host", "--vms", "1"]
    summary = tmp_path / "a.json"
    a = subprocess.Popen([*cmd, "--uplink", f"udp:127.0.0.1:{pa}=127.0.0.1:{pb}", "--ip",
                          "10.78.0.2/24", "--control", a_sock, "--json", str(summary)],
                         cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    b = subprocess.Popen([*cmd, "--nic", "mlx5", "--uplink", f"udp:127.0.0.1:{pb}=127.0.0.1:{pa}",
                          "--ip", "10.78.0.3/24", "--control", b_sock], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for sock, p in ((a_sock, a), (b_sock, b)):
            for _ in range(100):
                if os.path.exists(sock):
                    break
                assert p.poll() is None, p.communicate()[1]
                time.sleep(0.1)
        ask(a_sock, "ping", vm="vm0", target="10.78.0.3", count=10)
        for _ in range(100):  # at most 10 s
            got = ask(a_sock).status["vms"][0]["pings"]["10.78.0.3"]
            if got["received"] == 10:
                break
            time.sleep(0.1)
        assert got == {**got, "sent": 10, "received": 10}
        assert ask(b_sock).status["vms"][0]["echo_replies"] == 10
    finally:
        results = [stop(p) for p in (a, b)]
    assert [code for code, _, _ in results] == [0, 0], [err for _, _, err in results]
    doc = json.loads(summary.read_text())  # `npa host --json`: the summary at exit
    assert doc["schema"] == "npa.host/1" and doc["conserved"] and doc["nic"] == "ixgbevf"
    assert doc["vms"][0]["pings"]["10.78.0.3"]["received"] == 10


def test_sigterm_under_traffic_exits_clean_with_every_frame_back(netns):
    ns, procs = netns
    host = start_host(ns, procs, "--uplink", "tap:npa1", "--vms", "1", "--ip", "10.77.0.2/24",
                      tap="npa1")
    flood = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", UDP_ECHO,
                              "10.77.0.2", "100000"], stdout=subprocess.PIPE, text=True)
    procs.append(flood)
    time.sleep(1.5)  # mid-stream
    code, out, err = stop(host)
    assert code == 0, err  # quiesced, no fault, nothing left with the plugin
    assert "udp echo" in out
    flood.kill()


def _wait_for(cond, what: str, limit_s: float = 10.0):
    """Poll `cond()` every 20 ms until it returns something true, at most `limit_s`."""
    for _ in range(int(limit_s / 0.02)):
        if got := cond():
            return got
        time.sleep(0.02)
    raise AssertionError(f"no {what} after {limit_s} s")


def test_linux_pings_a_vm_every_10ms_while_it_migrates_to_another_vendors_nic(netns, tmp_path):
    """Two `npa host` processes on one Linux bridge (TAP uplinks), ixgbevf on one, mlx5 on the
    other. First the destination's repository lacks an mlx5 plugin: the migration is refused and
    vm0 keeps answering on the source. Then Linux pings vm0 every 10 ms while `npa migrate` moves
    it: every ping is answered, the last ones by the mlx5 host."""
    from npa.runtime.host.control import ask

    ns, procs = netns
    sh("ip", "link", "add", "br0", "type", "bridge", ns=ns).check_returncode()
    sh("ip", "addr", "add", "10.79.0.1/24", "dev", "br0", ns=ns).check_returncode()
    sh("ip", "link", "set", "br0", "up", ns=ns).check_returncode()
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("ixgbevf.wasm", "mlx5.wasm"):
        shutil.copy(ROOT / "plugins-wasm" / name, repo / name)
    a_sock, b_sock = str(tmp_path / "a.sock"), str(tmp_path / "b.sock")
    for tap, sock, args in (("npaA", a_sock, ["--nic", "ixgbevf", "--vms", "1", "--ip", "10.79.0.2/24"]),
                            ("npaB", b_sock, ["--nic", "mlx5", "--vms", "0", "--ip", "10.79.0.9/24"])):
        p = start_host(ns, procs, *args, "--uplink", f"tap:{tap}", "--control", sock,
                       "--plugins", str(repo))
        _wait_for(lambda: sh("ip", "link", "show", tap, ns=ns).returncode == 0 and os.path.exists(sock)
                  or p.poll() is not None, f"{tap} and {sock}")
        assert p.poll() is None, p.communicate()[1]
        sh("ip", "link", "set", tap, "master", "br0", "up", ns=ns).check_returncode()
    a, b = procs[0], procs[1]
    migrate = ["ip", "netns", "exec", ns, sys.executable, "-c", "from npa.cli.main import main; main()",
               "migrate", "vm0", "--from", a_sock, "--to", b_sock, "--json", "-"]

    (repo / "mlx5.wasm").rename(tmp_path / "away.wasm")  # the destination has no plugin for its NIC
    r = subprocess.run(migrate, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stderr
    assert "no plugin" in r.stderr and "stays on the source" in r.stderr
    assert r.stderr.count("npa: error:") == 1
    assert [v["data_path"] for v in ask(a_sock).status["vms"]] == ["plugin"]
    assert " 5 received" in sh("ping", "-c", "5", "-i", "0.02", "-W", "1", "10.79.0.2", ns=ns).stdout
    (tmp_path / "away.wasm").rename(repo / "mlx5.wasm")

    ping = subprocess.Popen(["ip", "netns", "exec", ns, "ping", "-i", "0.01", "-c", "500", "-W", "2",
                             "10.79.0.2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    procs.append(ping)
    _wait_for(lambda: ask(a_sock).status["vms"][0].get("echo_replies", 0) >= 100, "100 echo replies")
    r = subprocess.run(migrate, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    out, err = ping.communicate(timeout=60)
    assert " 500 received" in out, out + err  # not one ping lost
    assert report["outcome"] == "moved" and report["schema"] == "npa.migrate/1"
    assert (report["source"]["nic"], report["destination"]["nic"]) == ("ixgbevf", "mlx5")
    assert report["destination"]["plugin"] == "mlx5" and report["destination"]["mode"] == "plugin"
    assert report["downtime_s"] is not None and report["precopy_bytes"] > 0
    there = ask(b_sock).status["vms"]
    assert [v["name"] for v in there] == ["vm0"] and there[0]["echo_replies"] > 0
    assert there[0]["data_path"] == "plugin" and there[0]["ip"] == "10.79.0.2/24"
    assert ask(a_sock).status["vms"] == []
    results = [stop(p) for p in (a, b)]
    assert [code for code, _, _ in results] == [0, 0], [e for _, _, e in results]


def npa_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from npa.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=timeout)


def test_a_host_comes_up_with_its_tap_up_answers_stat_and_captures_in_wall_time(netns, tmp_path):
    """`npa stat --wait` returns once the host is ready; by then the TAP is up and each VM's
    gratuitous ARP has reached Linux; stat shows VMs, VFs and ports; --pcap stamps wall time."""
    ns, procs = netns
    sock, pcap = tmp_path / "h.sock", tmp_path / "h.pcapng"
    t0 = time.time()
    host = start_host(ns, procs, "--uplink", "tap:npa0", "--vms", "2", "--ip", "10.77.0.2/24",
                      "--control", str(sock), "--pcap", str(pcap))
    r = npa_cli("stat", "--control", str(sock), "--wait", "30", "--json", "-")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["schema"] == "npa.stat/1" and [v["data_path"] for v in doc["vms"]] == ["plugin"] * 2
    assert {p["name"] for p in doc["ports"]} >= {"vf0", "vf1", "uplink", "pf"}
    link = json.loads(sh("ip", "-j", "-s", "link", "show", "npa0", ns=ns).stdout)[0]
    assert "UP" in link["flags"]  # npa set it up: no `ip link set up` was needed
    assert link["stats64"]["rx"]["packets"] >= 2  # both VMs' gratuitous ARPs reached Linux
    sh("ip", "addr", "add", "10.77.0.1/24", "dev", "npa0", ns=ns).check_returncode()
    r = sh("ping", "-c", "5", "-i", "0.05", "-W", "1", "10.77.0.3", ns=ns)
    assert " 5 received" in r.stdout, r.stdout + r.stderr
    r = npa_cli("stat", "--control", str(sock))
    assert r.returncode == 0 and "switch ports" in r.stdout and "vf offer" in r.stdout, r.stdout
    assert max(len(line) for line in r.stdout.splitlines()) <= 100
    code, _, err = stop(host)
    assert code == 0, err
    with open(pcap, "rb") as f:
        stamps = [(ts, dpkt.ethernet.Ethernet(buf)) for ts, buf in dpkt.pcapng.Reader(f)]
    icmp = [ts for ts, eth in stamps if isinstance(eth.data, dpkt.ip.IP) and eth.data.p == 1]
    assert len(icmp) >= 10  # 5 requests and 5 replies, each seen at two ports at least
    assert all(t0 - 1 <= ts <= time.time() + 1 for ts, _ in stamps)  # the wall clock
    assert icmp[-1] - icmp[0] >= 0.15  # spread as the pings were, 50 ms apart


def test_stat_of_no_host_is_one_line_and_exit_2(tmp_path):
    r = npa_cli("stat", "--control", str(tmp_path / "none.sock"), "--wait", "0.3")
    assert r.returncode == 2 and r.stderr.startswith("npa: error:") and len(r.stderr.splitlines()) == 1
