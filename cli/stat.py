"""`npa stat`: a running host's VMs, VFs, switch ports, mode changes and migrations, read from
its control socket: what `ip -s link` and `ethtool -S` give for a real NIC, in one schema."""
from __future__ import annotations

import time

from npa.runtime.host.control import ControlError, ask

from .console import out, table

SCHEMA = "npa.stat/1"


def fetch(control: str, wait_s: float = 0.0) -> dict:
    """The host's status as a npa.stat/1 document; with `wait_s`, retry until the host answers
    (a host answers once its NIC and VMs are up) or the time is over."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            reply = ask(control, "status", timeout=max(1.0, wait_s))
            break
        except ControlError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.05)
    if not reply.ok:
        raise ControlError(f"{control}: {reply.error}")
    return {"schema": SCHEMA, "control": control, **reply.status}


def render(doc: dict):
    """The document as tables (a rich Group, for printing once or in a live display)."""
    from rich.console import Group

    vms = table("vm", "guest", "data path", "IP", "MAC", "VF", "tx frames", "rx frames", "faults",
                title=f"{doc['control']}: {doc['nic']} (plugin {doc['plugin']}), up "
                      f"{doc['uptime_s']:.0f} s, {doc['steps']:,} steps")
    for v in doc["vms"]:
        guest = v.get("guest", {})
        vms.add_row(v["name"], guest.get("where", guest.get("kind", "stack")), v["data_path"], v["ip"],
                    v["mac"], v["vf"], f"{v['tx_frames']:,}", f"{v['rx_frames']:,}", str(v["faults"]))
    decided = [(v["name"], d) for v in doc["vms"] for d in v.get("guest", {}).get("link_decisions", [])]
    if decided:
        links = table("vm", "the guest's link change: the policy's answer", title="guest link requests")
        for name, d in decided:
            links.add_row(name, d)
    vfs = table("vf", "PCI id", "tx frames", "rx frames", "tx bytes", "rx bytes", "tx errors",
                "rx too big", "DMA faults", "resets", title="VFs")
    for f in doc["vfs"]:
        vfs.add_row(f["name"], f["pci_id"], *(f"{f[k]:,}" for k in (
            "tx_frames", "rx_frames", "tx_bytes", "rx_bytes", "tx_errors", "rx_oversize",
            "dma_faults", "resets")))
    ports = table("port", "kind", "rx frames", "tx frames", "spoofed", "VLAN", "over MTU", "storm",
                  "drops", title="switch ports (drops by the PF's policy, by reason)")
    for p in doc["ports"]:
        ports.add_row(p["name"], p["kind"], *(f"{p[k]:,}" for k in (
            "rx_frames", "tx_frames", "spoofed", "vlan", "oversize", "storm", "drops")))
    modes = table("vm", "time (µs)", "data path", "reason", title="data-path mode changes")
    for v in doc["vms"]:
        for m in v["modes"]:
            modes.add_row(v["name"], f"{m['time_us']:,}", m["mode"], m["reason"])
    parts = [vms, vfs, ports, modes, *([links] if decided else [])]
    if doc["migrations"]:
        moves = table("vm", "direction", "phase", "outcome", "reason", title="migrations")
        for m in doc["migrations"]:
            moves.add_row(str(m.get("vm", "?")), m["direction"], str(m.get("phase", "?")),
                          m.get("outcome") or "-", m.get("reason") or "")
        parts.append(moves)
    return Group(*parts)


def watch(control: str, every_s: float, wait_s: float) -> None:
    """Refresh the tables every `every_s` until Ctrl-C (then return: ending a watch is no error)."""
    from rich.live import Live

    doc = fetch(control, wait_s)
    try:
        with Live(render(doc), console=out, refresh_per_second=4) as live:
            while True:
                time.sleep(every_s)
                live.update(render(fetch(control)))
    except KeyboardInterrupt:
        return
