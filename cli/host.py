"""`npa host`: a long-running host process on a real network."""
from __future__ import annotations

import signal
import sys
import time

from rich.live import Live

from .jsonout import write as write_json
from .console import out, table


def _table(host):
    t = table("vm", "ip", "mac", "guest", "data path", "tx", "rx", "arp", "ping", "udp echo",
              "faults", title=f"npa host: {host.nic.model.MODEL}, {len(host.vms)} VMs, up "
                              f"{time.monotonic() - host.started:.0f} s")
    for v in host.status()["vms"]:
        g = v["guest"]
        answered = (str(v.get(k, 0)) for k in ("arp_replies", "echo_replies", "udp_echoes")) \
            if g["kind"] == "stack" else ("-", "-", "-")  # a Linux guest answers for itself
        t.add_row(v["name"], v["ip"], v["mac"], g.get("where", "stack"), v["data_path"],
                  str(v["tx_frames"]), str(v["rx_frames"]), *answered, str(v["faults"]))
    return t


def serve(host, control: str | None, live: bool, as_json: str | None = None) -> int:
    """Run until SIGINT or SIGTERM; then quiesce, print the summary (and write it as JSON),
    return the exit status."""
    from npa.runtime.host.control import ControlServer

    stopping = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.append(True))
    try:
        server = ControlServer(control) if control else None
    except OSError as e:
        host.close()
        print(f"npa: error: --control {e}", file=sys.stderr)
        return 2
    try:
        host.boot()
        print(f"npa host: ready: {host.nic.model.MODEL}, uplink {host.nic.uplink.kind}, "
              + (", ".join(f"{vm.name} {vm.stack.address}" for vm in host.vms) or "no VMs yet")
              + (f"; control {control}" if control else ""), file=sys.stderr, flush=True)
        others = [server] if server else []
        if live:
            with Live(_table(host), console=out, refresh_per_second=2) as display:
                host.run(lambda: bool(stopping), others, tick=lambda: display.update(_table(host)))
        else:
            host.run(lambda: bool(stopping), others)
        host.finish()
    finally:
        if server is not None:
            server.close()
        host.close()
    status = host.status()
    if as_json:
        write_json(as_json, {"schema": "npa.host/1", "conserved": host.conserved(), **status})
    if as_json != "-":
        out.print(_table(host))
    faults = sum(v["faults"] for v in status["vms"])
    if not host.conserved():
        print("npa: error: frames still held by a plugin after quiesce", file=sys.stderr)
        return 1
    return 1 if faults else 0
