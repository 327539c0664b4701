"""`npa run`: boot a host, inject the plugin into every VM, send traffic VM to VM, report."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

from npa.nic_model.sriov import SriovNic
from npa.runtime.host import Host
from npa.runtime.host.fabric import Fabric
from npa.runtime.host.timeline import Timeline
from npa.runtime.hypervisor import Policy, format_mac

from .console import err, out, table



def run(image: bytes, *, vms: int, vfs: int, packets: int, sizes, model: str, pcap: Path | None,
        switch: str, pcap_ports: tuple[str, ...] = ("uplink",), uplink: str, quiet: bool = False, policy: Policy | None = None,
        migrate_to: str | None = None, migrate_at: int = 0, other_image: bytes = b"",
        plugins: Path | None = None, timeline: Timeline | None = None):
    """Boot, run the traffic to the end, quiesce; with `migrate_to`, on a fabric of two hosts
    (the second with that NIC model) across which vm0 moves once `migrate_at` frames arrived.
    Returns the host (or the fabric) and the seconds the traffic took."""
    if migrate_to:
        target = Fabric.build(image, model, migrate_to, other_image, vms=vms, vfs=vfs,
                              repository=plugins, policy=policy, packets=packets, sizes=sizes,
                              nic_options=_capture(pcap, pcap_ports))
        move = target.migrate_when("vm0", migrate_at)
    else:
        target = Host(SriovNic(model, vfs, uplink=uplink, switch_mode=switch, **_capture(pcap, pcap_ports)),
                      image, vms, packets=packets, sizes=sizes, policy=policy)
        move = None
    hosts = getattr(target, "hosts", (target,))

    def on_step(t) -> None:
        if move is not None:
            move(t)
        if timeline is not None:
            timeline.sample(t.steps, hosts[0].nic.now_us, [vm for h in hosts for vm in h.vms])
    try:
        target.boot()
        total = target.total_frames()
        t0 = time.perf_counter()
        with Progress(TextColumn("frames"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      console=err, transient=True, disable=quiet or not err.is_terminal) as bar:
            task = bar.add_task("run", total=total)
            target.run(lambda received: bar.update(task, completed=received), on_step=on_step)
        return target, time.perf_counter() - t0
    finally:
        target.close()


def _capture(pcap: Path | None, ports: tuple[str, ...]) -> dict:
    """The NIC's capture options: the file, the ports, and the format its suffix names."""
    if pcap is None:
        return {}
    return {"pcap": pcap, "pcap_ports": ports,
            "pcap_format": "pcapng" if pcap.suffix == ".pcapng" else "pcap"}


def hosts_of(target) -> tuple[Host, ...]:
    return getattr(target, "hosts", (target,))


def report(target, seconds: float, modes: bool = False) -> list[str]:
    """Print the tables; return the problems found (none: a clean run). `modes`: list every
    VM's data-path mode changes, not only those after boot. `target`: a host or a fabric."""
    vt = table("vm", "NIC", "MAC", "data path", "faults", title="VMs")
    tt = table("vm", "sent", "received", "lost", "duplicated", "reordered", "corrupted",
               "refused", title="traffic (frames; refused: ring entries the shell refused)")
    problems = []
    for host, vm in ((h, vm) for h in hosts_of(target) for vm in h.vms):
        checks = vm.sink.check.values()
        lost = sum(vm.sink.lost(fid) for fid in vm.sink.check)
        faults = [e for e in vm.shell.events if e.kind == "fault"]
        attach = next((e.reason for e in reversed(vm.shell.events) if e.kind == "attach"), "-")
        sent = sum(f.sent for f in vm.gen.flows)
        vt.add_row(vm.name, host.nic.model.MODEL, format_mac(vm.mac), attach, str(len(faults)))
        tt.add_row(vm.name, str(sent), str(sum(c.received for c in checks)), str(lost),
                   str(sum(c.duplicates for c in checks)), str(sum(c.reordered for c in checks)),
                   str(sum(c.corrupted for c in checks)), str(sum(vm.shell.refused.values())))
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
        for m in host.hv.modes(vm):  # an offer that ended on the emulated path: the plugin said no
            if m.reason.startswith(("plugin refused", "plugin init failed")):
                problems.append(f"{vm.name}: {m.reason}")
        if (held := vm.shell.held_by_plugin()):
            problems.append(f"{vm.name}: {held} pool frames still held by the plugin or VF")
    for f in target.flows:
        if f.sent < f.count:
            problems.append(f"flow {f.id}: the guest could send only {f.sent} of {f.count} frames")
    out.print(vt)
    out.print(tt)
    for host in hosts_of(target):
        _modes(host, modes)
        _nic_tables(host, len(hosts_of(target)) > 1)
    problems += _migrations(target)
    frames = target.total_frames()
    out.print(f"{frames} frames in {target.steps} steps, {seconds:.2f} s "
              f"({frames / seconds / 1e6:.3f} Mpps end to end)" if seconds > 0 else "")
    if (cap := hosts_of(target)[0].nic.capture):
        out.print(f"{cap.fmt}: {cap.frames} frames written to {cap.path}")
    return problems


def _nic_tables(host: Host, named: bool) -> None:
    """The VF and switch-port counters of one host's NIC."""
    nic = f"{host.nic.model.MODEL} " if named else ""
    ft = table("vf", "PCI id", "tx frames", "rx frames", "tx bytes", "rx bytes", "tx errors",
               "rx too big", "DMA faults", "resets",
               title=f"{nic}VFs (rx too big: a frame larger than the posted buffer)")
    for vf in host.nic.vfs:
        s = vf.stats
        ft.add_row(vf.name, vf.pci_id, *(str(v) for v in (
            s.tx_frames, s.rx_frames, s.tx_bytes, s.rx_bytes, s.tx_errors, s.rx_oversize,
            s.dma_faults, s.resets)))
    out.print(ft)

    sw = host.nic.switch
    pt = table("port", "rx frames", "rx bytes", "tx frames", "tx bytes", "spoofed", "VLAN",
               "over MTU", "storm", "drops",
               title=f"{nic}switch ports ({sw.mode}; drops by the PF's policy: spoofed source, "
                     "VLAN, over the port's MTU, storm control)")
    for p in sw.ports:
        s = p.stats
        pt.add_row(p.name, *(str(v) for v in (s.rx_frames, s.rx_bytes, s.tx_frames, s.tx_bytes,
                                              s.spoofed, s.vlan, s.oversize, s.storm, s.drops)))
    out.print(pt)


def _migrations(target) -> list[str]:
    """The migrations of a fabric run, one row each; problems when one did not move its VM."""
    moves = getattr(target, "moves", [])
    if not moves:
        return []
    t = table("vm", "from", "to", "outcome", "rounds", "pre-copy B", "stop-copy B", "paused µs",
              "downtime µs", "forwarded", title="migrations (device time; B: bytes)")
    problems = []
    for r in target.report():
        rounds = r.get("rounds", [])
        pre = sum(x["bytes"] for x in rounds if not x.get("stop_and_copy"))
        stop = sum(x["bytes"] for x in rounds if x.get("stop_and_copy"))
        ph = {name: tm for name, tm in r["phases"]}
        paused = (ph["forwarding"] - ph["paused"]) * 1e6 if {"paused", "forwarding"} <= ph.keys() else None
        d = r.get("destination", {})
        t.add_row(r["vm"], f"{r['source']['nic']} ({r['source']['plugin']})",
                  f"{d.get('nic', '-')} ({d.get('plugin', '-')}, {d.get('mode', '-')})", r["outcome"],
                  str(len(rounds)), f"{pre:,}", f"{stop:,}", "-" if paused is None else f"{paused:.0f}",
                  "-" if r["downtime_s"] is None else f"{r['downtime_s'] * 1e6:.0f}",
                  str(r.get("forwarded", 0)))
        if r["outcome"] != "moved":
            problems.append(f"migration of {r['vm']}: {r['reason']}")
    out.print(t)
    return problems


def _modes(host: Host, every: bool) -> None:
    """Each VM's data-path mode changes with their reasons (after boot, or all of them)."""
    if not host.managed:
        return
    t = table("vm", "time (µs)", "mode", "reason", title="data-path mode changes")
    rows = 0
    for vm in host.vms:
        changes = host.hv.modes(vm)
        for c in changes if every else changes[2:]:  # boot: emulated, then the VF offer
            t.add_row(vm.name, str(c.time_us), c.mode, c.reason)
            rows += 1
    if rows:
        out.print(t)


def summary(target, seconds: float, problems: list[str]) -> dict:
    """`npa run --json`: schema npa.run/1, one object (a fabric run adds `migrations`)."""
    from dataclasses import asdict
    vms = []
    for host, vm in ((h, vm) for h in hosts_of(target) for vm in h.vms):
        checks = vm.sink.check.values()
        vms.append({
            "name": vm.name, "nic": host.nic.model.MODEL, "mac": format_mac(vm.mac),
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
    first = hosts_of(target)[0]
    frames = sum(v["received"] for v in vms)
    doc = {"schema": "npa.run/1", "clean": not problems and target.clean(),
           "nic": first.nic.model.MODEL, "plugin": first.report.manifest.name,
           "frames": frames, "seconds": round(seconds, 4),
           "mpps": round(frames / seconds / 1e6, 4) if seconds > 0 else None,
           "problems": problems, "vms": vms,
           "vfs": [{"name": vf.name, "nic": h.nic.model.MODEL, "pci_id": vf.pci_id, **asdict(vf.stats),
                    "port": asdict(vf.port.stats)} for h in hosts_of(target) for vf in h.nic.vfs]}
    if hasattr(target, "moves"):
        doc["migrations"] = target.report()
    return doc


def verdict(target, problems: list[str]) -> int:
    if problems or not target.clean():
        for p in problems or ["run not clean"]:
            print(f"npa: {p}", file=sys.stderr)
        return 1
    out.print(f"[green]clean[/]: {target.total_frames()} frames delivered byte-exact and in order; "
              "every pool frame is back with its shell")
    return 0
