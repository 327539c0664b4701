"""A TCP stream from a real Linux guest across live migrations (root, iproute2): two `npa host`
processes (ixgbevf, mlx5) on one Linux bridge in a namespace of their own, VM 0 a Linux guest
(`--guest netns`) sending a counting byte pattern to a sink on the bridge, while `npa migrate`
moves it ixgbevf -> mlx5 -> ixgbevf. Prints each move's pause and downtime, the longest time
the sink received nothing, the throughput before and after, that every byte arrived once and in
order, and draws the sink's throughput over time with the moves marked.

    sudo .venv/bin/python benchmarks/guest_tcp_migration.py [plot.png]
"""
import json, os, subprocess, sys, tempfile, time
from pathlib import Path

import numpy as np

TMP = Path(tempfile.mkdtemp(prefix="npa-gtm-"))
NPA = [sys.executable, "-c", "from npa.cli.main import main; main()"]
NS, TAG, END, VM0 = "npa-gtm-end", "gtm", "10.84.0.1", "10.84.0.2"
SINK = r"""
import socket, sys, time
import numpy as np
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind((sys.argv[1], 5001)); ls.listen(1)
c, _ = ls.accept(); n = bad = 0; marks = []
while (d := c.recv(1 << 16)):
    a = np.frombuffer(d, np.uint8)
    bad += int(np.count_nonzero(a != ((np.arange(len(a)) + n) & 255).astype(np.uint8)))
    n += len(d); marks.append((time.time(), n))
c.sendall(b"k"); print(__import__("json").dumps({"bytes": n, "bad": bad, "marks": marks[::8] + marks[-1:]}))
"""
SOURCE = r"""
import socket, sys, time
s = socket.create_connection((sys.argv[1], 5001)); p = bytes(range(256)) * 256; n = 0
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    s.sendall(p); n += len(p)
s.shutdown(socket.SHUT_WR); s.recv(1)
print(n, open("/proc/net/snmp").read().split("Tcp:")[2].split()[11])
"""


def ip(*c, ns=None, check=True):
    cmd = ["ip", "netns", "exec", ns, *c] if ns else list(c)
    return subprocess.run(cmd, capture_output=True, text=True, check=check)


def main() -> None:
    plot = sys.argv[1] if len(sys.argv) > 1 else "guest-tcp-migration.png"
    ip("ip", "netns", "add", NS)
    ip("ip", "link", "add", "br0", "type", "bridge", ns=NS)
    ip("ip", "addr", "add", f"{END}/24", "dev", "br0", ns=NS)
    ip("ip", "link", "set", "br0", "up", ns=NS)
    hosts = []
    try:
        for i, (nic, vms) in enumerate((("ixgbevf", "1"), ("mlx5", "0"))):
            name, sock = f"{TAG}{i}", str(TMP / f"{i}.sock")
            hosts.append(subprocess.Popen([*NPA, "host", "--nic", nic, "--uplink", f"tap:{name}",
                                           "--name", name, "--vms", vms, "--ip", f"{VM0}/24",
                                           "--guest", "netns", "--control", sock],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            subprocess.run([*NPA, "stat", "--control", sock, "--wait", "30"], capture_output=True, check=True)
            ip("ip", "link", "set", name, "netns", NS)
            ip("ip", "link", "set", name, "master", "br0", ns=NS)
            ip("ip", "link", "set", name, "up", ns=NS)
        a, b = str(TMP / "0.sock"), str(TMP / "1.sock")
        sink = subprocess.Popen(["ip", "netns", "exec", NS, sys.executable, "-c", SINK, END],
                                stdout=subprocess.PIPE, text=True)
        time.sleep(0.5)
        source = subprocess.Popen(["ip", "netns", "exec", f"npa-{TAG}0-vm0", sys.executable, "-c",
                                   SOURCE, END, "8"], stdout=subprocess.PIPE, text=True)
        time.sleep(2)
        moves = []
        for there, back, label in ((a, b, "ixgbevf -> mlx5"), (b, a, "mlx5 -> ixgbevf")):
            t0 = time.time()
            r = subprocess.run([*NPA, "migrate", "vm0", "--from", there, "--to", back, "--json", "-"],
                               capture_output=True, text=True)
            doc = json.loads(r.stdout)
            moves.append((label, t0, doc))
            ms = {k: f"{doc[k] * 1000:.0f} ms" if doc.get(k) is not None else "-"
                  for k in ("paused_s", "downtime_s", "total_s")}
            print(f"{label}: {doc['outcome']}, paused {ms['paused_s']}, downtime "
                  f"{ms['downtime_s']}, total {ms['total_s']}")
            time.sleep(2)
        sent, retrans = map(int, source.communicate(timeout=60)[0].split())
        got = json.loads(sink.communicate(timeout=30)[0])
    finally:
        for h in hosts:
            h.terminate()
            h.wait(timeout=30)
        ip("ip", "netns", "del", NS, check=False)
    t, n = np.array(got["marks"]).T
    gap = float(np.max(np.diff(t))) if len(t) > 1 else 0.0
    edges = np.arange(t[0], t[-1], 0.05)  # 50 ms bins: the bytes the sink had at each edge
    rate = np.diff(np.interp(edges, t, n)) / 0.05 * 8 / 1e6
    print(f"{sent:,} bytes sent, {got['bytes']:,} received, {got['bad']} out of pattern, "
          f"{retrans} segments retransmitted; longest silence at the sink {gap * 1000:.0f} ms; "
          f"median {np.median(rate):.0f} Mbit/s over 50 ms bins")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(9, 3.5))
    ax.step(edges[1:] - t[0], rate, lw=0.8)
    for label, t0, _ in moves:
        ax.axvline(t0 - t[0], color="red", ls="--", lw=0.8)
        ax.text(t0 - t[0], ax.get_ylim()[1] * 0.95, label, fontsize=8, color="red")
    ax.set_xlabel("seconds")
    ax.set_ylabel("Mbit/s at the sink (50 ms)")
    ax.set_title("TCP from a Linux guest across two live migrations (npa host --guest netns)")
    fig.tight_layout()
    fig.savefig(plot, dpi=110)
    print(f"plot: {plot}")


if __name__ == "__main__":
    main()
