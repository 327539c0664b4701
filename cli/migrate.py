"""`npa migrate`: move a running VM between two `npa host` processes, through their control
sockets, and report the phases, the rounds, the bytes and the downtime."""
from __future__ import annotations

import os
import sys
import time

from npa.runtime.host.control import ControlError, ask

from .console import out, table

POLL_S = 0.02  # how often the source's status is read while the migration runs
FIRST_FRAME_WAIT_S = 3.0  # how long to wait for the destination's first frame, for the downtime


class MigrateError(Exception):
    """The migration could not start or be followed; `code` is the exit status."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


def _say(text: str) -> None:
    print(f"npa migrate: {text}", file=sys.stderr, flush=True)


def _ours(status: dict, vm: str, direction: str, skip: int = 0) -> dict | None:
    found = [m for m in status.get("migrations", []) if m.get("vm") == vm and m["direction"] == direction]
    return found[-1] if len(found) > skip else None


def migrate(vm: str, source: str, dest: str, timeout: float) -> dict:
    """Run one migration; returns the report (npa.migrate/1). MigrateError when it cannot start."""
    try:
        before = len([m for m in ask(source).status.get("migrations", [])
                      if m.get("vm") == vm and m["direction"] == "out"])
        listen = ask(dest, "listen")
        if not listen.ok:
            raise MigrateError(f"{dest}: {listen.error}")
        address = listen.data["address"]
        started = ask(source, "migrate", vm=vm, to=address, handover=os.path.abspath(dest))
        if not started.ok:
            raise MigrateError(f"{source}: {started.error}")
    except ControlError as e:
        raise MigrateError(str(e)) from None
    _say(f"{vm}: {source} -> {dest} (stream {address})")
    report = _follow(vm, source, before, timeout)
    if report["outcome"] == "uncertain":
        report = _settle_uncertain(vm, source, dest, report)
    into = _arrival(vm, dest) if report["outcome"] == "moved" else None
    return _document(report, into)


def _follow(vm: str, source: str, before: int, timeout: float) -> dict:
    """Print each phase as the source reaches it; return the source's report when it ends."""
    deadline, shown = time.monotonic() + timeout, 0
    while True:
        try:
            m = _ours(ask(source).status, vm, "out", before)
        except ControlError as e:
            raise MigrateError(f"lost the source while migrating: {e}", 1) from None
        if m is not None:
            for name, _t in m["phases"][shown:]:
                _say(f"{vm}: {name}" + _round_note(m, name))
            shown = len(m["phases"])
            if m["phase"] in ("done", "failed", "uncertain"):
                return m
        if time.monotonic() > deadline:
            raise MigrateError(f"{vm}: no end after {timeout:.0f} s (phase "
                               f"{m['phase'] if m else 'not started'}); see `npa host` status", 1)
        time.sleep(POLL_S)


def _round_note(m: dict, phase: str) -> str:
    if phase == "paused" and m["rounds"]:
        done = [r for r in m["rounds"] if not r.get("stop_and_copy")]
        return f" after {len(done)} pre-copy rounds, {sum(r['bytes'] for r in done):,} bytes"
    return ""


def _settle_uncertain(vm: str, source: str, dest: str, report: dict) -> dict:
    """The stream dropped after the state went out: the destination decides where the VM is."""
    try:
        there = _ours(ask(dest).status, vm, "in")
        runs_there = there is not None and there["phase"] in ("forwarding", "done")
        reply = ask(source, "release" if runs_there else "resume", vm=vm)
    except ControlError as e:
        raise MigrateError(f"{vm}: the migration ended uncertain and neither host answers: {e}", 1) from None
    if not reply.ok:
        raise MigrateError(f"{vm}: uncertain, and the source cannot settle it: {reply.error}", 1)
    report.update(outcome="moved" if runs_there else "stayed", reason=reply.data["reason"])
    return report


def _arrival(vm: str, dest: str) -> dict | None:
    """The destination's view, once it handled the VM's first frame (or gave up waiting)."""
    deadline = time.monotonic() + FIRST_FRAME_WAIT_S
    while True:
        try:
            there = _ours(ask(dest).status, vm, "in")
        except ControlError:
            return None
        if there is None or there.get("first_frame") is not None or time.monotonic() > deadline:
            return there
        time.sleep(POLL_S)


def _document(out_: dict, into: dict | None) -> dict:
    rounds = out_.get("rounds", [])
    pre = [r for r in rounds if not r.get("stop_and_copy")]
    stop = [r for r in rounds if r.get("stop_and_copy")]
    phases = {name: t for name, t in out_["phases"]}
    doc = {
        "schema": "npa.migrate/1", "vm": out_["vm"], "mac": out_.get("mac"),
        "outcome": out_["outcome"], "reason": out_["reason"],
        "source": out_["source"], "destination": {**out_.get("destination", {}), **((into or {}).get("destination", {}))},
        "rounds": [{k: v for k, v in r.items() if k != "start"} for r in rounds],
        "precopy_bytes": sum(r["bytes"] for r in pre), "stop_copy_bytes": sum(r["bytes"] for r in stop),
        "forwarded_frames": out_.get("forwarded", 0),
        "total_s": (out_["phases"][-1][1] - out_["phases"][0][1]) if out_["phases"] else None,
        "paused_s": (phases["forwarding"] - phases["paused"]) if {"paused", "forwarding"} <= phases.keys() else None,
        "downtime_s": None,
    }
    if into is not None and into.get("first_frame") is not None and out_.get("last_frame") is not None:
        doc["downtime_s"] = into["first_frame"] - out_["last_frame"]
    return doc


def print_report(doc: dict) -> None:
    t = table("round", "pages", "zero pages", "bytes", "seconds", title=f"{doc['vm']}: {doc['outcome']}",
              title_justify="left")
    for r in doc["rounds"]:
        t.add_row(("stop-and-copy " if r.get("stop_and_copy") else "") + str(r["round"]), str(r["pages"]),
                  str(r.get("zero_pages", "")), f"{r['bytes']:,}", f"{r.get('seconds', 0):.4f}")
    out.print(t)
    s, d = doc["source"], doc["destination"]
    out.print(f"source       {s['nic']} VF {s.get('vf')}, plugin {s['plugin']}")
    if d.get("nic"):
        out.print(f"destination  {d['nic']} VF {d.get('vf', '-')}, plugin {d.get('plugin', '-')}, "
                  f"{d.get('mode', '-')} path")
    fmt = (lambda v: "-" if v is None else f"{v * 1000:.2f} ms")
    out.print(f"total {fmt(doc['total_s'])}, paused {fmt(doc['paused_s'])}, downtime "
              f"{fmt(doc['downtime_s'])} (last frame on the source to first on the destination), "
              f"{doc['precopy_bytes']:,} bytes pre-copied, {doc['stop_copy_bytes']:,} stopped, "
              f"{doc['forwarded_frames']} frames forwarded")
    out.print(doc["reason"])
