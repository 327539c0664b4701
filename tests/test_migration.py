"""Live migration in one process (`runtime.host.fabric`): two hosts on one cable, a VM moved
from one NIC model to another under traffic both ways, and every failure the migration can meet:
the destination has no plugin for its NIC or refuses the policy, the stream drops at each phase,
the destination's plugin faults, the stream carries garbage. Whatever happens, no frame is lost,
duplicated, reordered or corrupted, and the VM runs somewhere."""
from __future__ import annotations

import shutil

import msgpack
import numpy as np
import pytest

from helpers import ROOT
from npa.nic_model.sriov import MODELS
from npa.runtime.guest import size_schedule
from npa.runtime.host.fabric import Fabric
from npa.runtime.host.migrate import Incoming, Outgoing
from npa.runtime.hypervisor import EMULATED, PLUGIN, Policy, image_for
from npa.runtime.hypervisor.stream import (Abort, Hello, MemoryLink, Pages, State, StreamError, decode,
                                          encode)

PLUGINS = ROOT / "plugins-wasm"
NICS = list(MODELS)
PACKETS = 120_000


def fabric(src: str, dst: str, *, repository=PLUGINS, other_policy=None, packets=PACKETS) -> Fabric:
    f = Fabric.build(image_for(PLUGINS, MODELS[src]).read_bytes(), src, dst,
                     image_for(PLUGINS, MODELS[dst]).read_bytes(), vms=2, vfs=4,
                     repository=repository, other_policy=other_policy, packets=packets,
                     sizes=size_schedule("imix"), pool_frames=512)
    f.boot()
    return f


def vm(f: Fabric, name: str):
    return next((h, v) for h in f.hosts for v in h.vms if v.name == name)


def assert_clean(f: Fabric) -> None:
    for h in f.hosts:
        for v in h.vms:
            for fid, c in v.sink.check.items():
                assert (v.sink.lost(fid), c.duplicates, c.reordered, c.corrupted) == (0, 0, 0, 0), \
                    (v.name, fid, vars(c))
            assert v.sink.unexpected == 0
    assert all(fl.sent == fl.count for fl in f.flows)
    assert f.conserved()


@pytest.mark.parametrize("src,dst", [(a, b) for a in NICS for b in NICS])
def test_a_vm_moves_between_nic_models_under_traffic_losing_nothing(src, dst):
    f = fabric(src, dst)
    f.run(on_step=f.migrate_when("vm0", PACKETS // 2))
    (out, into), = f.moves
    assert out.report["outcome"] == "moved", out.report["reason"]
    host, moved = vm(f, "vm0")
    assert host is f.hosts[1] and host.hv.mode(moved) == PLUGIN
    assert into.report["destination"]["plugin"] == image_for(PLUGINS, MODELS[dst]).stem
    assert moved.vf.pci_id != f.hosts[0].nic.vfs[0].pci_id or src == dst
    r = f.report()[0]
    assert r["downtime_s"] is not None and 0 < r["downtime_s"] < 0.01  # device time
    assert r["rounds"][0]["pages"] == moved.shell.dp.guest.npages  # round 0: every page
    assert r["rounds"][-1].get("stop_and_copy")
    # traffic crossed the migration both ways: vm1 received from vm0 on either host
    assert min(moved.sink.check[1].received, PACKETS) == PACKETS
    assert_clean(f)
    f.close()


def test_no_plugin_for_the_destination_nic_leaves_the_vm_on_its_plugin(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(PLUGINS / "ixgbevf.wasm", repo)  # the destination's NIC is an mlx5
    f = fabric("ixgbevf", "mlx5", repository=repo)
    f.run(on_step=f.migrate_when("vm0", PACKETS // 2))
    out, _ = f.moves[0]
    assert out.report["outcome"] == "stayed"
    assert "no plugin" in out.report["reason"] and "stays on the source" in out.report["reason"]
    host, v = vm(f, "vm0")
    assert host is f.hosts[0] and host.hv.mode(v) == PLUGIN
    assert [m.reason for m in host.hv.modes(v)] == ["boot", "vf offer"]  # never left its plugin
    assert_clean(f)


def test_a_destination_policy_that_refuses_the_vm_leaves_it_on_the_source():
    theirs = Policy(vms={"vm0": {"mac": "02:00:00:00:00:99"}})
    f = fabric("mlx5", "vmxnet3", other_policy=theirs)
    f.run(on_step=f.migrate_when("vm0", PACKETS // 2))
    out, into = f.moves[0]
    assert out.report["outcome"] == "stayed" and into.report["outcome"] == "refused"
    assert "[vm.vm0] allows 02:00:00:00:00:99, not 02:00:00:00:00:01" in out.report["reason"]
    assert vm(f, "vm0")[0] is f.hosts[0]
    assert_clean(f)


def _drop_in(phase: str):
    """An on_step that starts the migration, then cuts the stream when the source reaches
    `phase`."""
    def on_step(f: Fabric) -> None:
        if not f.moves and f.frames_received() >= PACKETS // 2:
            f.migrate("vm0", *f.hosts)
        if f.moves and f.moves[0][0].phase == phase and not f.moves[0][0].link.closed:
            f.moves[0][0].link.close("cable cut")
    return on_step


@pytest.mark.parametrize("phase", ["accepting", "precopy", "paused"])
def test_a_stream_dropped_before_the_state_went_out_leaves_the_vm_running_on_the_source(phase):
    f = fabric("ixgbevf", "vmxnet3")
    f.run(on_step=_drop_in(phase))
    out, into = f.moves[0]
    assert out.report["outcome"] == "stayed", out.report
    assert "stays on the source" in out.report["reason"]
    assert into.phase == "failed" and vm(f, "vm0")[0] is f.hosts[0]
    host, v = vm(f, "vm0")
    assert host.hv.mode(v) == PLUGIN  # its plugin again
    assert not f.hosts[1].vms and f.hosts[1].nic.free_vf() is f.hosts[1].nic.vfs[0]
    assert_clean(f)


def test_a_stream_dropped_after_the_state_is_uncertain_until_the_destination_is_asked():
    """The destination resumed the VM and its answer was lost: the source keeps the VM paused
    (two copies would both answer for one MAC), the operator asks the destination, which runs
    it; the source lets it go."""
    f = fabric("vmxnet3", "mlx5")
    cut = []

    def on_step(fab: Fabric) -> None:
        if not fab.moves and fab.frames_received() >= PACKETS // 2:
            fab.migrate("vm0", *fab.hosts)
        if fab.moves and fab.moves[0][1].phase == "forwarding" and not cut:
            cut.append(fab.moves[0][0].phase)
            fab.moves[0][1].link.close("cable cut")  # the destination's `resumed` never arrives
            fab.moves[0][0].link.inbox.clear()
    f.run(on_step=on_step)
    out, into = f.moves[0]
    assert cut == ["resuming"] and out.phase == "uncertain" and into.report["outcome"] == "moved"
    assert into.vm in f.hosts[1].vms and not into.vm.paused  # it runs on the destination
    src_vm = out.vm
    assert src_vm.paused and src_vm in f.hosts[0].vms  # and stays paused on the source
    assert "let it go" in out.let_go()  # what `npa migrate` does once the destination says so
    assert src_vm not in f.hosts[0].vms and f.hosts[0].nic.free_vf() is src_vm.vf
    f.run(on_step=lambda fab: None)
    # Frames that reached the old port after the state went out had nowhere to go: counted, and
    # they are the guest's only loss (the port also held the destination's one RARP broadcast)
    lost = out.report["forward_lost"]
    assert lost > 1
    assert sum(v.sink.lost(fid) for h in f.hosts for v in h.vms for fid in v.sink.check) == lost - 1


def test_a_faulting_destination_plugin_leaves_the_vm_on_the_destination_emulated_path(tmp_path):
    from helpers import build_variants

    bad = build_variants(tmp_path, ROOT / "tests" / "hostile" / "hostile.c", "ATTACK",
                         ["SMASHES_ITS_STACK"])["SMASHES_ITS_STACK"]
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(bad, repo / "ixgbevf.wasm")
    f = fabric("mlx5", "ixgbevf", repository=repo)
    f.run(on_step=f.migrate_when("vm0", PACKETS // 2))
    out, into = f.moves[0]
    assert out.report["outcome"] == "moved"
    host, v = vm(f, "vm0")
    assert host is f.hosts[1] and host.hv.mode(v) == EMULATED
    assert host.hv.modes(v)[-1].reason.startswith("fault: ")
    assert_clean(f)


# -- the stream is untrusted ------------------------------------------------------------------
def test_garbage_on_the_stream_ends_the_migration_with_one_line_and_the_vm_stays():
    f = fabric("ixgbevf", "mlx5")
    f.run(on_step=lambda fab: None)  # boot and run to the end; then move under no traffic
    here, there = MemoryLink.pair()
    into = Incoming(f.hosts[1], there)
    f.hosts[1].migrations.append(into)
    out = Outgoing(f.hosts[0], vm(f, "vm0")[1], here)
    f.hosts[0].migrations.append(out)
    there.inbox.clear()
    there.inbox.append(b"\0\0\0\4\xc1\xc1\xc1\xc1")  # not msgpack: the hello never comes
    for _ in range(5):
        f.step()
    assert into.phase == "failed" and "malformed" in into.report["reason"]
    assert out.phase == "failed" and out.report["outcome"] == "stayed"
    assert vm(f, "vm0")[0] is f.hosts[0]


@pytest.mark.parametrize("evil,why", [
    (Pages(round=0, index=np.array([1 << 20], "<u4").tobytes(), data=bytes(4096)), "beyond"),
    (Pages(round=0, index=b"\1\0\0", data=b""), "disagree"),
    (Pages(round=0, index=np.array([1], "<u4").tobytes(), data=bytes(100)), "disagree"),
    (State(pool={"frames": 512, "frame_size": 2048, "resend": [5000], "lens": [60], "seq": [0],
                 "next_seq": 1}, guest={}, queued=[]), "out of the pool"),
    (State(pool={"frames": 512, "frame_size": 2048, "resend": [], "lens": [], "seq": [],
                 "next_seq": 0}, guest={"gen": 7}, queued=[]), "GenState"),
    (State(pool={"frames": 512, "frame_size": 2048, "resend": [2**63], "lens": [60], "seq": [0],
                 "next_seq": 1}, guest={}, queued=[]), "resend.0"),
    (State(pool={"frames": 512, "frame_size": 2048, "resend": [], "lens": [], "seq": [],
                 "next_seq": float("inf")}, guest={}, queued=[]), "next_seq"),
    (State(pool={"frames": 512, "frame_size": 2048, "resend": [], "lens": [], "seq": [],
                 "next_seq": 0}, guest={"gen": {"burst": 1, "turn": 0, "flows": []}, "sink": [1]},
           queued=[]), "SinkState"),
    (Abort(reason="x" * 1000), "the other host aborted: xxx"),
])
def test_a_hostile_source_cannot_make_the_destination_admit_a_broken_vm(evil, why):
    f = fabric("vmxnet3", "ixgbevf")
    f.run(on_step=lambda fab: None)
    here, there = MemoryLink.pair()
    into = Incoming(f.hosts[1], there)
    f.hosts[1].migrations.append(into)
    out = Outgoing(f.hosts[0], vm(f, "vm0")[1], here)
    f.hosts[0].migrations.append(out)
    for _ in range(3):
        f.step()
    assert into.phase == "copying"
    out.phase = "resuming"  # the source goes quiet; a hostile one speaks in its place
    here.send(evil)
    f.step()
    assert into.phase == "failed" and why in into.report["reason"], into.report["reason"]
    assert not f.hosts[1].vms and f.hosts[1].nic.free_vf() is not None
    assert len(into.report["reason"]) > 1000 or why != "the other host aborted: xxx"


def test_a_failed_restore_leaves_the_hosts_flows_as_they_were():
    """A guest state whose generator is fine and whose sink is not: nothing of it is applied."""
    f = fabric("vmxnet3", "ixgbevf")
    f.run(on_step=lambda fab: None)
    dest = f.hosts[1]
    before = {fid: fl.sent for fid, fl in dest.known_flows.items()}
    gen = vm(f, "vm0")[1].gen.snapshot()
    gen["flows"].append({**gen["flows"][0], "id": 4242})  # a flow this host has never seen
    with pytest.raises(ValueError, match="SinkState"):
        dest.restore_guest(vm(f, "vm0")[1], {"gen": gen, "sink": {"mac": -1}}, [])
    assert {fid: fl.sent for fid, fl in dest.known_flows.items()} == before


@pytest.mark.parametrize("change,why", [({"mac": 0}, "is zero"), ({"mac": 0x010000000001}, "group address"),
                                        ({"ip": "10.9.0.9/24"}, "belongs to a VM here already")])
def test_the_destination_refuses_a_mac_no_vm_may_have_and_an_address_in_use(change, why):
    a, b = _stack_hosts(b_vms=1)  # b's vm0 answers at 10.9.0.9
    here, there = MemoryLink.pair()
    honest = here.send

    def send(msg):
        if isinstance(msg, Hello):
            msg = msg.model_copy(update={**change, "vm": "vm7"})
        honest(msg)
    here.send = send
    a.migrations.append(out := Outgoing(a, a.vms[0], here))
    b.migrations.append(into := Incoming(b, there))
    _step_until((a, b), lambda: into.phase == "failed", 200)
    assert why in into.report["reason"] and len(b.vms) == 1
    _step_until((a, b), lambda: out.finished, 200)
    assert out.report["outcome"] == "stayed" and not a.vms[0].paused


@pytest.mark.parametrize("stack,why", [({"pings": 1.5}, "pings"), ({"stats": {"x": float("inf")}}, "stats"),
                                       ({"pings": {"10.9.0.3": {"sent": 0, "received": 0, "count": 10**9,
                                                                "asked_us": 0}}}, "count"),
                                       ({"arp": [[b"\1\2\3", 5, 0]]}, "arp")])
def test_a_hostile_stack_state_is_refused_whole_and_the_vm_stays(stack, why):
    a, b = _stack_hosts()
    here, there = MemoryLink.pair()
    honest = here.send

    def send(msg):
        if isinstance(msg, State):
            msg = msg.model_copy(update={"guest": {"stack": {**msg.guest["stack"], **stack}}})
        honest(msg)
    here.send = send
    a.migrations.append(out := Outgoing(a, a.vms[0], here))
    b.migrations.append(into := Incoming(b, there))
    _step_until((a, b), lambda: into.phase == "failed", 500)
    assert why in into.report["reason"] and not b.vms
    _step_until((a, b), lambda: out.finished, 200)
    assert out.report["outcome"] == "stayed" and a.vms[0] in a.vms and not a.vms[0].paused


def test_every_message_is_validated_on_arrival():
    good = encode(Pages(round=0, index=b"", data=b""))[4:]
    assert decode(good).kind == "pages"
    for raw, says in [
        ({"v": 2, "kind": "pages"}, "version"),
        ({"v": 1, "kind": "teleport"}, "invalid"),
        ({"v": 1, "kind": "pages", "round": "0", "index": b"", "data": b""}, "round"),
        ({"v": 1, "kind": "pages", "round": 0, "index": b"", "data": b"", "extra": 1}, "extra"),
        ({"v": 1, "kind": "forward", "frames": [b"short"]}, "frames"),
        ([1, 2, 3], "not a map"),
    ]:
        with pytest.raises(StreamError, match=says):
            decode(msgpack.packb(raw, use_bin_type=True))


# -- the command line -------------------------------------------------------------------------
def test_npa_run_migrate_to_moves_vm0_reports_it_and_draws_the_timeline(tmp_path):
    import json

    from helpers import npa

    png, doc = tmp_path / "timeline.png", tmp_path / "run.json"
    r = npa("run", "--packets", "200000", "--migrate-to", "mlx5", "--migrate-at", "40000",
            "--plot", str(png), "--json", str(doc), "-q")
    assert r.returncode == 0, r.stderr
    assert "migrations (device time" in r.stdout and "clean" in r.stdout
    run = json.loads(doc.read_text())
    (m,) = run["migrations"]
    assert m["outcome"] == "moved" and m["destination"]["nic"] == "mlx5" and m["downtime_s"] > 0
    assert {v["name"]: v["nic"] for v in run["vms"]} == {"vm1": "ixgbevf", "vm0": "mlx5"}
    assert all(v["lost"] == v["duplicated"] == v["reordered"] == 0 for v in run["vms"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


@pytest.mark.parametrize("args,says", [
    (["--migrate-to", "e1000"], "--migrate-to e1000: unknown NIC model"),
    (["--migrate-to", "mlx5", "--switch", "vepa"], "cables the uplink"),
    (["--plot", "/nonexistent/x.png"], "--plot /nonexistent/x.png: no directory"),
])
def test_npa_run_migration_options_refused_in_one_line(args, says):
    from helpers import npa

    r = npa("run", "--packets", "100", *args)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and says in r.stderr, r.stderr


def test_npa_migrate_without_hosts_is_one_line_exit_2(tmp_path):
    from helpers import npa

    r = npa("migrate", "vm0", "--from", str(tmp_path / "a.sock"), "--to", str(tmp_path / "b.sock"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("npa: error: ") and "a.sock: No such file" in r.stderr


# -- hosts with IP stacks (what `npa host` runs), in one process -------------------------------
def _stack_hosts(dst: str = "mlx5", b_vms: int = 0):
    from npa.nic_model.sriov import SriovNic
    from npa.nic_model.uplink import Uplink
    from npa.runtime.host import RealtimeHost
    from npa.runtime.sandbox import analyse

    def report(nic):
        return analyse(image_for(PLUGINS, MODELS[nic]).read_bytes())
    a = RealtimeHost(SriovNic("ixgbevf", 4, uplink="wire"), report("ixgbevf"), 2, "10.9.0.2/24")
    b = RealtimeHost(SriovNic(dst, 4, uplink="wire"), report(dst), b_vms, "10.9.0.9/24", repository=PLUGINS)
    Uplink.cable(a.nic.uplink, b.nic.uplink)
    for h in (a, b):
        h.boot()
    return a, b


def _step_until(hosts, cond, limit=20_000):
    for _ in range(limit):
        if cond():
            return
        for h in hosts:
            h.step()
    raise AssertionError("not reached")


def test_an_ip_stack_moves_with_its_arp_cache_and_keeps_answering():
    a, b = _stack_hosts()
    vm0, vm1 = a.vms
    vm1.stack.ping("10.9.0.2", 3)
    _step_until((a, b), lambda: vm1.stack.pings["10.9.0.2"]["received"] == 3)
    here, there = MemoryLink.pair()
    a.migrations.append(out := Outgoing(a, vm0, here))
    b.migrations.append(into := Incoming(b, there))
    _step_until((a, b), lambda: out.finished and into.finished)
    assert out.report["outcome"] == "moved" and b.vms[0].name == "vm0" and not a.vms[1:]
    moved = b.vms[0]
    assert moved.stack.address == "10.9.0.2/24" and moved.stack.lookup("10.9.0.3") == vm1.mac
    assert b.hv.mode(moved) == PLUGIN and moved.vf.pci_id.startswith("15b3")
    vm1.stack.ping("10.9.0.2", 3)  # across the cable now, to the mlx5 host
    _step_until((a, b), lambda: vm1.stack.pings["10.9.0.2"]["received"] == 3)
    assert moved.stack.stats["echo_replies"] == 6  # its counters came along
    for h in (a, b):
        h.finish()
        assert h.conserved()


@pytest.mark.parametrize("part,why", [("outbox", "outbox frame"), ("queued", None)])
def test_hostile_frames_in_the_state_never_reach_past_the_port_or_crash_the_host(part, why):
    """A 9000-byte frame in the guest's outbox is refused (the stream ends, nothing admitted);
    one among the frames queued at the port is dropped at the destination's port, counted, and
    the VM's receive path goes on."""
    a, b = _stack_hosts("vmxnet3")
    vm0, vm1 = a.vms
    here, there = MemoryLink.pair()
    big = b"\x02\x00\x0a\x09\x00\x02" * 2 + b"\x08\x00" + bytes(8986)
    honest = here.send

    def send(msg):  # the source's state, with one hostile frame added
        if isinstance(msg, State):
            msg = msg.model_copy(update={part: [*getattr(msg, part), big]})
        honest(msg)
    here.send = send
    a.migrations.append(out := Outgoing(a, vm0, here))
    b.migrations.append(into := Incoming(b, there))
    _step_until((a, b), lambda: into.phase in ("failed", "forwarding", "done"), 200)
    if why:
        assert into.phase == "failed" and why in into.report["reason"] and not b.vms
        _step_until((a, b), lambda: out.finished, 200)
        assert out.report["outcome"] == "stayed" and vm0 in a.vms and not vm0.paused
    else:
        _step_until((a, b), lambda: into.phase == "done")
        assert into.report["refused_frames"] == 1 and b.vms[0].vf.port.stats.oversize == 1
        vm1.stack.ping("10.9.0.2", 2)
        _step_until((a, b), lambda: vm1.stack.pings["10.9.0.2"]["received"] == 2)
