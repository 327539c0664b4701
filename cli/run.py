"""`npa run`: boot a host, inject the plugin into every VM, send traffic VM to VM, report."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from nic_model.sriov import SriovNic
from runtime.host import Host
from runtime.hypervisor import Policy, format_mac

out = Console(highlight=False)
if not out.is_terminal:
    out = Console(highlight=False, width=140)  # a report in a pipe or a file keeps its columns
err = Console(stderr=True, highlight=False)


def run(image: bytes, *, vms: int, vfs: int, packets: int, sizes, model: str, pcap: Path | None,
        switch: str, uplink: str, quiet: bool = False, policy: Policy | None = None) -> tuple[Host, float]:
    nic = SriovNic(model, vfs, uplink=uplink, pcap=pcap, switch_mode=switch)
    host = Host(nic, image, vms, packets=packets, sizes=sizes, policy=policy)
    try:
        host.boot()
        total = host.total_frames()
        t0 = time.perf_counter()
        with Progress(TextColumn("frames"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      console=err, transient=True, disable=quiet or not err.is_terminal) as bar:
            task = bar.add_task("run", total=total)
            host.run(lambda received: bar.update(task, completed=received))
        return host, time.perf_counter() - t0
    finally:
        host.close()


def report(host: Host, seconds: float, modes: bool = False) -> list[str]:
    """Print the tables; return the problems found (none: a clean run). `modes`: list every
    VM's data-path mode changes, not only those after boot."""
    vt = Table("vm", "mac", "data path", "sent", "received", "lost", "dup", "reordered", "corrupt",
               "refused", "faults", title="VMs", title_justify="left")
    problems = []
    for vm in host.vms:
        checks = vm.sink.check.values()
        lost = sum(vm.sink.lost(fid) for fid in vm.sink.check)
        faults = [e for e in vm.shell.events if e.kind == "fault"]
        attach = next((e.reason for e in reversed(vm.shell.events) if e.kind == "attach"), "-")
        sent = sum(f.sent for f in vm.gen.flows)
        vt.add_row(vm.name, format_mac(vm.mac), attach, str(sent), str(sum(c.received for c in checks)),
                   str(lost), str(sum(c.duplicates for c in checks)),
                   str(sum(c.reordered for c in checks)), str(sum(c.corrupted for c in checks)),
                   str(sum(vm.shell.refused.values())), str(len(faults)))
        for e in faults:
            problems.append(f"{vm.name}: plugin fault at {e.time_us} µs: {e.reason}")
        for why, n in vm.shell.refused.items():
            problems.append(f"{vm.name}: shell refused {n} entries ({why})")
        for fid, c in vm.sink.check.items():
            for what, n in (("lost", vm.sink.lost(fid)), ("duplicated", c.duplicates),
                            ("reordered", c.reordered), ("corrupted", c.corrupted)):
                if n:
                    problems.append(f"{vm.name}: flow {fid}: {n} frames {what}")
        if vm.sink.unexpected:
            problems.append(f"{vm.name}: {vm.sink.unexpected} unexpected frames")
        if (held := vm.shell.held_by_plugin()):
            problems.append(f"{vm.name}: {held} pool frames still held by the plugin or VF")
    for f in host.flows:
        if f.sent < f.count:
            problems.append(f"flow {f.id}: the guest could send only {f.sent} of {f.count} frames")
    out.print(vt)
    _modes(host, modes)

    ft = Table("vf", "pci", "tx frames", "rx frames", "tx bytes", "rx bytes", "tx errors",
               "rx oversize", "spoofed", "vlan", "oversize", "storm", "dma faults", "resets",
               title="VFs (drops: the switch enforcing the PF's policy)", title_justify="left")
    for vf in host.nic.vfs:
        s, p = vf.stats, vf.port.stats
        ft.add_row(vf.name, vf.pci_id, *(str(v) for v in (
            s.tx_frames, s.rx_frames, s.tx_bytes, s.rx_bytes, s.tx_errors, s.rx_oversize,
            p.spoofed, p.vlan, p.oversize, p.storm, s.dma_faults, s.resets)))
    out.print(ft)

    sw = host.nic.switch
    pt = Table("port", "kind", "rx frames", "rx bytes", "tx frames", "tx bytes", "drops",
               title=f"switch ports ({sw.mode})", title_justify="left")
    for p in sw.ports:
        s = p.stats
        pt.add_row(p.name, p.kind, *(str(v) for v in (s.rx_frames, s.rx_bytes, s.tx_frames,
                                                       s.tx_bytes, s.drops)))
    out.print(pt)
    frames = host.total_frames()
    out.print(f"{frames} frames in {host.steps} steps, {seconds:.2f} s "
              f"({frames / seconds / 1e6:.3f} Mpps end to end)" if seconds > 0 else "")
    if host.nic.uplink.capture:
        cap = host.nic.uplink.capture
        out.print(f"pcap: {cap.frames} frames written to {cap.path}")
    return problems


def _modes(host: Host, every: bool) -> None:
    """Each VM's data-path mode changes with their reasons (after boot, or all of them)."""
    if not host.managed:
        return
    t = Table("vm", "time (µs)", "mode", "reason", title="data-path mode changes", title_justify="left")
    rows = 0
    for vm in host.vms:
        changes = host.hv.modes(vm)
        for c in changes if every else changes[2:]:  # boot: emulated, then the VF offer
            t.add_row(vm.name, str(c.time_us), c.mode, c.reason)
            rows += 1
    if rows:
        out.print(t)


def summary(host: Host, seconds: float, problems: list[str]) -> dict:
    """`npa run --json`: schema npa.run/1, one object."""
    from dataclasses import asdict
    vms = []
    for vm in host.vms:
        checks = vm.sink.check.values()
        vms.append({
            "name": vm.name, "mac": format_mac(vm.mac),
            "data_path": host.hv.mode(vm) if host.managed else "driver",
            "sent": sum(f.sent for f in vm.gen.flows),
            "received": sum(c.received for c in checks),
            "lost": sum(vm.sink.lost(fid) for fid in vm.sink.check),
            "duplicated": sum(c.duplicates for c in checks),
            "reordered": sum(c.reordered for c in checks),
            "corrupted": sum(c.corrupted for c in checks),
            "refused": dict(vm.shell.refused),
            "faults": [e.reason for e in vm.shell.events if e.kind == "fault"],
            "modes": [asdict(c) for c in host.hv.modes(vm)] if host.managed else [],
        })
    frames = sum(vm.sink.frames for vm in host.vms)
    return {"schema": "npa.run/1", "clean": not problems and host.clean(),
            "nic": host.nic.model.MODEL, "plugin": host.report.manifest.name,
            "frames": frames, "seconds": round(seconds, 4),
            "mpps": round(frames / seconds / 1e6, 4) if seconds > 0 else None,
            "problems": problems, "vms": vms,
            "vfs": [{"name": vf.name, "pci_id": vf.pci_id, **asdict(vf.stats), "port": asdict(vf.port.stats)}
                    for vf in host.nic.vfs]}


def verdict(host: Host, problems: list[str]) -> int:
    if problems or not host.clean():
        for p in problems or ["run not clean"]:
            print(f"npa: {p}", file=sys.stderr)
        return 1
    out.print(f"[green]clean[/]: {host.total_frames()} frames delivered byte-exact and in order; "
              "every pool frame is back with its shell")
    return 0
