"""Live-migration figures across processes (root, iproute2, ping): three `npa host` processes
(ixgbevf, vmxnet3, mlx5) on one Linux bridge in a namespace of their own; Linux pings vm0 every
10 ms while `npa migrate` moves it around all six ordered pairs of different NICs, N times each.
Prints ping's loss line and, per pair, downtime and pause (median, p99), bytes and total time.

    sudo .venv/bin/python benchmarks/migrate_across.py [N]
"""
import json, os, subprocess, sys, tempfile, time, statistics
from pathlib import Path

import numpy as np

ROOT = str(Path(__file__).resolve().parent.parent)
TMP = tempfile.mkdtemp(prefix="npa-xp-")
NPA = [sys.executable, "-c", "from npa.cli.main import main; main()"]
ns = "npa-xp"
N = int(sys.argv[1]) if len(sys.argv) > 1 else 10
def sh(*c, check=True):
    return subprocess.run(["ip", "netns", "exec", ns, *c], capture_output=True, text=True, check=check)
subprocess.run(["ip", "netns", "del", ns], capture_output=True)
subprocess.run(["ip", "netns", "add", ns], check=True)
procs = []
try:
    sh("ip", "link", "set", "lo", "up"); sh("ip", "link", "add", "br0", "type", "bridge")
    sh("ip", "addr", "add", "10.80.0.1/24", "dev", "br0"); sh("ip", "link", "set", "br0", "up")
    socks = {}
    for i, nic in enumerate(["ixgbevf", "vmxnet3", "mlx5"]):
        sock = f"{TMP}/{nic}.sock"
        socks[nic] = sock
        if os.path.exists(sock): os.unlink(sock)
        p = subprocess.Popen(["ip", "netns", "exec", ns, *NPA, "host", "--nic", nic, "--uplink", f"tap:xp{i}",
                              "--vms", "1" if i == 0 else "0", "--ip", "10.80.0.2/24" if i == 0 else f"10.80.0.{10+i}/24",
                              "--control", sock], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        procs.append(p)
        for _ in range(200):
            if sh("ip", "link", "show", f"xp{i}", check=False).returncode == 0 and os.path.exists(sock): break
            time.sleep(0.05)
        if p.poll() is not None:
            raise SystemExit(f"npa host ({nic}) did not start: {p.stderr.read().strip()}")
        sh("ip", "link", "set", f"xp{i}", "master", "br0", "up")
    ping = subprocess.Popen(["ip", "netns", "exec", ns, "ping", "-i", "0.01", "-W", "2", "10.80.0.2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    cycles = [["ixgbevf", "vmxnet3", "mlx5"], ["ixgbevf", "mlx5", "vmxnet3"]]
    res = {}
    where = "ixgbevf"
    for k in range(N):
        for cyc in cycles:
            for dst in cyc[1:] + cyc[:1]:
                src = where
                r = subprocess.run([*NPA, "migrate", "vm0", "--from", socks[src], "--to", socks[dst], "--json", "-"],
                                   cwd=ROOT, capture_output=True, text=True)
                if r.returncode != 0:
                    print("FAIL", src, dst, r.stderr); continue
                d = json.loads(r.stdout)
                res.setdefault(f"{src}->{dst}", []).append(d)
                where = dst
                time.sleep(0.2)
    ping.send_signal(2)
    out, _ = ping.communicate(timeout=10)
    print(out.strip().splitlines()[-2])
    rows = {}
    for pair, ds in res.items():
        dt = [x["downtime_s"] * 1e3 for x in ds if x["downtime_s"] is not None]
        pz = [x["paused_s"] * 1e3 for x in ds]
        rows[pair] = dict(n=len(ds), downtime_median_ms=statistics.median(dt), downtime_p99_ms=float(np.percentile(dt, 99)),
                          paused_median_ms=statistics.median(pz), paused_p99_ms=float(np.percentile(pz, 99)),
                          precopy_bytes=statistics.median(x["precopy_bytes"] for x in ds),
                          stop_bytes=statistics.median(x["stop_copy_bytes"] for x in ds),
                          total_ms=statistics.median(x["total_s"] * 1e3 for x in ds))
        print(pair, {k: round(v, 2) if isinstance(v, float) else v for k, v in rows[pair].items()})
    json.dump(rows, open(f"{TMP}/result.json", "w"), indent=1)
    print(f"figures in {TMP}/result.json")
finally:
    for p in procs:
        p.terminate()
    for p in procs:
        try: p.wait(timeout=20)
        except Exception: p.kill()
    subprocess.run(["ip", "netns", "del", ns], capture_output=True)
